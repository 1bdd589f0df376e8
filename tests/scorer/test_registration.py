"""Registration of a layer to its previous layer: a known shift is recovered to half a pixel."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.simulate import DefectEvent, make_renderer, render_layer
from ingest.simulate.categories import CATEGORIES
from scorer.registration import estimate_shift, translate


@pytest.fixture(scope="module")
def layer() -> np.ndarray:
    return render_layer(make_renderer(CATEGORIES["fdm_rectilinear"], 3, 128, 80), 20).image


@pytest.mark.parametrize(
    "dx, dy", [(0.0, 0.0), (3.3, -1.7), (-6.6, 4.25), (0.4, 0.2), (-9.0, -0.5)]
)
def test_known_shift_is_recovered_to_half_a_pixel(layer: np.ndarray, dx: float, dy: float) -> None:
    rng = np.random.default_rng(0)
    moved = translate(layer, dx, dy).astype(np.float32) + rng.normal(0, 4, layer.shape)
    s = estimate_shift(np.clip(moved, 0, 255).astype(np.uint8), layer)
    assert abs(s.dx - dx) <= 0.5 and abs(s.dy - dy) <= 0.5, s
    assert s.magnitude == pytest.approx(np.hypot(s.dx, s.dy))


def test_a_layer_shift_is_seen_as_a_shift_and_a_normal_layer_is_not() -> None:
    renderer = make_renderer(CATEGORIES["fdm_grid"], 5, 128, 80)
    prev = render_layer(renderer, 29).image
    normal = estimate_shift(render_layer(renderer, 30).image, prev)
    shifted = estimate_shift(
        render_layer(renderer, 30, [DefectEvent.parse("layer_shift@30:1.0")]).image, prev
    )
    assert normal.magnitude < 1.5
    assert shifted.magnitude > 3 * max(normal.magnitude, 1.0)


def test_shapes_must_match(layer: np.ndarray) -> None:
    with pytest.raises(ValueError, match="shapes"):
        estimate_shift(layer, layer[:64])
