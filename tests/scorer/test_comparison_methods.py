"""The contract every comparison method (diffusionad, ddpm-recon, pca) shares with RADAR:
shapes, determinism, planted defects, artifact round trip and clear errors on corrupt files."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from scorer.artifact import ArtifactError, _digest
from scorer.device import pick_device
from scorer.methods import Method, TrainData, get_method, load_model, method_names, save_model

CPU = pick_device("cpu")
NEW_METHODS = ("diffusionad", "ddpm-recon", "pca")
SIZE = 32


def flat(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A uniform surface with sensor noise: the case where any defect must stand out."""
    return np.clip(128 + rng.normal(0, 6, (size, size)), 0, 255).astype(np.uint8)


def bright_square(img: np.ndarray, y: int = 10, x: int = 12, r: int = 5) -> np.ndarray:
    out = img.copy()
    out[y : y + 2 * r, x : x + 2 * r] = 245
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine two threads spin against other work and
    run these tiny networks ~100× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=NEW_METHODS)
def fitted(request: pytest.FixtureRequest, settings_factory: Callable) -> Method:
    """150 steps: enough for ε_θ to reconstruct a flat surface (at 40 the reconstruction is
    still noise and ddpm-recon cannot see a defect)."""
    rng = np.random.default_rng(0)
    data = TrainData([flat(rng) for _ in range(12)], [flat(rng) for _ in range(6)], 1, "flat")
    extra = {"ddim_steps": 4} if request.param == "ddpm-recon" else {}
    settings = settings_factory(steps=150, extra=extra)
    return get_method(request.param).fit(data, settings, CPU, time.monotonic() + 60)


@pytest.fixture(scope="module")
def fitted_dir(fitted: Method, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(type(fitted).name)
    save_model(fitted, out)
    return out


def test_registered() -> None:
    assert set(NEW_METHODS) | {"radar"} <= set(method_names())


def test_shapes_and_determinism(fitted: Method) -> None:
    rng = np.random.default_rng(1)
    a, b = flat(rng), flat(rng)
    images = [a, flat(rng, 40), np.stack([b] * 3, -1)]
    results = fitted.score_batch(images)
    assert len(results) == 3
    for img, r in zip(images, results, strict=True):
        assert r.anomaly_map.shape == img.shape[:2] and r.anomaly_map.dtype == np.float32
        assert np.isfinite([r.score, r.f1, r.f2, r.latency_ms]).all()
        assert 0.0 <= r.defect_area <= 1.0 and isinstance(r.anomalous, bool)
    assert fitted.score_batch([]) == []
    again = fitted.score_batch([a])[0]
    assert again.score == pytest.approx(results[0].score, rel=1e-5)
    np.testing.assert_array_equal(again.anomaly_map, fitted.score_batch([a])[0].anomaly_map)
    assert fitted.score_batch([flat(rng, 12)])[0].anomaly_map.shape == (12, 12)
    assert np.isfinite([fitted.pixel_threshold]).all()


def test_planted_defect_scores_above_its_clean_twin(fitted: Method) -> None:
    rng = np.random.default_rng(2)
    for _ in range(3):
        clean = flat(rng)
        bad = bright_square(clean)
        rc, rb = fitted.score_batch([clean, bad])
        assert rb.score > rc.score
        inside = np.zeros(clean.shape, bool)
        inside[10:20, 12:22] = True
        assert rb.anomaly_map[inside].mean() > rc.anomaly_map[inside].mean()


def test_clean_images_mostly_pass(fitted: Method) -> None:
    rng = np.random.default_rng(3)
    flags = [r.anomalous for r in fitted.score_batch([flat(rng) for _ in range(8)])]
    assert sum(flags) <= 3


def test_artifact_round_trip_gives_identical_scores(fitted: Method, fitted_dir: Path) -> None:
    loaded = load_model(fitted_dir, CPU)
    assert type(loaded) is type(fitted)
    assert loaded.model_version.startswith(type(fitted).name)
    rng = np.random.default_rng(4)
    images = [flat(rng), bright_square(flat(rng))]
    for a, b in zip(fitted.score_batch(images), loaded.score_batch(images), strict=True):
        assert a.score == b.score and a.anomalous == b.anomalous
        np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)
    doc = json.loads((fitted_dir / "config.json").read_text())
    assert doc["method"] == type(fitted).name
    assert len(doc["calibration"]["image_scores"]) == len(doc["calibration"]["largest_areas"]) == 6
    assert (
        loaded.calibration_areas == fitted.calibration_areas == doc["calibration"]["largest_areas"]
    )  # type: ignore[attr-defined]


def test_corrupt_artifact_is_a_clear_error(fitted_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "truncated"
    shutil.copytree(fitted_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_model(broken, CPU)

    # A valid hash over the wrong tensors: shapes are checked against the architecture.
    shapes = tmp_path / "shapes"
    shutil.copytree(fitted_dir, shapes)
    tensors = load_file(str(shapes / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = torch.zeros(3, 3, 3, 3, 3, dtype=tensors[name].dtype)
    save_file(tensors, str(shapes / "model.safetensors"))
    doc = json.loads((shapes / "config.json").read_text())
    doc["weights_sha256"] = _digest(shapes / "model.safetensors")
    (shapes / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"model\.safetensors"):
        load_model(shapes, CPU)

    # Missing calibration in the config.
    nocal = tmp_path / "nocal"
    shutil.copytree(fitted_dir, nocal)
    doc = json.loads((nocal / "config.json").read_text())
    del doc["calibration"]
    (nocal / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="calibration"):
        load_model(nocal, CPU)


@pytest.mark.parametrize("name", NEW_METHODS)
def test_unknown_options_are_refused(name: str, settings_factory: Callable) -> None:
    rng = np.random.default_rng(5)
    data = TrainData([flat(rng) for _ in range(3)], [flat(rng) for _ in range(2)], 1, "s")
    with pytest.raises(ValueError, match="unknown"):
        get_method(name).fit(data, settings_factory(extra={"bogus": 1}), CPU, 0.0)
