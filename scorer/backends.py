"""Inference engines for the ε-network behind one interface: ``backend.forward(xt, t) → ε̂``.

RADAR's whole cost is one network pass per patch and draw, so the engine that runs it is a
setting (``LAYERWATCH_SCORER_BACKEND``, ``--backend``), not code: eager PyTorch as trained
(always there, the fallback), ``torch.compile`` (fused kernels; CUDA graphs on a GPU), ONNX
Runtime (CPU, or its CUDA provider when present), ONNX Runtime with dynamic int8 weights, and
OpenVINO. The ONNX engines run an export of the same weights, made at load time or read from
``MODEL/model.onnx`` (``layerwatch export MODEL``). An export records the SHA-256 of the
weights it was made from; a file made from other weights is refused with an error that says
so, and every engine is checked against eager on a probe batch when it is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from scorer.artifact import ArtifactError
from scorer.device import BACKEND_CHOICES, DeviceInfo, cpu_has_native_bf16
from scorer.unet import UNet

BACKENDS = BACKEND_CHOICES[1:]
EXPORT_FILE = "model.onnx"
OPSET = 18
# metadata_props keys of an export
HASH_KEY = "layerwatch.weights_sha256"
VERSION_KEY = "layerwatch.model_version"
ARCH_KEY = "layerwatch.architecture"
# Largest error an engine may show against eager on the probe batch, relative to the RMS of
# eager's output: float32 engines differ by summation order only (≈1e-6 measured); int8
# weights by their rounding (measured ≈1–3 % on trained width-16 models).
# bf16 keeps 8 bits of mantissa: ≈0.6 % measured on a random width-16 network.
PROBE_TOLERANCE = {"onnxruntime-int8": 0.1, "eager-bf16": 0.05, "openvino-bf16": 0.05}
DEFAULT_PROBE_TOLERANCE = 1e-3


class ExportMismatchError(ArtifactError):
    """An exported network file was not made from the weights it is loaded for."""


class BackendUnavailableError(RuntimeError):
    """The chosen engine's package is not installed (or has no device for it)."""


class NetworkBackend(Protocol):
    """Runs ε_θ over a stack of noisy patches (N, C, p, p), float32 on the CPU, at one t."""

    name: str

    def forward(self, xt: torch.Tensor, t: int) -> torch.Tensor: ...


