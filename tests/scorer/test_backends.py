"""Every inference engine scores as eager PyTorch does; exports are tied to their weights."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from scorer.artifact import ArtifactError
from scorer.backends import (
    BACKENDS,
    EXPORT_FILE,
    ExportMismatchError,
    make_backend,
    read_export,
    weights_sha256,
    write_export,
)
from scorer.device import pick_device
from scorer.methods import load_model
from scorer.radar import RadarScorer

# Stated tolerances against eager, on the tiny model's scores of the same images. float32
# engines differ only in summation order: maps to 1e-4 absolute (the residual is O(1)), image
# scores and features to 1e-3 relative. int8 weights change the residual by ~1 %, bf16 (8 bits
# of mantissa) by ~0.5 %: their maps and scores are held to 10 % (their accuracy is measured
# on trained models by bench.backend_accuracy).
LOW_PRECISION = {"map_atol": 0.1, "rel": 0.1}
TOLERANCE = {name: LOW_PRECISION for name in ("onnxruntime-int8", "eager-bf16", "openvino-bf16")}
FLOAT32 = {"map_atol": 1e-4, "rel": 1e-3}


def _with_backend(model: RadarScorer, name: str) -> RadarScorer:
    twin = copy.copy(model)
    twin.device = replace(model.device, backend=name)
    twin.set_model(model.model)
    return twin


@pytest.fixture(scope="module")
def images(make_texture: Callable, make_blob: Callable) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    clean = [make_texture(rng) for _ in range(3)]
    return [*clean, make_blob(clean[0])[0], make_texture(rng, 40)]


# torch.compile takes minutes on 2 shared cores, even for the tiny model: a slow test
ENGINES = [
    pytest.param(b, marks=pytest.mark.slow) if b == "compile" else b
    for b in BACKENDS
    if b != "eager"
]


@pytest.mark.parametrize("name", ENGINES)
def test_backend_scores_match_eager(
    tiny_model: RadarScorer, images: list[np.ndarray], name: str
) -> None:
    eager = _with_backend(tiny_model, "eager")
    other = _with_backend(tiny_model, name)
    assert other.backend.name == name
    tol = TOLERANCE.get(name, FLOAT32)
    want, got = eager.score_batch(images), other.score_batch(images)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g.anomaly_map, w.anomaly_map, atol=tol["map_atol"])
        assert g.f1 == pytest.approx(w.f1, rel=tol["rel"])
        assert g.f2 == pytest.approx(w.f2, rel=tol["rel"])
        assert g.score == pytest.approx(w.score, rel=tol["rel"], abs=tol["rel"])
    if name not in TOLERANCE:
        assert [g.anomalous for g in got] == [w.anomalous for w in want]
    # the draws and images go through in one stack: the residual maps agree map by map
    r_want, r_got = eager.residual_maps(images), other.residual_maps(images)
    for w, g in zip(r_want, r_got, strict=True):
        np.testing.assert_allclose(g, w, atol=tol["map_atol"])


def test_export_records_the_weights_and_is_used_when_it_matches(
    tiny_model: RadarScorer, tiny_model_dir: Path, tmp_path: Path, images: list[np.ndarray]
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.is_file():
            (model_dir / f.name).write_bytes(f.read_bytes())
    loaded = load_model(model_dir, pick_device("cpu", backend="onnxruntime"))
    path = write_export(loaded.model, model_dir / EXPORT_FILE, loaded.model_version)
    assert read_export(path, loaded.model)  # same weights: accepted
    again = load_model(model_dir, pick_device("cpu", backend="onnxruntime"))
    assert again.export_file == path
    eager = load_model(model_dir, pick_device("cpu", backend="eager"))
    got, want = again.score_batch(images[:2]), eager.score_batch(images[:2])
    assert [g.score for g in got] == pytest.approx([w.score for w in want], rel=1e-3, abs=1e-3)


def test_export_of_other_weights_is_refused(
    tiny_model: RadarScorer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    other = copy.deepcopy(tiny_model.model)
    with torch.no_grad():
        other.out.bias.add_(0.5)
    assert weights_sha256(other) != weights_sha256(tiny_model.model)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.is_file():
            (model_dir / f.name).write_bytes(f.read_bytes())
    write_export(other, model_dir / EXPORT_FILE, "radar-somethingelse")
    with pytest.raises(ExportMismatchError, match="exported from other weights") as err:
        read_export(model_dir / EXPORT_FILE, tiny_model.model, "radar-mine")
    assert "radar-somethingelse" in str(err.value) and "layerwatch export" in str(err.value)
    model = load_model(model_dir, pick_device("cpu", backend="onnxruntime"))
    with pytest.raises(ExportMismatchError, match=str(model_dir / EXPORT_FILE)):
        model.score_batch([np.zeros((32, 32), np.uint8)])


def test_a_file_that_is_no_export_is_refused(tiny_model: RadarScorer, tmp_path: Path) -> None:
    junk = tmp_path / EXPORT_FILE
    junk.write_bytes(b"not onnx at all")
    with pytest.raises(ArtifactError, match="not an ONNX file"):
        read_export(junk, tiny_model.model)
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["eps"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("eps", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), junk)
    with pytest.raises(ExportMismatchError, match="records no weights hash"):
        read_export(junk, tiny_model.model)


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        pick_device("cpu", backend="tensorrt")


def test_probe_refuses_an_engine_that_disagrees(tiny_model: RadarScorer) -> None:
    other = copy.deepcopy(tiny_model.model)
    with torch.no_grad():
        other.out.bias.add_(1.0)
    from scorer.backends import EagerBackend, check_against_eager

    wrong = EagerBackend(other, tiny_model.device, name="onnxruntime")
    with pytest.raises(RuntimeError, match="disagrees with eager"):
        check_against_eager(wrong, EagerBackend(tiny_model.model, tiny_model.device), other)
    assert make_backend("eager", tiny_model.model, tiny_model.device).name == "eager"


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_is_openvino_bf16_only_on_a_cpu_with_bf16_in_hardware(
    monkeypatch: pytest.MonkeyPatch, native_bf16: bool
) -> None:
    import scorer.backends as backends

    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: native_bf16)
    cpu = pick_device("cpu", backend="auto")
    assert backends.resolve_backend("auto", cpu) == ("openvino-bf16" if native_bf16 else "eager")
    assert backends.resolve_backend("onnxruntime", cpu) == "onnxruntime"  # a choice stands
    gpu = replace(cpu, device=torch.device("cuda"))
    assert backends.resolve_backend("auto", gpu) == "eager"  # bf16 autocast on CUDA


def test_cpu_bf16_detection_reads_the_cpu_flags(tmp_path: Path) -> None:
    from scorer.device import cpu_has_native_bf16

    def cpu(flags: str) -> Path:
        path = tmp_path / f"cpuinfo-{len(list(tmp_path.iterdir()))}"
        path.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\n")
        return path

    assert cpu_has_native_bf16(cpu("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni"))
    assert cpu_has_native_bf16(cpu("fpu avx512f amx_tile amx_bf16"))
    assert not cpu_has_native_bf16(cpu("fpu sse2 avx2 avx512f avx512bw"))  # emulated bf16
    assert not cpu_has_native_bf16(tmp_path / "missing")  # not Linux: unknown is no


def test_engine_names_the_engine_and_builds_it(tiny_model: RadarScorer) -> None:
    twin = _with_backend(tiny_model, "openvino-bf16")
    # built on first use (the twin holds only its original's engine, for another device) …
    assert twin._backend_for != (twin.model, twin.device)
    assert twin.engine == "openvino-bf16"
    assert twin._backend_for == (twin.model, twin.device)  # … which asking for the engine is
    assert _with_backend(tiny_model, "eager").engine == "eager"
