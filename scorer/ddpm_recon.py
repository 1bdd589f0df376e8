"""Multi-step reconstruction diffusion (AnoDDPM-style): the baseline RADAR's speed is set against.

patches → noise to t_r (position-seeded ε) → DDIM reverse in ``ddim_steps`` ε_θ passes →
stitched reconstruction → map = smoothed ‖x − x̂‖ over channels; image score = hottest w×w
window of the map (RADAR's f2 on this map). Thresholds: quantiles of held-out normal images.
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
from rich.console import Console

from scorer.artifact import Artifact, ArtifactError, require
from scorer.backends import EngineMixin
from scorer.calibration import (
    DEFAULT_CONTAMINATION,
    DEFAULT_PIXEL_QUANTILE,
    MapCalibration,
    map_features,
    read_thresholds,
    to_results,
)
from scorer.device import DeviceInfo
from scorer.diffusion import GaussianDiffusion, ScheduleConfig
from scorer.features import FeatureConfig, gaussian_blur
from scorer.methods import ScoreResult, TrainData, TrainSettings
from scorer.options import MethodConfig
from scorer.patchnet import (
    PatchGroup,
    calibration_reserve,
    cut_patches,
    group_noise,
    load_weights,
    map_patches,
    prepare_model,
    seconds_per_call,
    train_eps_model,
    unet_config,
)
from scorer.unet import UNet, UNetConfig, count_parameters


@dataclass(frozen=True)
class DdpmReconConfig(MethodConfig):
    """Inference and calibration settings (stored in the artifact)."""

    METHOD: ClassVar[str] = "ddpm-recon"

    patch: int = 64
    stride: int = 48
    t_recon: int = 200  # (ours) noise level t_r; DiffusionAD's small t, AnoDDPM uses 250
    ddim_steps: int = 10  # (ours) reverse passes; the speed baseline's one knob
    noise_seed: int = 0
    contamination: float = DEFAULT_CONTAMINATION
    pixel_quantile: float = DEFAULT_PIXEL_QUANTILE
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        if not 0 < self.stride <= self.patch:
            raise ValueError(f"stride must be in 1..patch ({self.patch}), got {self.stride}")
        if not 1 <= self.ddim_steps <= self.t_recon + 1:
            raise ValueError(f"ddim_steps must be in 1..t_recon+1, got {self.ddim_steps}")

    @classmethod
    def from_settings(cls, s: TrainSettings) -> DdpmReconConfig:
        own, nested = cls.split_options(s.extra)
        return cls(
            patch=s.patch,
            stride=s.stride,
            noise_seed=s.seed,
            features=FeatureConfig(**nested["features"]),
            **own,
        )

    @property
    def timesteps(self) -> list[int]:
        """The ε_θ passes: t_r down to t_r/steps, evenly spaced; the last update goes to x̂_0."""
        ts = np.linspace(self.t_recon, 0, self.ddim_steps + 1)[:-1]
        return sorted(set(ts.round().astype(int).tolist()), reverse=True)


class DdpmReconScorer(EngineMixin, MapCalibration):
    """ε_θ (trained as RADAR's) + DDIM reconstruction + thresholds from held-out normals. The
    network runs on the same engine as RADAR's (``device.backend``), so that a speed ratio
    between the two measures the method, not the engine."""

    name: ClassVar[str] = "ddpm-recon"

    def __init__(
        self,
        model: UNet,
        config: DdpmReconConfig,
        device: DeviceInfo,
        threshold: float = math.inf,
        pixel_threshold: float = math.inf,
        metadata: dict[str, Any] | None = None,
        schedule: ScheduleConfig | None = None,
    ) -> None:
        self.device = device
        self.config = config
        self.diffusion = GaussianDiffusion(schedule)
        self.model = prepare_model(model, device)
        self.threshold = threshold
        self.pixel_threshold = pixel_threshold
        self.calibration_scores: list[float] = []
        self.calibration_areas: list[int] = []
        self.metadata: dict[str, Any] = metadata or {}
        self._version = ""

    @property
    def channels(self) -> int:
        return self.model.config.in_channels

    @property
    def model_version(self) -> str:
        return self._version

    def reconstruct(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_{t_r} from x_0, then deterministic DDIM (η = 0) back to x̂_0."""
        ts = self.config.timesteps
        x = self.diffusion.q_sample(x0, ts[0], noise)
        for i, t in enumerate(ts):
            eps = self.backend.forward(x, int(t))
            x = self.diffusion.ddim_step(x, t, ts[i + 1] if i + 1 < len(ts) else -1, eps)
        return x

    def _residual_patches(self, x: torch.Tensor, groups: list[PatchGroup]) -> torch.Tensor:
        """x̂ − x per patch; stitching is linear, so this stitches to the image residual."""
        (noise,) = group_noise(groups, self.channels, 1, self.config.noise_seed)
        return self.reconstruct(x, noise) - x

    def anomaly_maps(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Smoothed ‖x − x̂‖ over channels, H×W float32."""
        c = self.config
        groups = cut_patches(images, self.channels, c.patch, c.stride)
        residuals = map_patches(groups, len(images), self._residual_patches)
        out = []
        for r in residuals:
            dist = torch.as_tensor(r).square().sum(dim=0).sqrt()[None, None]
            out.append(gaussian_blur(dist, c.features.map_sigma)[0, 0].numpy())
        return out

    def _scores(self, maps: Sequence[np.ndarray]) -> tuple[np.ndarray, list[tuple[float, float]]]:
        feats = map_features(maps, self.config.features.window)
        return np.array([f2 for _, f2 in feats]), feats

    def score_batch(self, images: Sequence[np.ndarray]) -> list[ScoreResult]:
        if not math.isfinite(self.threshold):
            raise RuntimeError("ddpm-recon scorer is not calibrated")
        if not images:
            return []
        start = time.perf_counter()
        maps = self.anomaly_maps(images)
        scores, feats = self._scores(maps)
        return to_results(
            maps,
            scores,
            scores > self.threshold,
            feats,
            self.pixel_threshold,
            self.config.features,
            start,
        )

    def calibrate(self, images: Sequence[np.ndarray], batch: int = 8) -> None:
        """Image and pixel thresholds from held-out normal images only."""
        maps: list[np.ndarray] = []
        for i in range(0, len(images), batch):
            maps += self.anomaly_maps(images[i : i + batch])
        scores, _ = self._scores(maps)
        self.fit_thresholds(scores, maps)

    def patch_seconds(self) -> float:
        """Seconds per patch of the whole reconstruction (all DDIM passes), on the engine that
        will run it."""
        p, n = self.config.patch, self.device.patch_batch
        x = torch.zeros(n, self.channels, p, p)
        one = seconds_per_call(lambda: self.backend.forward(x, self.config.t_recon))
        return len(self.config.timesteps) * one / n

    @classmethod
    def fit(
        cls,
        data: TrainData,
        settings: TrainSettings,
        device: DeviceInfo,
        deadline: float,
        console: Console | None = None,
    ) -> DdpmReconScorer:
        torch.manual_seed(settings.seed)
        config = DdpmReconConfig.from_settings(settings)
        scorer = cls(UNet(unet_config(settings, data.channels)), config, device)
        per_patch = scorer.patch_seconds()
        reserve = calibration_reserve(data.calibration, config.patch, config.stride, per_patch)
        ema, stats = train_eps_model(
            data, settings, scorer.diffusion, device, deadline - reserve, console
        )
        scorer.model = prepare_model(ema, device)
        cal_start = time.perf_counter()
        scorer.calibrate(data.calibration)
        scorer.metadata["training"] = {
            **stats.to_dict(),
            "calibration_seconds": round(time.perf_counter() - cal_start, 2),
            "calibration_reserve_seconds": round(reserve, 2),
            "ms_per_patch": round(per_patch * 1000, 3),
            "device": str(device.device),
            "source": data.source,
            "n_train_images": len(data.train),
            "n_calibration_images": len(data.calibration),
            "calibration_images": data.calibration_names,
            "settings": {k: v for k, v in asdict(settings).items() if k != "show_progress"},
            "parameters": count_parameters(scorer.model),
        }
        return scorer

    def to_artifact(self) -> Artifact:
        if not math.isfinite(self.threshold):
            raise RuntimeError("cannot save an uncalibrated ddpm-recon scorer")
        c = self.config
        config = {
            "channels": self.channels,
            "architecture": self.model.config.to_dict(),
            "schedule": self.diffusion.config.to_dict(),
            "ddpm_recon": c.to_dict(),
            "calibration": self.calibration_record(),
            **self.metadata,
        }
        state = {f"unet.{k}": v for k, v in self.model.state_dict().items()}
        return Artifact(self.name, state, config, self._version)

    @classmethod
    def from_artifact(cls, artifact: Artifact, device: DeviceInfo, where: Path) -> DdpmReconScorer:
        doc = artifact.config
        cfg_path, weights = where / "config.json", where / "model.safetensors"
        try:
            unet_cfg = UNetConfig.from_dict(require(doc, "architecture", dict, cfg_path))
            schedule = ScheduleConfig(**require(doc, "schedule", dict, cfg_path))
            config = DdpmReconConfig.from_dict(require(doc, "ddpm_recon", dict, cfg_path))
        except (TypeError, ValueError, KeyError) as e:
            raise ArtifactError(cfg_path, f"invalid settings ({e})") from e
        model = load_weights(UNet(unet_cfg), artifact.tensors, weights, "unet.")
        cal = require(doc, "calibration", dict, cfg_path)
        thr, pix = read_thresholds(cal, cfg_path)
        meta = {k: doc[k] for k in ("training",) if k in doc}
        scorer = cls(model, config, device, thr, pix, meta, schedule)  # type: ignore[arg-type]
        scorer.restore_calibration(cal, cfg_path)
        scorer._version = artifact.model_version
        return scorer
