"""Model directory round-trip and every way loading must fail with ArtifactError."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from scorer.artifact import ArtifactError, _digest
from scorer.device import pick_device
from scorer.isoforest import IsoForestConfig, IsoForestDetector
from scorer.methods import load_model, save_model
from scorer.radar import RadarScorer

CPU = pick_device("cpu")


@pytest.fixture()
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "m"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def _edit_config(d: Path, fn: Callable[[dict], None]) -> None:
    doc = json.loads((d / "config.json").read_text())
    fn(doc)
    (d / "config.json").write_text(json.dumps(doc))


def test_round_trip_reproduces_scores(
    tiny_model: RadarScorer, tiny_model_dir: Path, make_texture: Callable, tmp_path: Path
) -> None:
    loaded = load_model(tiny_model_dir, CPU)
    assert isinstance(loaded, RadarScorer)
    assert loaded.model_version.startswith("radar-") and len(loaded.model_version) == 18
    img = make_texture(np.random.default_rng(11))
    a, b = tiny_model.score_batch([img])[0], loaded.score_batch([img])[0]
    assert a.score == pytest.approx(b.score, abs=1e-9) and a.f2 == pytest.approx(b.f2, rel=1e-6)
    assert loaded.config == tiny_model.config
    doc = json.loads((tiny_model_dir / "config.json").read_text())
    cal = doc["calibration"]
    assert len(cal["features"]) == len(cal["image_scores"]) == len(cal["largest_areas"]) == 8
    assert loaded.calibration_areas == tiny_model.calibration_areas == cal["largest_areas"]
    assert {"torch", "numpy", "scikit-learn"} <= set(doc["library_versions"])
    assert doc["t_selection"]["chosen"] == doc["radar"]["t_star"]
    assert not list(tiny_model_dir.glob("*.pt")) and not list(tiny_model_dir.glob("*.pkl"))
    version2 = save_model(loaded, tmp_path / "again")
    assert version2 == loaded.model_version  # same weights → same version


def test_artifact_from_before_the_lowpass_map_and_one_sided_forest_loads_as_it_was(
    model_copy: Path,
) -> None:
    """Older artifacts stored neither choice: they load with the Sobel map and a two-sided
    forest, the settings their stored thresholds and scores were made with."""

    def make_old(doc: dict) -> None:
        del doc["radar"]["pixel_map"], doc["radar"]["iforest"]["one_sided"]
        del doc["radar"]["detector"]
        cal = doc["calibration"]
        old = IsoForestDetector(
            np.asarray(cal["features"]),
            IsoForestConfig(**{**doc["radar"]["iforest"], "one_sided": False}),
        )
        cal["in_sample_scores"] = old.score(old.features).tolist()
        cal["threshold"] = old.threshold
        del cal["largest_areas"]

    _edit_config(model_copy, make_old)
    loaded = load_model(model_copy, CPU)
    assert isinstance(loaded, RadarScorer)
    assert loaded.config.pixel_map == "sobel" and loaded.config.detector == "iforest"
    assert not loaded.config.iforest.one_sided
    assert loaded.calibration_areas == []  # no areas stored: the monitor learns them per job
    # the defaults would not reproduce the stored (two-sided) scores: the check still bites
    _edit_config(model_copy, lambda d: d["radar"]["iforest"].update(one_sided=True))
    with pytest.raises(ArtifactError, match="does not reproduce"):
        load_model(model_copy, CPU)


def test_missing_directory_and_files(model_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_model(tmp_path / "nowhere", CPU)
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match=r"model\.safetensors: file is missing"):
        load_model(model_copy, CPU)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(schema_version=99), "schema_version 99"),
        (lambda d: d.update(method="martian"), "unknown method 'martian'"),
        (lambda d: d.pop("architecture"), "missing field 'architecture'"),
        (lambda d: d["architecture"].update(base_width=16), "architecture expects"),
        (lambda d: d["architecture"].update(frobs=1), "invalid settings"),
        (lambda d: d["calibration"]["features"][0].__setitem__(0, 123.0), "does not reproduce"),
        (lambda d: d["calibration"].update(features=[[1.0]]), "calibration features"),
        (lambda d: d["calibration"]["whitening"].update(energy=[-1.0]), "invalid whitening"),
        (lambda d: d["calibration"].update(largest_areas=[3, "x"]), "largest_areas"),
        (lambda d: d["calibration"].update(largest_areas=[-1]), "largest_areas"),
    ],
)
def test_wrong_config_is_named(model_copy: Path, edit: Callable, message: str) -> None:
    _edit_config(model_copy, edit)
    with pytest.raises(ArtifactError, match=message) as info:
        load_model(model_copy, CPU)
    assert info.value.path.parent == model_copy


def test_corrupt_files(model_copy: Path) -> None:
    cfg = model_copy / "config.json"
    text = cfg.read_text()
    cfg.write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match=r"config\.json: not valid JSON"):
        load_model(model_copy, CPU)
    cfg.write_text(text)
    weights = model_copy / "model.safetensors"
    raw = weights.read_bytes()
    weights.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match="SHA-256 does not match"):
        load_model(model_copy, CPU)


def test_wrong_tensor_shape_with_valid_hash(model_copy: Path) -> None:
    weights = model_copy / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.endswith("stem.weight"))
    tensors[name] = torch.zeros(3, 3)
    save_file(tensors, str(weights))
    _edit_config(model_copy, lambda d: d.update(weights_sha256=_digest(weights)))
    with pytest.raises(ArtifactError, match=r"stem\.weight.*has shape \(3, 3\)"):
        load_model(model_copy, CPU)
    tensors.pop(name)
    save_file(tensors, str(weights))
    _edit_config(model_copy, lambda d: d.update(weights_sha256=_digest(weights)))
    with pytest.raises(ArtifactError, match="tensor names differ"):
        load_model(model_copy, CPU)


def test_non_finite_weights_are_refused(model_copy: Path) -> None:
    weights = model_copy / "model.safetensors"
    tensors = load_file(str(weights))
    name = next(k for k in tensors if k.endswith("stem.weight"))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(weights))
    _edit_config(model_copy, lambda d: d.update(weights_sha256=_digest(weights)))
    with pytest.raises(ArtifactError, match="NaN"):
        load_model(model_copy, CPU)
