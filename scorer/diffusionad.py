"""DiffusionAD (seed 001): norm-guided one-step denoising + a segmentation network.

patches → x_ts, x_tb (two position-seeded noises) → two ε_θ passes → norm-guided ε̃ → one-step
reconstruction → segmentation net on [x, x̂] → stitched mask probability = the pixel map;
image score = mean of the top-k map pixels. Thresholds: quantiles of held-out normal images.

Training (ours): the budget is split, ε_θ first (RADAR's trainer, same U-Net) then the
segmentation net on synthetic anomalies against the frozen ε_θ; the paper trains both jointly
for about 16 GPU-hours, which a CPU minutes budget cannot mirror.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from scorer.artifact import Artifact, ArtifactError, require
from scorer.calibration import (
    DEFAULT_CONTAMINATION,
    DEFAULT_PIXEL_QUANTILE,
    TopKMapScoring,
    read_thresholds,
)
from scorer.device import DeviceInfo
from scorer.diffusion import GaussianDiffusion, ScheduleConfig
from scorer.features import FeatureConfig
from scorer.methods import TrainData, TrainSettings
from scorer.options import MethodConfig
from scorer.patchnet import (
    PatchGroup,
    calibration_reserve,
    cut_patches,
    forward_chunks,
    group_noise,
    load_weights,
    map_patches,
    patch_sampler,
    prepare_model,
    seconds_per_call,
    train_eps_model,
    unet_config,
)
from scorer.synthetic import synthesize
from scorer.unet import UNet, UNetConfig, count_parameters


@dataclass(frozen=True)
class DiffusionADConfig(MethodConfig):
    """Inference, training-split and calibration settings (stored in the artifact)."""

    METHOD: ClassVar[str] = "DiffusionAD"

    patch: int = 64
    stride: int = 48
    t_small: int = 200
    t_big: int = 400
    guidance: float = 1.0  # w of the norm guidance
    top_k: int = 50
    noise_seed: int = 0
    unet_share: float = 0.6  # (ours) share of the training time spent on ε_θ
    focal_alpha: float = 0.5
    focal_gamma: float = 4.0
    focal_weight: float = 5.0
    beta_low: float = 0.2
    beta_high: float = 0.8
    contamination: float = DEFAULT_CONTAMINATION
    pixel_quantile: float = DEFAULT_PIXEL_QUANTILE
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        if not 0 < self.stride <= self.patch:
            raise ValueError(f"stride must be in 1..patch ({self.patch}), got {self.stride}")
        if not 0 <= self.t_small < self.t_big:
            raise ValueError("need 0 ≤ t_small < t_big")
        if not 0.0 < self.unet_share < 1.0:
            raise ValueError(f"unet_share must be in (0, 1), got {self.unet_share}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be ≥ 1, got {self.top_k}")

    @classmethod
    def from_settings(cls, s: TrainSettings) -> DiffusionADConfig:
        own, nested = cls.split_options(s.extra)
        return cls(
            patch=s.patch,
            stride=s.stride,
            noise_seed=s.seed,
            features=FeatureConfig(**nested["features"]),
            **own,
        )


class SegmentationNet(nn.Module):
    """The shared U-Net body on [x, x̂] (2C channels, no time input) → 1-channel mask logits."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.body = UNet(config)
        self.head = nn.Conv2d(config.in_channels, 1, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        zeros = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.head(self.body(x, zeros))


def focal_loss(
    prob: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    """Binary focal loss on probabilities (mean over pixels)."""
    p = prob.clamp(1e-6, 1 - 1e-6)
    pos = -alpha * (1 - p) ** gamma * target * torch.log(p)
    neg = -(1 - alpha) * p**gamma * (1 - target) * torch.log(1 - p)
    return (pos + neg).mean()


class DiffusionADScorer(TopKMapScoring):
    """ε_θ + segmentation net + thresholds from held-out normal images."""

    name: ClassVar[str] = "diffusionad"

    def __init__(
        self,
        eps_model: UNet,
        seg_model: SegmentationNet,
        config: DiffusionADConfig,
        device: DeviceInfo,
        threshold: float = math.inf,
        pixel_threshold: float = math.inf,
        metadata: dict[str, Any] | None = None,
        schedule: ScheduleConfig | None = None,
    ) -> None:
        self.device = device
        self.config = config
        self.diffusion = GaussianDiffusion(schedule)
        self.eps_model = prepare_model(eps_model, device)
        self.seg_model = prepare_model(seg_model, device)
        self.threshold = threshold
        self.pixel_threshold = pixel_threshold
        self.calibration_scores: list[float] = []
        self.calibration_areas: list[int] = []
        self.metadata: dict[str, Any] = metadata or {}
        self._version = ""

    @property
    def channels(self) -> int:
        return self.eps_model.config.in_channels

    @property
    def model_version(self) -> str:
        return self._version

    # ---- reconstruction and segmentation -------------------------------------------------------

    def reconstruct(
        self, x0: torch.Tensor, eps_s: torch.Tensor, eps_b: torch.Tensor
    ) -> torch.Tensor:
        """Norm-guided one-step denoising (two ε_θ passes, run as one stack)."""
        d, c = self.diffusion, self.config
        n = x0.shape[0]
        x_ts = d.q_sample(x0, c.t_small, eps_s)
        x_tb = d.q_sample(x0, c.t_big, eps_b)
        t = torch.cat([torch.full((n,), c.t_big), torch.full((n,), c.t_small)])
        eps = forward_chunks(self.eps_model, self.device, torch.cat([x_tb, x_ts]), t)
        e_b, e_s = eps[:n], eps[n:]
        x0_b = d.predict_x0(x_tb, c.t_big, e_b)
        sa, s1 = float(d.sqrt_ab[c.t_small]), float(d.sqrt_1mab[c.t_small])
        x_hat_ts = sa * x0_b + s1 * e_s
        guided = e_s - c.guidance * s1 * (x_hat_ts - x_ts)
        return d.predict_x0(x_ts, c.t_small, guided)

    def _mask_patches(self, x: torch.Tensor, groups: list[PatchGroup]) -> torch.Tensor:
        eps_s, eps_b = group_noise(groups, self.channels, 2, self.config.noise_seed)
        recon = self.reconstruct(x, eps_s, eps_b)
        logits = forward_chunks(self.seg_model, self.device, torch.cat([x, recon], dim=1), 0)
        return torch.sigmoid(logits)

    def anomaly_maps(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Stitched segmentation probability per image, H×W float32."""
        c = self.config
        groups = cut_patches(images, self.channels, c.patch, c.stride)
        maps = map_patches(groups, len(images), self._mask_patches)
        return [m[0].astype(np.float32) for m in maps]

    # ---- calibration and training ---------------------------------------------------------------

    def calibrate(self, images: Sequence[np.ndarray], batch: int = 8) -> None:
        """Image and pixel thresholds from held-out normal images only."""
        maps: list[np.ndarray] = []
        for i in range(0, len(images), batch):
            maps += self.anomaly_maps(images[i : i + batch])
        scores = self._scores(maps)
        self.fit_thresholds(scores, maps)

    def patch_seconds(self) -> float:
        """Seconds per patch of the whole pipeline (two ε_θ passes + segmentation)."""
        p, n = self.config.patch, self.device.patch_batch
        x = torch.zeros(n, self.channels, p, p)
        noise = torch.zeros_like(x)

        def pipeline() -> None:
            r = self.reconstruct(x, noise, noise)
            forward_chunks(self.seg_model, self.device, torch.cat([x, r], dim=1), 0)

        return seconds_per_call(pipeline) / n

    def train_segmentation(
        self,
        data: TrainData,
        settings: TrainSettings,
        deadline: float,
        console: Console | None = None,
    ) -> dict[str, Any]:
        """Focal ×w + smooth-L1 on synthetic anomalies, reconstructions from the frozen ε_θ."""
        c, dev = self.config, self.device
        model = self.seg_model.train().requires_grad_(True)
        opt = torch.optim.AdamW(
            model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )
        sampler = patch_sampler(data, settings, seed_offset=101)
        gen = torch.Generator().manual_seed(settings.seed + 202)
        steps, loss_value, start = 0, float("nan"), time.monotonic()
        progress = Progress(
            TextColumn("[bold]segmentation"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            console=console,
            disable=not settings.show_progress,
        )
        with progress:
            task = progress.add_task("seg", total=settings.steps, loss=float("nan"))
            for step in range(settings.steps):
                if time.monotonic() >= deadline:
                    break
                x = sampler.sample(settings.batch_size)
                sources = sampler.sample(settings.batch_size)
                s, m = synthesize(x, sources, gen, beta_range=(c.beta_low, c.beta_high))
                noise = torch.randn(2, *s.shape, generator=gen)
                recon = self.reconstruct(s, noise[0], noise[1])
                inp = dev.prepare(torch.cat([s, recon], dim=1))
                with dev.autocast():
                    prob = torch.sigmoid(model(inp).float())
                target = m.to(prob.device)
                loss = c.focal_weight * focal_loss(
                    prob, target, c.focal_alpha, c.focal_gamma
                ) + F.smooth_l1_loss(prob, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                v = float(loss.detach())
                loss_value = v if math.isnan(loss_value) else 0.98 * loss_value + 0.02 * v
                steps = step + 1
                progress.update(task, advance=1, loss=loss_value)
        self.seg_model = prepare_model(model, dev)
        return {
            "steps": steps,
            "seconds": round(time.monotonic() - start, 2),
            "final_loss": loss_value,
        }

    @classmethod
    def fit(
        cls,
        data: TrainData,
        settings: TrainSettings,
        device: DeviceInfo,
        deadline: float,
        console: Console | None = None,
    ) -> DiffusionADScorer:
        torch.manual_seed(settings.seed)
        config = DiffusionADConfig.from_settings(settings)
        eps_cfg = unet_config(settings, data.channels)
        seg_cfg = unet_config(settings, 2 * data.channels, attention_resolutions=())
        scorer = cls(UNet(eps_cfg), SegmentationNet(seg_cfg), config, device)
        per_patch = scorer.patch_seconds()
        reserve = calibration_reserve(data.calibration, config.patch, config.stride, per_patch)
        now = time.monotonic()
        usable = max(deadline - reserve - now, 0.0)
        eps_deadline = now + config.unet_share * usable
        ema, stats = train_eps_model(
            data, settings, scorer.diffusion, device, eps_deadline, console
        )
        scorer.eps_model = prepare_model(ema, device)
        seg_stats = scorer.train_segmentation(data, settings, deadline - reserve, console)
        cal_start = time.perf_counter()
        scorer.calibrate(data.calibration)
        scorer.metadata["training"] = {
            **stats.to_dict(),
            "segmentation": seg_stats,
            "calibration_seconds": round(time.perf_counter() - cal_start, 2),
            "calibration_reserve_seconds": round(reserve, 2),
            "ms_per_patch": round(per_patch * 1000, 3),
            "device": str(device.device),
            "source": data.source,
            "n_train_images": len(data.train),
            "n_calibration_images": len(data.calibration),
            "calibration_images": data.calibration_names,
            "settings": {k: v for k, v in asdict(settings).items() if k != "show_progress"},
            "parameters": count_parameters(scorer.eps_model) + count_parameters(scorer.seg_model),
        }
        return scorer

    # ---- persistence ----------------------------------------------------------------------------

    def to_artifact(self) -> Artifact:
        if not math.isfinite(self.threshold):
            raise RuntimeError("cannot save an uncalibrated DiffusionAD scorer")
        state = {f"eps.{k}": v for k, v in self.eps_model.state_dict().items()}
        state |= {f"seg.{k}": v for k, v in self.seg_model.state_dict().items()}
        c = self.config
        config = {
            "channels": self.channels,
            "architecture": self.eps_model.config.to_dict(),
            "segmentation_architecture": self.seg_model.config.to_dict(),
            "schedule": self.diffusion.config.to_dict(),
            "diffusionad": c.to_dict(),
            "calibration": self.calibration_record(),
            **self.metadata,
        }
        return Artifact(self.name, state, config, self._version)

    @classmethod
    def from_artifact(
        cls, artifact: Artifact, device: DeviceInfo, where: Path
    ) -> DiffusionADScorer:
        doc = artifact.config
        cfg_path, weights = where / "config.json", where / "model.safetensors"
        try:
            eps_cfg = UNetConfig.from_dict(require(doc, "architecture", dict, cfg_path))
            seg_cfg = UNetConfig.from_dict(
                require(doc, "segmentation_architecture", dict, cfg_path)
            )
            schedule = ScheduleConfig(**require(doc, "schedule", dict, cfg_path))
            config = DiffusionADConfig.from_dict(require(doc, "diffusionad", dict, cfg_path))
        except (TypeError, ValueError, KeyError) as e:
            raise ArtifactError(cfg_path, f"invalid settings ({e})") from e
        if seg_cfg.in_channels != 2 * eps_cfg.in_channels:
            raise ArtifactError(cfg_path, "segmentation input must be [image, reconstruction]")
        eps = load_weights(UNet(eps_cfg), artifact.tensors, weights, "eps.")
        seg = load_weights(SegmentationNet(seg_cfg), artifact.tensors, weights, "seg.")
        cal = require(doc, "calibration", dict, cfg_path)
        thr, pix = read_thresholds(cal, cfg_path)
        meta = {k: doc[k] for k in ("training",) if k in doc}
        scorer = cls(eps, seg, config, device, thr, pix, meta, schedule)  # type: ignore[arg-type]
        scorer.restore_calibration(cal, cfg_path)
        scorer._version = artifact.model_version
        return scorer
