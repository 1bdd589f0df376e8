"""Pick the compute device and the settings that make it fast.

One place decides precision and memory layout so train, score and the bench agree.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from layerwatch.core.settings import BACKEND_CHOICES

DEVICE_CHOICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DeviceInfo:
    """How to run the network: where, in which precision, with which layout and batch."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    patch_batch: int
    # engine of the scoring network (scorer.backends); "auto" resolves per device there
    backend: str = "auto"

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """bf16 autocast on CUDA; a no-op on CPU, where training stays float32 (the
        ``*-bf16`` scoring engines of scorer.backends choose bf16 for inference only)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Move a 4-D batch to the device in the layout the network expects."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU computes bf16 products in hardware (AVX512-BF16 or AMX): there a
    bf16 network pass is ~1.7× faster than float32 (bench.bench_scorer); elsewhere oneDNN
    emulates bf16 and it is slower. Read from ``cpuinfo`` (Linux); False where unknown."""
    try:
        with cpuinfo.open(encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def pick_device(name: str = "auto", backend: str | None = None) -> DeviceInfo:
    """Resolve ``auto|cpu|cuda``; CUDA asked for but absent is an error, not a fallback.

    ``backend`` is the scoring network's engine (scorer.backends); None = the
    ``scorer_backend`` setting (``LAYERWATCH_SCORER_BACKEND``)."""
    if name not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {name!r}")
    if backend is None:
        from layerwatch.core.settings import get_settings

        backend = get_settings().scorer_backend
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {BACKEND_CHOICES}, got {backend!r}")
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
        return DeviceInfo(
            torch.device("cuda"), torch.bfloat16, channels_last=True, patch_batch=1024,
            backend=backend,
        )  # fmt: skip
    # Measured on the 2-core CPU (width 16/32, 64×64 patches): channels_last halves the forward
    # time and chunks of 8–16 patches beat 32–64 by 1.5–3× (cache), so CPU runs small chunks.
    return DeviceInfo(
        torch.device("cpu"), None, channels_last=True, patch_batch=16, backend=backend
    )
