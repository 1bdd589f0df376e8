"""Running patch networks over whole images, shared by the diffusion comparison methods.

Images are cut into the same overlapping p×p grid RADAR uses, every patch of every image goes
through the network in device-sized chunks, and per-patch outputs are stitched back seam-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from scorer.artifact import ArtifactError, check_state_dict
from scorer.data import to_model_tensor
from scorer.device import DeviceInfo
from scorer.diffusion import GaussianDiffusion
from scorer.methods import TrainData, TrainSettings
from scorer.patches import PatchGrid, pad_to_patch, position_noise
from scorer.training_loop import PatchSampler, TrainStats, train_diffusion
from scorer.unet import UNet, UNetConfig


def unet_config(settings: TrainSettings, in_channels: int, **overrides: object) -> UNetConfig:
    """The shared ε_θ architecture from the common settings (same for every diffusion method)."""
    kw: dict[str, object] = dict(
        in_channels=in_channels,
        base_width=settings.width,
        channel_mults=tuple(settings.channel_mults),
        attention_resolutions=tuple(settings.attention_resolutions),
        patch_size=settings.patch,
    )
    kw.update(overrides)
    return UNetConfig(**kw)  # type: ignore[arg-type]


def patch_sampler(data: TrainData, settings: TrainSettings, seed_offset: int = 0) -> PatchSampler:
    return PatchSampler(
        data.train,
        data.channels,
        settings.patch,
        settings,
        torch.Generator().manual_seed(settings.seed + seed_offset),
    )


def train_eps_model(
    data: TrainData,
    settings: TrainSettings,
    diffusion: GaussianDiffusion,
    device: DeviceInfo,
    deadline: float,
    console: Console | None = None,
) -> tuple[UNet, TrainStats]:
    """Train ε_θ exactly as RADAR does (same sampler, loss, optimiser, EMA); returns the EMA."""
    torch.manual_seed(settings.seed)
    model = UNet(unet_config(settings, data.channels))
    ema, stats = train_diffusion(
        model, diffusion, patch_sampler(data, settings), settings, device, deadline, console
    )
    return ema, stats  # type: ignore[return-value]


def prepare_model(model: nn.Module, device: DeviceInfo) -> nn.Module:
    """Inference copy on the device in its preferred layout, gradients off."""
    model = model.to(device.device).eval().requires_grad_(False)
    if device.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def forward_chunks(
    model: nn.Module, device: DeviceInfo, x: torch.Tensor, t: int | torch.Tensor
) -> torch.Tensor:
    """model(x, t) over a stack of patches in device-sized chunks (t: one value or per patch)."""
    out_chunks = []
    step = device.patch_batch
    t_all = torch.as_tensor(t, dtype=torch.long).reshape(-1)
    if t_all.numel() == 1:
        t_all = t_all.expand(x.shape[0])
    with torch.inference_mode(), device.autocast():
        for i in range(0, x.shape[0], step):
            chunk = device.prepare(x[i : i + step])
            tv = t_all[i : i + step].to(device.device)
            out_chunks.append(model(chunk, tv).float().cpu())
    if not out_chunks:
        return x.new_empty((0,))
    return torch.cat(out_chunks)


@dataclass(frozen=True)
class PatchGroup:
    """Same-size images cut into one grid: ``patches`` is (B, N, C, p, p)."""

    indices: list[int]
    grid: PatchGrid
    size: tuple[int, int]  # original (H, W) before padding
    patches: torch.Tensor


def cut_patches(
    images: Sequence[np.ndarray], channels: int, patch: int, stride: int
) -> list[PatchGroup]:
    """Group images by size and cut each group into overlapping patches (small ones padded)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(np.asarray(img).shape[:2], []).append(i)
    out = []
    for idxs in groups.values():
        x = to_model_tensor([images[i] for i in idxs], channels)
        x, hw = pad_to_patch(x, patch)
        grid = PatchGrid(x.shape[-2], x.shape[-1], patch, stride)
        out.append(PatchGroup(idxs, grid, hw, grid.extract(x)))
    return out


def map_patches(
    groups: Sequence[PatchGroup],
    n_images: int,
    fn: Callable[[torch.Tensor, list[PatchGroup]], torch.Tensor],
) -> list[np.ndarray]:
    """Apply ``fn`` to all patches of all groups at once, stitch, crop: (C', H, W) per image.

    ``fn`` gets the flat (ΣB·N, C, p, p) stack (and the groups, for position-seeded noise) and
    returns a (ΣB·N, C', p, p) stack, so one network pass covers the whole batch.
    """
    if not groups:
        return []
    flat = torch.cat([g.patches.reshape(-1, *g.patches.shape[2:]) for g in groups])
    result = fn(flat, list(groups))
    out: list[np.ndarray] = [np.empty(0)] * n_images
    start = 0
    for g in groups:
        b, n = g.patches.shape[:2]
        r = result[start : start + b * n]
        start += b * n
        h, w = g.size
        maps = g.grid.stitch(r.reshape(b, n, *r.shape[1:]))[:, :, :h, :w].numpy()
        for j, i in enumerate(g.indices):
            out[i] = maps[j]
    return out


def group_noise(
    groups: Sequence[PatchGroup], channels: int, draws: int, seed: int
) -> list[torch.Tensor]:
    """Position-seeded ε per draw, laid out like ``map_patches``'s flat stack: (ΣB·N, C, p, p)."""
    per_draw: list[list[torch.Tensor]] = [[] for _ in range(draws)]
    for g in groups:
        eps = position_noise(g.grid, channels, draws, seed)  # (K, N, C, p, p)
        b = g.patches.shape[0]
        for k in range(draws):
            per_draw[k].append(eps[k][None].expand(b, *eps.shape[1:]).reshape(-1, *eps.shape[2:]))
    return [torch.cat(d) for d in per_draw]


def load_weights(
    model: nn.Module, tensors: dict[str, torch.Tensor], where: Path, prefix: str
) -> nn.Module:
    """Load an artifact's ``prefix.*`` tensors into ``model`` after shape and finiteness checks."""
    state = check_state_dict(model.state_dict(), tensors, where, prefix=prefix)
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise ArtifactError(where, "weights contain NaN or infinity")
    model.load_state_dict(state)
    return model


def calibration_reserve(
    images: Sequence[np.ndarray], patch: int, stride: int, seconds_per_patch: float
) -> float:
    """Wall-clock seconds to keep for calibrating on ``images`` (30 % margin + 1 s)."""
    h, w = np.asarray(images[0]).shape[:2]
    n = PatchGrid(max(h, patch), max(w, patch), patch, stride).count
    return 1.3 * len(images) * n * seconds_per_patch + 1.0


def seconds_per_call(call: Callable[[], object], warmup: int = 2, repeats: int = 5) -> float:
    """Wall-clock seconds of one ``call()``: the fastest of ``repeats`` after ``warmup`` calls.

    The minimum, not the mean: on a shared machine one slow repeat (measured once: 35 ms
    instead of 3.5 ms per patch) would reserve a third of the training budget for calibration.
    """
    for _ in range(warmup):
        call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best
