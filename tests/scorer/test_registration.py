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


@pytest.mark.parametrize("dx, dy", [(0, 0), (4, -3), (-7, 2), (2.5, 0)])
def test_a_part_found_off_its_outline_is_measured_by_the_overlap(dx: float, dy: float) -> None:
    """The part region against its expected outline (mask_offset): an L-shaped part moved by a
    known offset, with a ragged, noisy edge as a segmenter leaves it, is found to a pixel; the
    whitened phase correlation is not made for two flat regions."""
    import cv2

    from scorer.registration import mask_offset

    outline = np.zeros((128, 128), np.uint8)
    outline[30:100, 30:60] = 1
    outline[70:100, 30:100] = 1
    part = (translate(outline.astype(np.float32), dx, dy) > 0.5).astype(np.uint8)
    rng = np.random.default_rng(1)
    edge = cv2.morphologyEx(part, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    part[edge & (rng.random(part.shape) < 0.5)] ^= 1  # a segmenter's ragged edge
    s = mask_offset(part, outline, 12)
    assert abs(s.dx - dx) <= 1.0 and abs(s.dy - dy) <= 1.0, s
    assert s.response > 0.8
    assert mask_offset(np.zeros_like(part), outline, 12).magnitude == 0.0  # nothing found
