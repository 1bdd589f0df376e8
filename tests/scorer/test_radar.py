"""RADAR scoring behaviour on a tiny trained model."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pytest

from scorer.device import pick_device
from scorer.features import image_features
from scorer.isoforest import IsoForestDetector
from scorer.methods import TrainData, get_method, method_names
from scorer.radar import RadarScorer


def test_registry_knows_radar() -> None:
    assert "radar" in method_names()
    assert get_method("radar") is RadarScorer
    with pytest.raises(KeyError, match="unknown method"):
        get_method("nope")


def test_score_batch_shapes(tiny_model: RadarScorer, make_texture: Callable) -> None:
    rng = np.random.default_rng(5)
    images = [make_texture(rng), make_texture(rng, 40), np.stack([make_texture(rng)] * 3, -1)]
    results = tiny_model.score_batch(images)
    assert len(results) == 3
    for img, r in zip(images, results, strict=True):
        assert r.anomaly_map.shape == img.shape[:2] and r.anomaly_map.dtype == np.float32
        assert np.isfinite([r.score, r.f1, r.f2, r.latency_ms]).all()
        assert 0.0 <= r.defect_area <= 1.0 and isinstance(r.anomalous, bool)
    assert tiny_model.score_batch([]) == []
    small = tiny_model.score_batch([make_texture(rng, 12)])[0]  # smaller than a patch: padded
    assert small.anomaly_map.shape == (12, 12)


def test_scores_are_deterministic_and_batch_independent(
    tiny_model: RadarScorer, make_texture: Callable
) -> None:
    rng = np.random.default_rng(6)
    a, b = make_texture(rng), make_texture(rng)
    alone = tiny_model.score_batch([a])[0]
    again = tiny_model.score_batch([a])[0]
    together = tiny_model.score_batch([b, a])[1]
    assert alone.score == again.score and alone.f2 == again.f2
    np.testing.assert_array_equal(alone.anomaly_map, again.anomaly_map)
    assert together.f1 == pytest.approx(alone.f1, rel=1e-5)
    assert together.score == pytest.approx(alone.score, rel=1e-5)


def test_planted_defect_scores_above_its_clean_twin(
    tiny_model: RadarScorer, make_texture: Callable, make_blob: Callable
) -> None:
    rng = np.random.default_rng(7)
    for _ in range(3):
        clean = make_texture(rng)
        bad, mask = make_blob(clean)
        rc, rb = tiny_model.score_batch([clean, bad])
        assert rb.f2 > rc.f2
        assert rb.score > rc.score
        inside = rb.anomaly_map[mask > 0].mean()
        assert inside > rc.anomaly_map[mask > 0].mean()


def test_calibration_records_t_selection(tiny_model: RadarScorer) -> None:
    sel = tiny_model.metadata["t_selection"]
    assert sel["chosen"] in (50, 100) and sel["chosen"] == tiny_model.config.t_star
    assert set(sel["measurements"]) == {"50", "100"}
    assert all("cost" in m for m in sel["measurements"].values())
    assert tiny_model.metadata["training"]["steps"] == 80
    assert np.isfinite(tiny_model.pixel_threshold)
    assert tiny_model.whitening is not None  # fitted at t* from the same held-out images


def test_time_budget_stops_training_and_still_calibrates(
    make_texture: Callable, settings_factory: Callable
) -> None:
    rng = np.random.default_rng(8)
    data = TrainData(
        [make_texture(rng) for _ in range(4)], [make_texture(rng) for _ in range(3)], 1, "s"
    )
    settings = settings_factory(steps=100_000, t_candidates=(100,))
    model = RadarScorer.fit(data, settings, pick_device("cpu"), time.monotonic() + 5.0)
    assert model.metadata["training"]["stopped_by"] == "time"
    assert 0 < model.metadata["training"]["steps"] < 100_000
    assert model.detector is not None and len(model.score_batch([data.train[0]])) == 1


def test_a_loaded_machine_still_trains_a_quarter_of_the_budget_and_says_so(
    make_texture: Callable,
    settings_factory: Callable,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The calibration reserve comes from a measured forward pass; on a loaded machine it once
    took the whole budget and the network got 0 steps without a word."""
    rng = np.random.default_rng(8)
    data = TrainData(
        [make_texture(rng) for _ in range(4)], [make_texture(rng) for _ in range(3)], 1, "s"
    )
    monkeypatch.setattr(RadarScorer, "patch_seconds", lambda self: 60.0)  # a very slow machine
    settings = settings_factory(steps=100_000, t_candidates=(100,))
    with caplog.at_level(logging.WARNING, logger="scorer.radar"):
        model = RadarScorer.fit(data, settings, pick_device("cpu"), time.monotonic() + 8.0)
    assert model.metadata["training"]["steps"] > 0
    assert any("training keeps 25 %" in m for m in caplog.messages), caplog.messages


def test_draws_average_and_radar_options(
    make_texture: Callable, settings_factory: Callable
) -> None:
    rng = np.random.default_rng(9)
    data = TrainData(
        [make_texture(rng) for _ in range(4)], [make_texture(rng) for _ in range(3)], 1, "s"
    )
    # the paper's pipeline: raw noise map, Sobel pixel map, two-sided Isolation Forest
    extra = {
        "draws": 3,
        "window": 8,
        "whiten": False,
        "pixel_map": "sobel",
        "detector": "iforest",
        "one_sided": False,
        "image_features": "residual",
    }
    settings = settings_factory(steps=5, t_candidates=(100,), extra=extra)
    model = RadarScorer.fit(data, settings, pick_device("cpu"), time.monotonic() + 60)
    assert model.config.draws == 3 and model.config.features.window == 8
    assert model.whitening is None and not model.config.whitening.whiten
    assert model.config.pixel_map == "sobel" and isinstance(model.detector, IsoForestDetector)
    assert not model.detector.config.one_sided
    (result,) = model.score_batch([data.train[0]])
    (resid,) = model.residual_maps([data.train[0]])
    (paper,) = image_features([np.sqrt(np.sum(resid**2, axis=0))], model.config.features)
    np.testing.assert_allclose(result.anomaly_map, paper.pixel_map, rtol=1e-5)
    assert (result.f1, result.f2) == pytest.approx((paper.f1, paper.f2))
    with pytest.raises(ValueError, match="unknown RADAR options"):
        RadarScorer.fit(data, settings_factory(extra={"bogus": 1}), pick_device("cpu"), 0.0)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"stride": 0}, "stride"),
        ({"patch": 16, "stride": 32}, "stride"),
        ({"draws": 0}, "draws"),
        ({"pixel_quantile": 1.0}, "pixel_quantile"),
        ({"criterion": "vibes"}, "criterion"),
        ({"pixel_map": "vibes"}, "pixel_map"),
        ({"pixel_sigma": 0.0}, "pixel_sigma"),
        ({"detector": "vibes"}, "detector"),
        ({"image_features": "vibes"}, "image_features"),
    ],
)
def test_radar_config_validation(kw: dict, message: str) -> None:
    from scorer.radar import RadarConfig

    with pytest.raises(ValueError, match=message):
        RadarConfig(**kw)


def test_cli_option_values_are_typed() -> None:
    from scorer.cli import _options

    parsed = _options(["whiten=False", "draws=2", "contamination=0.05", "criterion=vibes"])
    assert parsed == {"whiten": False, "draws": 2, "contamination": 0.05, "criterion": "vibes"}
    assert _options(["whiten=true"]) == {"whiten": True}
