"""The denoiser's training loop, shared by the diffusion methods: patch sampling with
augmentation, AdamW + EMA under a wall-clock budget. It knows networks and patches, not methods
(scorer.train, which trains a whole method, sits above it)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from scorer.data import to_model_tensor
from scorer.device import DeviceInfo
from scorer.diffusion import GaussianDiffusion
from scorer.methods import TrainSettings


@dataclass
class TrainStats:
    steps: int = 0
    seconds: float = 0.0
    final_loss: float = float("nan")
    stopped_by: str = "steps"
    step_seconds: float = float("nan")
    loss_curve: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
            "final_loss": self.final_loss,
            "stopped_by": self.stopped_by,
            "seconds_per_step": round(self.step_seconds, 4),
            "loss_curve": [[s, round(v, 5)] for s, v in self.loss_curve],
        }


class PatchSampler:
    """Random p×p crops with dihedral augmentation and brightness/contrast jitter."""

    def __init__(
        self,
        images: list[np.ndarray],
        channels: int,
        patch: int,
        settings: TrainSettings,
        generator: torch.Generator,
    ) -> None:
        self.images = [to_model_tensor([im], channels)[0] for im in images]
        for im in self.images:
            if min(im.shape[-2:]) < patch:
                raise ValueError(
                    f"training image {tuple(im.shape[-2:])} smaller than patch {patch}"
                )
        self.patch = patch
        self.settings = settings
        self.g = generator

    def _randint(self, high: int, n: int) -> torch.Tensor:
        return torch.randint(0, high, (n,), generator=self.g)

    def sample(self, batch: int) -> torch.Tensor:
        p, s = self.patch, self.settings
        idx = self._randint(len(self.images), batch).tolist()
        crops = []
        for i in idx:
            im = self.images[i]
            y = int(self._randint(im.shape[-2] - p + 1, 1))
            x = int(self._randint(im.shape[-1] - p + 1, 1))
            crop = im[:, y : y + p, x : x + p]
            if s.rotations:
                crop = torch.rot90(crop, int(self._randint(4, 1)), dims=(1, 2))
            if s.flips and int(self._randint(2, 1)):
                crop = crop.flip(-1)
            crops.append(crop)
        x = torch.stack(crops)
        if s.jitter > 0:
            u = torch.rand(batch, 2, 1, 1, 1, generator=self.g) * 2 - 1
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * (1 + s.jitter * u[:, 0]) + mean + s.jitter * u[:, 1]
            x = x.clamp(-1, 1)
        return x


def _lr_factor(step: int, frac_done: float, warmup: int = 50) -> float:
    """Linear warm-up, then cosine decay driven by the larger of step and time progress."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac_done)))


def train_diffusion(
    model: nn.Module,
    diffusion: GaussianDiffusion,
    sampler: PatchSampler,
    settings: TrainSettings,
    device: DeviceInfo,
    deadline: float,
    console: Console | None = None,
) -> tuple[nn.Module, TrainStats]:
    """Train ε_θ until ``settings.steps`` or the wall-clock ``deadline``; returns the EMA copy."""
    model.to(device.device).train()
    if device.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    gen = torch.Generator(device=device.device).manual_seed(settings.seed + 1)
    stats = TrainStats()
    start = time.monotonic()
    budget = max(deadline - start, 1e-6)
    smooth = float("nan")
    progress = Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not settings.show_progress,
        transient=False,
    )
    with progress:
        task = progress.add_task("train", total=settings.steps, loss=float("nan"))
        for step in range(settings.steps):
            now = time.monotonic()
            if now >= deadline:
                stats.stopped_by = "time"
                break
            frac = max(step / settings.steps, (now - start) / budget)
            for group in opt.param_groups:
                group["lr"] = settings.lr * _lr_factor(step, frac)
            x0 = device.prepare(sampler.sample(settings.batch_size))
            with device.autocast():
                loss = diffusion.training_loss(model, x0, gen, settings.train_t_max)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            decay = min(settings.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                    pe.lerp_(pm, 1 - decay)
            value = float(loss.detach())
            smooth = value if math.isnan(smooth) else 0.98 * smooth + 0.02 * value
            stats.steps = step + 1
            if step % 50 == 0 or step == settings.steps - 1:
                stats.loss_curve.append((step, smooth))
            progress.update(task, advance=1, loss=smooth)
    stats.seconds = time.monotonic() - start
    stats.final_loss = smooth
    stats.step_seconds = stats.seconds / max(stats.steps, 1)
    return ema, stats
