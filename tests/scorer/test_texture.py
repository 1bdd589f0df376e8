"""The two-sided texture evidence (scorer.texture) and RADAR's pixel map on granular texture."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from ingest.simulate.photos import crop, load_photo, region
from scorer.artifact import ArtifactError
from scorer.device import pick_device
from scorer.methods import TrainData, load_model
from scorer.radar import RadarScorer
from scorer.texture import (
    TextureCalibration,
    TextureConfig,
    bank_sample,
    descriptors,
)

SIZE = 64


def _gravel(split: str, n: int, seed: int) -> list[np.ndarray]:
    area = region(load_photo("gravel"), split)
    rng = np.random.default_rng(seed)
    return [np.clip(np.rint(crop(area, SIZE, rng)), 0, 255).astype(np.uint8) for _ in range(n)]


def _smooth_patch(img: np.ndarray, r: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A smeared disc (texture missing) in the middle of ``img`` and its mask."""
    mask = np.zeros(img.shape, np.uint8)
    cv2.circle(mask, (SIZE // 2, SIZE // 2), r, 1, -1)
    blurred = cv2.GaussianBlur(img, (0, 0), 4.0)
    return np.where(mask > 0, blurred, img), mask.astype(bool)


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(a patch pixel scores above a surrounding one)."""
    return float((inside.ravel()[:, None] > outside.ravel()[None, :]).mean())


def _grey(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 127.5 - 1.0


def _descs(images: list[np.ndarray], cfg: TextureConfig) -> list[np.ndarray]:
    zeros = [np.zeros((1, *img.shape), np.float32) for img in images]
    return descriptors(zeros, [_grey(x) for x in images], cfg)


def test_evidence_grows_with_distance_from_normal_both_ways() -> None:
    rng = np.random.default_rng(0)
    normal = [rng.normal(0, 1, (2, 24, 24)).astype(np.float32) for _ in range(8)]
    cfg = TextureConfig(texture_bank=2000, texture_k=1, texture_map_sigma=0)
    cal, own = TextureCalibration.fit(normal, cfg)
    assert len(own) == 8 and all(m.shape == (24, 24) for m in own)
    base = cal.evidence([normal[0]])[0].mean()
    # a calibration image scored without its own pixels is not scored as perfectly normal
    assert own[0].mean() > base
    for shift in (-6.0, 6.0):  # below and above every normal value
        far = cal.evidence([normal[0] + shift])[0].mean()
        farther = cal.evidence([normal[0] + 2 * shift])[0].mean()
        assert far > 3 * own[0].mean() and farther > far


def test_calibration_round_trip_and_bad_tables() -> None:
    rng = np.random.default_rng(1)
    cfg = TextureConfig(texture_bank=300)
    descs = [rng.normal(0, 1, (5, 16, 16)).astype(np.float32) for _ in range(4)]
    cal, _ = TextureCalibration.fit(descs, cfg)
    back = TextureCalibration.from_dict(json.loads(json.dumps(cal.to_dict())), cal.bank, cfg)
    np.testing.assert_array_equal(back.evidence(descs[:1])[0], cal.evidence(descs[:1])[0])
    with pytest.raises(ValueError, match="dimensions"):
        TextureCalibration.from_dict(cal.to_dict(), cal.bank[:, :-1], cfg)
    doc = cal.to_dict()
    doc["scale"][0] = 0.0
    with pytest.raises(ValueError, match="positive"):
        TextureCalibration.from_dict(doc, cal.bank, cfg)
    with pytest.raises(ValueError, match="subset"):
        TextureConfig(texture_statistics=("colour",))
    parsed = TextureConfig(texture_statistics="gradient+level")  # type: ignore[arg-type]
    assert parsed.texture_statistics == ("gradient", "level")


def test_a_smooth_patch_in_gravel_has_less_texture_energy_and_more_evidence() -> None:
    """Without the network: the input's gradient energy falls inside a smeared patch, and the
    evidence map, calibrated on normal gravel, scores the patch above its surroundings."""
    cfg = TextureConfig(texture_statistics=("gradient", "level"), texture_scales=(2.0, 4.0))
    cal, _ = TextureCalibration.fit(_descs(_gravel("calibration", 12, 0), cfg), cfg)
    for img in _gravel("test", 4, 1):
        bad, mask = _smooth_patch(img)
        stats, clean = _descs([bad, img], cfg)
        assert stats[0][mask].mean() < clean[0][mask].mean() - 1.0  # log gradient energy, σ 2
        (evidence,) = cal.evidence([stats])
        assert evidence[mask].mean() > evidence[~mask].mean()
        assert _auroc(evidence[mask], evidence[~mask]) > 0.6


@pytest.fixture(scope="module")
def gravel_model(settings_factory) -> RadarScorer:  # type: ignore[no-untyped-def]
    data = TrainData(
        train=_gravel("train", 16, 2), calibration=_gravel("calibration", 8, 3),
        channels=1, source="gravel",
    )  # fmt: skip
    settings = settings_factory(steps=20, t_candidates=(100,))
    return RadarScorer.fit(data, settings, pick_device("cpu"), time.monotonic() + 900)


def test_pixel_map_of_a_smooth_patch_in_gravel_is_above_its_surroundings(
    gravel_model: RadarScorer,
) -> None:
    """The issue's bug: RADAR's one-sided map scored a smooth defect in granular texture
    *below* normal (pixel AUROC 0.45 on real gravel). The default map must rank it above."""
    for img in _gravel("test", 4, 4):
        bad, mask = _smooth_patch(img)
        (res,) = gravel_model.score_batch([bad])
        amap = res.anomaly_map
        assert amap[mask].mean() > amap[~mask].mean(), "smooth patch scores below its surroundings"
        assert _auroc(amap[mask], amap[~mask]) > 0.6


def _edit(model_dir: Path, edit: Callable[[dict], None]) -> None:
    path = model_dir / "config.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_texture_artifact_round_trip_and_older_artifacts_keep_the_residual_features(
    tiny_model: RadarScorer, tiny_model_dir: Path, tmp_path: Path, make_texture: Callable
) -> None:
    assert tiny_model.config.pixel_map == "texture" and tiny_model.texture is not None
    img = make_texture(np.random.default_rng(9))
    loaded = load_model(tiny_model_dir, pick_device("cpu"))
    assert isinstance(loaded, RadarScorer) and loaded.texture is not None
    a, b = tiny_model.score_batch([img])[0], loaded.score_batch([img])[0]
    assert a.score == pytest.approx(b.score, abs=1e-9)
    np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    _edit(broken, lambda d: d["calibration"]["texture"]["scale"].__setitem__(0, -1.0))
    with pytest.raises(ArtifactError, match="texture"):
        load_model(broken, pick_device("cpu"))

    def make_old(doc: dict) -> None:  # as written before issue 23: no texture anywhere
        del doc["radar"]["image_features"], doc["radar"]["texture"]
        doc["radar"]["pixel_map"] = "lowpass"
        doc["calibration"].pop("texture")

    old = tmp_path / "old"
    shutil.copytree(tiny_model_dir, old)
    _edit(old, make_old)
    loaded_old = load_model(old, pick_device("cpu"))
    assert isinstance(loaded_old, RadarScorer)
    assert loaded_old.config.image_features == "residual" and loaded_old.texture is None
    (res,) = loaded_old.score_batch([img])
    assert res.anomaly_map.shape == img.shape and np.isfinite(res.score)


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_a_coarser_query_grid_keeps_the_evidence_peak_in_place(stride: int) -> None:
    rng = np.random.default_rng(0)
    normal = [rng.normal(0, 0.01, (1, 96, 96)).astype(np.float32) for _ in range(3)]
    cfg = TextureConfig(texture_stride=stride, texture_map_sigma=0, texture_bank=4096)
    cal, _ = TextureCalibration.fit(normal, cfg)
    yy, xx = np.mgrid[:96, :96]
    for cy, cx in ((41, 57), (50, 30)):
        bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2)).astype(np.float32)
        ev = cal.evidence([bump[None]])[0]
        py, px = np.unravel_index(int(np.argmax(ev)), ev.shape)
        assert abs(py - cy) <= 1 and abs(px - cx) <= 1, (stride, (py, px), (cy, cx))


def test_a_training_bank_scores_overlapping_calibration_crops_like_fresh_ones() -> None:
    """Calibration crops of one small area share pixels: left one out, each still finds its
    neighbours' copies in the bank, so its evidence is lower than a fresh normal image's and
    the threshold lands too low. Scored against a bank of training images instead, the
    calibration evidence is what fresh images get."""
    cfg = TextureConfig(texture_bank=4096)
    area = region(load_photo("gravel"), "calibration")[:, : SIZE + 8]  # crops overlap ≥ 7/8
    rng = np.random.default_rng(3)
    cal = [np.clip(np.rint(crop(area, SIZE, rng)), 0, 255).astype(np.uint8) for _ in range(10)]
    fresh = _gravel("test", 10, 4)
    bank = _descs(_gravel("train", 24, 5), cfg)
    cal_d, fresh_d = _descs(cal, cfg), _descs(fresh, cfg)

    def gap(calibration: TextureCalibration, own: list[np.ndarray]) -> float:
        ref = np.mean([m.mean() for m in calibration.evidence(fresh_d)])
        return float(ref - np.mean([m.mean() for m in own]))

    loo_gap = gap(*TextureCalibration.fit(cal_d, cfg))
    bank_gap = gap(*TextureCalibration.fit(cal_d, cfg, bank_descs=bank))
    assert loo_gap > 0.15  # leave-one-out is optimistic on overlapping crops (measured 0.28)
    assert abs(bank_gap) < loo_gap / 2  # measured −0.05


def test_radar_builds_its_texture_bank_from_training_images_when_asked(
    settings_factory,  # type: ignore[no-untyped-def]
) -> None:
    data = TrainData(
        train=_gravel("train", 12, 6), calibration=_gravel("calibration", 4, 7),
        channels=1, source="gravel",
    )  # fmt: skip
    settings = settings_factory(steps=2, t_candidates=(100,), extra={"texture_bank_images": 6})
    model = RadarScorer.fit(data, settings, pick_device("cpu"), time.monotonic() + 900)
    assert model.config.texture.texture_bank_images == 6
    assert model.metadata["training"]["n_texture_bank_images"] == 6
    # 6 training images of 32 × 32 queries (stride 2 at 64²): the bank holds only their rows
    assert len(model.texture.bank) == 6 * 32 * 32


def test_bank_sample_spreads_over_the_list() -> None:
    images = [np.full((2, 2), i) for i in range(10)]
    picked = [int(x[0, 0]) for x in bank_sample(images, 4)]
    assert picked == [0, 3, 6, 9]
    assert len(bank_sample(images, 50)) == 10 and bank_sample(images, 0) == []