def resolve_backend(name: str, device: DeviceInfo) -> str:
    """``auto`` → the engine measured fastest for the device (see bench.bench_scorer)."""
    if name not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {BACKEND_CHOICES}, got {name!r}")
    if name != "auto":
        return name
    if device.is_cuda:
        return "eager"  # bf16 autocast: the path tested here (no GPU on this machine)
    # CPU with bf16 in hardware (AVX512-BF16/AMX): OpenVINO in bf16 had the lowest p50/p95
    # of a single 256² layer and the most layers/s at 512² in bench.bench_scorer (eager-bf16
    # the most layers/s in batches of 256²), and bf16 left image AUROC within 0.005 of
    # float32 on the seed-1 models (bench.backend_accuracy). Without it: eager (oneDNN,
    # channels-last) was the fastest float32 engine; torch.compile takes minutes to compile.
    if cpu_has_native_bf16() and importlib.util.find_spec("openvino") is not None:
        return "openvino-bf16"
    return "eager"


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes, bytes): identifies the weights
    whatever file they came from."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        v = value.detach().cpu().contiguous()
        h.update(f"{name}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.numpy().tobytes() if v.dtype != torch.bfloat16 else v.float().numpy().tobytes())
    return h.hexdigest()


# ---- ONNX export ------------------------------------------------------------------------------


def export_onnx(model: UNet, model_version: str = "") -> bytes:
    """The network as ONNX (batch dimension dynamic, t one int64 per patch), with the weights'
    hash, the model version and the architecture in its metadata."""
    import onnx

    p, c = model.config.patch_size, model.config.in_channels
    cpu = _cpu_copy(model)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter: 3× faster to export than the dynamo one here, same graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            cpu,
            (torch.zeros(2, c, p, p), torch.full((2,), 100, dtype=torch.long)),
            buf,
            dynamo=False,
            input_names=["x", "t"],
            output_names=["eps"],
            dynamic_axes={"x": {0: "n"}, "t": {0: "n"}, "eps": {0: "n"}},
            opset_version=OPSET,
        )
    proto = onnx.load_from_string(buf.getvalue())
    meta = {
        HASH_KEY: weights_sha256(model),
        VERSION_KEY: model_version,
        ARCH_KEY: json.dumps(model.config.to_dict(), sort_keys=True),
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def write_export(model: UNet, path: Path, model_version: str = "") -> Path:
    """Export to ``path`` (written to a temporary name, then renamed)."""
    data = export_onnx(model, model_version)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def read_export(path: Path, model: UNet, model_version: str = "") -> bytes:
    """An exported file's bytes, refused unless it records exactly ``model``'s weights."""
    import onnx

    try:
        proto = onnx.load_from_string(path.read_bytes())
    except OSError as e:
        raise ArtifactError(path, f"cannot read the exported network ({e})") from e
    except Exception as e:  # onnx raises DecodeError and friends
        raise ArtifactError(path, f"not an ONNX file ({type(e).__name__}: {e})") from e
    meta = {p.key: p.value for p in proto.metadata_props}
    found, want = meta.get(HASH_KEY), weights_sha256(model)
    if found is None:
        raise ExportMismatchError(
            path, "records no weights hash: not written by `layerwatch export`; re-export it"
        )
    if found != want:
        made = meta.get(VERSION_KEY) or "unknown version"
        loaded = model_version or "these weights"
        raise ExportMismatchError(
            path,
            f"was exported from other weights ({made}, sha256 {found[:12]}) than the model "
            f"loaded ({loaded}, sha256 {want[:12]}); run `layerwatch export` on the model "
            "directory again or delete the file",
        )
    return proto.SerializeToString()


def _cpu_copy(model: UNet) -> UNet:
    """A float32, contiguous-layout CPU copy for exporting (the served copy may be elsewhere)."""
    copy = UNet(model.config)
    copy.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    return copy.eval().requires_grad_(False)


# ---- engines ----------------------------------------------------------------------------------


@dataclass
class EagerBackend:
    """PyTorch as trained, in device-sized chunks (bf16 autocast and channels-last on CUDA;
    pinned host memory so the copies overlap). ``bf16`` autocasts on the CPU too: oneDNN's
    bf16 convolutions on a CPU with AVX512-BF16 or AMX."""

    model: nn.Module
    device: DeviceInfo
    name: str = "eager"
    bf16: bool = False

    def forward(self, xt: torch.Tensor, t: int) -> torch.Tensor:
        out = torch.empty_like(xt)
        step = self.device.patch_batch
        t_vec = torch.full((step,), t, dtype=torch.long, device=self.device.device)
        if self.device.is_cuda:
            xt = xt.pin_memory()
        cast = (
            torch.autocast(device_type="cpu", dtype=torch.bfloat16)
            if self.bf16 and not self.device.is_cuda
            else self.device.autocast()
        )
        with torch.inference_mode(), cast:
            for i in range(0, xt.shape[0], step):
                chunk = self.device.prepare(xt[i : i + step])
                out[i : i + step] = self._call(chunk, t_vec[: chunk.shape[0]]).float().to("cpu")
        return out

    def _call(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, t)


class CompiledBackend(EagerBackend):
    """``torch.compile`` of the served model: fused normalisation/activation kernels on CPU;
    on CUDA the ``reduce-overhead`` mode records CUDA graphs. Compiles on the first batch,
    for one shape: every chunk is padded to ``patch_batch`` patches (a dynamic batch failed
    to compile in torch 2.13, and each new shape would compile again, minutes on a CPU)."""

    def __init__(self, model: nn.Module, device: DeviceInfo) -> None:
        mode = "reduce-overhead" if device.is_cuda else None
        super().__init__(torch.compile(model, mode=mode, dynamic=False), device, "compile")

    def _call(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n, step = x.shape[0], self.device.patch_batch
        if n < step:
            x = torch.cat([x, x[-1:].expand(step - n, *x.shape[1:])])
            t = torch.cat([t, t[-1:].expand(step - n)])
        return self.model(self.device.prepare(x), t)[:n]


class OnnxRuntimeBackend:
    """ONNX Runtime on the export: the CUDA provider on a CUDA device when the installed
    build has it, the CPU provider otherwise."""

    def __init__(self, onnx_bytes: bytes, device: DeviceInfo, name: str = "onnxruntime") -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError("backend 'onnxruntime' needs onnxruntime") from e
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device.is_cuda:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    "device is CUDA but this onnxruntime has no CUDA provider "
                    "(install onnxruntime-gpu)"
                )
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(onnx_bytes, opts, providers=providers)
        self.chunk = device.patch_batch
        self.name = name

    def forward(self, xt: torch.Tensor, t: int) -> torch.Tensor:
        x = np.ascontiguousarray(xt.numpy(), dtype=np.float32)
        outs = []
        for i in range(0, len(x), self.chunk):
            part = x[i : i + self.chunk]
            ts = np.full(len(part), t, dtype=np.int64)
            outs.append(self.session.run(None, {"x": part, "t": ts})[0])
        return torch.from_numpy(np.concatenate(outs)) if outs else torch.empty_like(xt)


def quantize_int8(onnx_bytes: bytes) -> bytes:
    """Dynamic int8 quantisation of the export's convolutions and matrix products (weights
    int8, activations quantised per batch at run time; no calibration data needed)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise BackendUnavailableError("backend 'onnxruntime-int8' needs onnxruntime") from e
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(_inline_identities(onnx_bytes))
        quiet = logging.getLogger()  # the quantiser advises pre-processing on the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(
                    src,
                    dst,
                    weight_type=QuantType.QUInt8,
                    op_types_to_quantize=["Conv", "MatMul"],
                )
        finally:
            quiet.setLevel(level)
        return dst.read_bytes()


def _inline_identities(onnx_bytes: bytes) -> bytes:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer: the exporter shares
    equal weights (e.g. zero-initialised convolutions) that way, and the quantiser needs every
    convolution's weight to be an initializer of its own."""
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    return proto.SerializeToString()


class OpenVinoBackend:
    """OpenVINO's CPU plugin on the export (one stream: latency), in float32 or, with
    ``bf16``, bf16 inference (``INFERENCE_PRECISION_HINT``; in hardware on AVX512-BF16/AMX)."""

    def __init__(self, onnx_bytes: bytes, device: DeviceInfo, bf16: bool = False) -> None:
        name = "openvino-bf16" if bf16 else "openvino"
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailableError(f"backend {name!r} needs openvino") from e
        if device.is_cuda:
            raise BackendUnavailableError(f"backend {name!r} runs on the CPU only here")
        core = ov.Core()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / EXPORT_FILE
            path.write_bytes(onnx_bytes)
            model = core.read_model(str(path))
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32",
            "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        }
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.chunk = device.patch_batch
        self.name = name

    def forward(self, xt: torch.Tensor, t: int) -> torch.Tensor:
        x = np.ascontiguousarray(xt.numpy(), dtype=np.float32)
        outs = []
        for i in range(0, len(x), self.chunk):
            part = x[i : i + self.chunk]
            res = self.request.infer({"x": part, "t": np.full(len(part), t, dtype=np.int64)})
            outs.append(np.array(res[0]))
        return torch.from_numpy(np.concatenate(outs)) if outs else torch.empty_like(xt)


def make_backend(
    name: str,
    model: UNet,
    device: DeviceInfo,
    export_file: Path | None = None,
    model_version: str = "",
    probe: bool = True,
) -> NetworkBackend:
    """Build engine ``name`` for ``model`` (already on ``device``, in eval mode). The ONNX
    engines read ``export_file`` when it exists (refused if it is from other weights) and
    export in memory otherwise. With ``probe`` the engine is checked against eager on a small
    batch and refused when it disagrees."""
    name = resolve_backend(name, device)
    eager = EagerBackend(model, device)
    backend: NetworkBackend
    if name == "eager":
        return eager
    if name == "eager-bf16":
        backend = EagerBackend(model, device, name, bf16=True)
    elif name == "compile":
        backend = CompiledBackend(model, device)
    else:
        if export_file is not None and export_file.is_file():
            onnx_bytes = read_export(export_file, model, model_version)
        else:
            onnx_bytes = export_onnx(model, model_version)
        if name == "onnxruntime":
            backend = OnnxRuntimeBackend(onnx_bytes, device)
        elif name == "onnxruntime-int8":
            backend = OnnxRuntimeBackend(quantize_int8(onnx_bytes), device, name)
        else:
            backend = OpenVinoBackend(onnx_bytes, device, bf16=name == "openvino-bf16")
    if probe:
        check_against_eager(backend, eager, model)
    return backend


class EngineMixin:
    """A scorer whose ``model`` runs through the engine ``device.backend`` names, built
    (exported, probed against eager) on first use and again when ``model`` or ``device`` is
    replaced (new weights, another engine): every
    method that uses it is timed and scored on the same engine (RADAR and the ddpm-recon
    baseline in ``bench compare``). ``export_file``, when set and present, is the ONNX export
    to use (refused if made from other weights)."""

    model: UNet
    device: DeviceInfo
    _version: str
    export_file: Path | None = None
    _backend: NetworkBackend | None = None
    # the weights and device the engine was built for
    _backend_for: tuple[nn.Module, DeviceInfo] | None = None

    @property
    def backend(self) -> NetworkBackend:
        # a module compares by identity, a (frozen) DeviceInfo by its fields
        if self._backend is None or self._backend_for != (self.model, self.device):
            self._backend = make_backend(
                self.device.backend, self.model, self.device, self.export_file, self._version
            )
            self._backend_for = (self.model, self.device)
        return self._backend

    @property
    def engine(self) -> str:
        """The network's engine, built now if it was not yet: a service asks at start so its
        first layer does not pay for the export."""
        return self.backend.name


def check_against_eager(backend: NetworkBackend, eager: EagerBackend, model: UNet) -> float:
    """Relative RMS difference of ``backend`` to eager on a seeded probe batch; raises when it
    is above the engine's tolerance (a wrong or stale export, a broken engine)."""
    p, c = model.config.patch_size, model.config.in_channels
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, c, p, p, generator=g)
    want = eager.forward(x, 100)
    got = backend.forward(x, 100)
    scale = float(want.square().mean().sqrt()) or 1.0
    err = float((got - want).square().mean().sqrt()) / scale
    limit = PROBE_TOLERANCE.get(backend.name, DEFAULT_PROBE_TOLERANCE)
    if not err <= limit:
        raise RuntimeError(
            f"backend {backend.name!r} disagrees with eager PyTorch on the probe batch "
            f"(relative RMS error {err:.2e} > {limit:g}); use --backend eager"
        )
    return err
