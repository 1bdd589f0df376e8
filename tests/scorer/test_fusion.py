"""radar-geometry: the texture channel (RADAR as it is) fused with the geometry channel."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from ingest.simulate import DefectEvent, expected_outline, make_renderer, render_layer
from ingest.simulate.categories import CATEGORIES
from scorer.data import load_reference
from scorer.device import pick_device
from scorer.evaluate import evaluate
from scorer.fusion import GEOMETRY, TEXTURE, RadarGeometryScorer
from scorer.geometry import GeometryChannel, Sample
from scorer.methods import LayerReference, load_model, save_model, score_layers
from scorer.radar import RadarScorer
from scorer.train import train_model

SIZE = 96


def layer(seed: int, n: int, defect: str | None = None) -> tuple[np.ndarray, LayerReference]:
    renderer = make_renderer(CATEGORIES["fdm_grid"], seed, SIZE, 80)
    events = [DefectEvent.parse(f"{defect}@{n}:1.0")] if defect else []
    ref = LayerReference(render_layer(renderer, n - 1, events).image, expected_outline(renderer, n))
    return render_layer(renderer, n, events).image, ref


@pytest.fixture(scope="module")
def normal_layers() -> list[tuple[np.ndarray, LayerReference]]:
    rng = np.random.default_rng(1)
    return [layer(200 + i, int(n)) for i, n in enumerate(rng.integers(8, 70, 36))]


@pytest.fixture(scope="module")
def fused(tiny_model: RadarScorer, normal_layers: list) -> RadarGeometryScorer:
    train, cal = normal_layers[:24], normal_layers[24:]
    geometry = GeometryChannel.fit([Sample(*p) for p in train], [Sample(*p) for p in cal])
    scorer = RadarGeometryScorer(tiny_model, geometry)
    # RADAR's held-out scores are those of its own calibration set: calibrate on that many
    images = [img for img, _ in cal][: len(tiny_model.detector.calibration_scores)]
    refs = [r for _, r in cal][: len(images)]
    scorer.calibrate(images, refs)
    return scorer


def test_without_references_it_scores_by_texture_alone_and_says_so_once(
    tiny_model: RadarScorer, make_texture, caplog: pytest.LogCaptureFixture
) -> None:
    scorer = RadarGeometryScorer(tiny_model, None)
    scorer.calibrate([], None)
    assert scorer.metadata["geometry_channel"] == "off"
    rng = np.random.default_rng(3)
    images = [make_texture(rng) for _ in range(4)]
    own = tiny_model.score_batch(images)
    with caplog.at_level(logging.WARNING, logger="scorer.fusion"):
        first = score_layers(scorer, images, [LayerReference()] * 4)
        again = scorer.score_batch(images)
    for a, b, r in zip(first, again, own, strict=True):
        assert a.anomalous == b.anomalous == r.anomalous
        assert a.channel_scores == {TEXTURE: pytest.approx(r.score / tiny_model.detector.threshold)}
        assert a.fired == ((TEXTURE,) if r.anomalous else ())
    assert sum("texture channel alone" in m for m in caplog.messages) == 1


def test_fused_flags_a_layer_shift_by_its_geometry_and_keeps_the_combined_rate(
    fused: RadarGeometryScorer,
) -> None:
    assert fused.metadata["geometry_channel"] == "on"
    # the 98 % quantile of n held-out layers leaves at most one of them above it
    n = len(fused.texture.detector.calibration_scores)
    assert fused.metadata["fusion"]["held_out_false_positive_rate"] <= 1 / n + 1e-9
    image, ref = layer(300, 40, "layer_shift")
    [res] = fused.score_batch([image], [ref])
    assert res.anomalous and GEOMETRY in res.fired
    assert set(res.channel_scores) == {TEXTURE, GEOMETRY}
    assert fused.rule == "sum" and fused.metadata["fusion"]["rule"] == "sum"
    assert res.score == pytest.approx(sum(res.channel_scores.values()))
    # without its references the same layer is scored by texture alone
    [alone] = fused.score_batch([image])
    assert set(alone.channel_scores) == {TEXTURE}


def test_artifact_round_trip_scores_identically(fused: RadarGeometryScorer, tmp_path: Path) -> None:
    version = save_model(fused, tmp_path / "m")
    again = load_model(tmp_path / "m", pick_device("cpu"))
    assert isinstance(again, RadarGeometryScorer) and again.model_version == version
    assert not list((tmp_path / "m").glob("*.pkl"))
    pairs = [layer(400, 30), layer(401, 30, "warping"), layer(402, 30, "layer_shift")]
    images, refs = [p[0] for p in pairs], [p[1] for p in pairs]
    for a, b in zip(fused.score_batch(images, refs), again.score_batch(images, refs), strict=True):
        assert a.score == pytest.approx(b.score) and a.anomalous == b.anomalous
        assert a.channel_scores == pytest.approx(b.channel_scores)
        assert np.allclose(a.anomaly_map, b.anomaly_map)
    assert again.threshold == fused.threshold and again.pixel_threshold == fused.pixel_threshold


def _write_layer(folder: Path, image: np.ndarray, ref: LayerReference) -> Path:
    """An image in the MVTec layout with its references beside it (CATEGORY/reference/...)."""
    path = folder / "cat" / "test" / "good" / "000.png"
    path.parent.mkdir(parents=True)
    refs = folder / "cat" / "reference" / "test" / "good"
    refs.mkdir(parents=True)
    cv2.imwrite(str(path), image)
    cv2.imwrite(str(refs / "000_prev.png"), ref.previous)
    cv2.imwrite(str(refs / "000_outline.png"), ref.outline * 255)
    return path


def test_a_missing_or_malformed_outline_is_named_and_the_layer_still_scored(
    fused: RadarGeometryScorer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image, ref = layer(500, 30)
    path = _write_layer(tmp_path, image, ref)
    outline = tmp_path / "cat" / "reference" / "test" / "good" / "000_outline.png"
    good = load_reference(path, image.shape)
    assert good is not None and good.outline_error is None
    assert np.array_equal(good.outline, ref.outline)
    outline.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    broken = load_reference(path, image.shape)
    assert broken is not None and broken.outline is None and broken.previous is not None
    assert str(outline) in broken.outline_error
    outline.unlink()
    missing = load_reference(path, image.shape)
    assert missing is not None and missing.outline is None and str(outline) in missing.outline_error
    with caplog.at_level(logging.WARNING, logger="scorer.fusion"):
        [res] = fused.score_batch([image], [broken])
    assert np.isfinite(res.score) and res.anomaly_map.shape == image.shape
    assert any(str(outline) in m for m in caplog.messages)
    # an outline of the wrong size is left out the same way; nothing usable: texture only
    small = LayerReference(None, np.ones((8, 8), np.uint8))
    [res] = fused.score_batch([image], [small])
    assert set(res.channel_scores) == {TEXTURE}


def test_train_and_evaluate_with_references(tmp_path: Path, settings_factory) -> None:
    from ingest.simulate import write_dataset

    cat = Path(
        write_dataset(
            tmp_path, "fdm_grid", size=64, n_train=16, n_test_good=3, n_test_defect=1,
            seed=0, reference=True,
        )["root"]
    )  # fmt: skip
    result = train_model(cat, tmp_path / "model", "radar-geometry", settings_factory(steps=20))
    model = result.method
    assert isinstance(model, RadarGeometryScorer) and model.geometry is not None
    report = evaluate(model, cat)
    assert report.method == "radar-geometry" and report.n_defect == 9
    assert np.isfinite(report.image_auroc)


def test_a_model_saved_with_the_larger_of_the_channels_keeps_that_rule(
    fused: RadarGeometryScorer, tmp_path: Path
) -> None:
    import json

    save_model(fused, tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    doc = json.loads(config.read_text())
    doc["fusion"]["rule"] = "max of channel scores over their own thresholds"  # before the choice
    config.write_text(json.dumps(doc))
    old = load_model(tmp_path / "m", pick_device("cpu"))
    assert isinstance(old, RadarGeometryScorer) and old.rule == "max"
    image, ref = layer(300, 40, "layer_shift")
    [res] = old.score_batch([image], [ref])
    assert res.score == pytest.approx(max(res.channel_scores.values()))
