"""Patch PCA with Hotelling T² and the residual Q statistic: the classic SPC image baseline.

Normal training patches give the mean and the principal basis (enough components for a share of
the variance). Per patch: T² = Σ score²/λ inside the model, Q = ‖residual‖² outside it. Limits
are high quantiles of both on held-out normal patches; the patch statistic is the larger of
T²/limit and Q/limit (> 1 = out of control), stitched into the pixel map. Image score = mean
of the top-k map pixels (k = 1: the max). Image threshold: quantile of held-out normal images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from rich.console import Console

from scorer.artifact import Artifact, ArtifactError, require
from scorer.calibration import (
    DEFAULT_CONTAMINATION,
    DEFAULT_PIXEL_QUANTILE,
    TopKMapScoring,
    read_thresholds,
)
from scorer.device import DeviceInfo
from scorer.features import FeatureConfig
from scorer.methods import TrainData, TrainSettings
from scorer.options import MethodConfig
from scorer.patchnet import cut_patches, map_patches


@dataclass(frozen=True)
class PcaConfig(MethodConfig):
    """Patch geometry, model size and calibration settings (stored in the artifact)."""

    METHOD: ClassVar[str] = "PCA"

    patch: int = 16  # (ours) 256-dim patches: a well-conditioned covariance from few images
    stride: int = 8
    variance: float = 0.95  # share of variance the kept components explain
    max_components: int = 64
    max_train_patches: int = 100_000
    limit_quantile: float = 0.999  # T² and Q limits on held-out normal patches
    top_k: int = 1
    seed: int = 0
    contamination: float = DEFAULT_CONTAMINATION
    pixel_quantile: float = DEFAULT_PIXEL_QUANTILE
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        if not 0 < self.stride <= self.patch:
            raise ValueError(f"stride must be in 1..patch ({self.patch}), got {self.stride}")
        if not 0.0 < self.variance <= 1.0:
            raise ValueError(f"variance must be in (0, 1], got {self.variance}")
        if self.max_components < 1 or self.top_k < 1:
            raise ValueError("max_components and top_k must be ≥ 1")

    @classmethod
    def from_settings(cls, s: TrainSettings) -> PcaConfig:
        """Own patch geometry (the U-Net's 64² patches are too many dimensions for PCA)."""
        own, nested = cls.split_options(s.extra)
        own.setdefault("seed", s.seed)
        return cls(features=FeatureConfig(**nested["features"]), **own)


def flat_patches(images: Sequence[np.ndarray], channels: int, config: PcaConfig) -> torch.Tensor:
    """Every grid patch of every image as a row (N, C·p²)."""
    groups = cut_patches(images, channels, config.patch, config.stride)
    return torch.cat([g.patches.reshape(-1, g.patches[0, 0].numel()) for g in groups])


@dataclass
class PcaModel:
    """Mean, basis (D×k) and component variances; everything the statistics need."""

    mean: torch.Tensor
    basis: torch.Tensor
    variances: torch.Tensor
    t2_limit: float = math.inf
    q_limit: float = math.inf

    def statistics(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T², Q) of flattened patches (N, D)."""
        centred = patches.double() - self.mean
        scores = centred @ self.basis
        t2 = (scores.square() / self.variances).sum(dim=1)
        q = (centred - scores @ self.basis.T).square().sum(dim=1)
        return t2, q

    def patch_statistic(self, patches: torch.Tensor) -> torch.Tensor:
        t2, q = self.statistics(patches)
        return torch.maximum(t2 / self.t2_limit, q / self.q_limit)


def fit_pca(patches: torch.Tensor, variance: float, max_components: int) -> PcaModel:
    """Eigen-decomposition of the patch covariance (D×D, D = C·p²: small)."""
    x = patches.double()
    mean = x.mean(dim=0)
    cov = torch.cov((x - mean).T)
    vals, vecs = torch.linalg.eigh(cov)
    vals, vecs = vals.flip(0).clamp(min=0), vecs.flip(1)
    share = torch.cumsum(vals, 0) / vals.sum().clamp(min=1e-12)
    k = int(torch.searchsorted(share, torch.tensor(variance, dtype=share.dtype))) + 1
    k = max(1, min(k, max_components, len(vals)))
    floor = max(float(vals[0]) * 1e-9, 1e-12)
    return PcaModel(mean, vecs[:, :k].contiguous(), vals[:k].clamp(min=floor))


class PcaScorer(TopKMapScoring):
    """Patch PCA + T²/Q limits + image threshold, all from normal images."""

    name: ClassVar[str] = "pca"

    def __init__(
        self,
        model: PcaModel,
        config: PcaConfig,
        channels: int,
        threshold: float = math.inf,
        pixel_threshold: float = math.inf,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self._channels = channels
        self.threshold = threshold
        self.pixel_threshold = pixel_threshold
        self.calibration_scores: list[float] = []
        self.calibration_areas: list[int] = []
        self.metadata: dict[str, Any] = metadata or {}
        self._version = ""

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def model_version(self) -> str:
        return self._version

    def _stat_patches(self, x: torch.Tensor, _groups: object) -> torch.Tensor:
        s = self.model.patch_statistic(x.reshape(x.shape[0], -1)).float()
        return s[:, None, None, None].expand(-1, 1, *x.shape[-2:])

    def anomaly_maps(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-patch max(T²/limit, Q/limit), window-weighted where patches overlap; H×W."""
        c = self.config
        groups = cut_patches(images, self.channels, c.patch, c.stride)
        return [m[0] for m in map_patches(groups, len(images), self._stat_patches)]

    def calibrate(self, images: Sequence[np.ndarray]) -> None:
        """T²/Q limits on held-out normal patches, then image and pixel thresholds."""
        t2, q = self.model.statistics(flat_patches(images, self.channels, self.config))
        qn = self.config.limit_quantile
        self.model.t2_limit = max(float(torch.quantile(t2, qn)), 1e-12)
        self.model.q_limit = max(float(torch.quantile(q, qn)), 1e-12)
        maps = self.anomaly_maps(images)
        scores = self._scores(maps)
        self.fit_thresholds(scores, maps)

    @classmethod
    def fit(
        cls,
        data: TrainData,
        settings: TrainSettings,
        device: DeviceInfo,
        deadline: float,
        console: Console | None = None,
    ) -> PcaScorer:
        """Closed form, far inside any budget; ``device`` is unused (CPU linear algebra)."""
        start = time.perf_counter()
        config = PcaConfig.from_settings(settings)
        patches = flat_patches(data.train, data.channels, config)
        if len(patches) > config.max_train_patches:
            g = torch.Generator().manual_seed(config.seed)
            patches = patches[torch.randperm(len(patches), generator=g)[: config.max_train_patches]]
        scorer = cls(
            fit_pca(patches, config.variance, config.max_components), config, data.channels
        )
        scorer.calibrate(data.calibration)
        scorer.metadata["training"] = {
            "seconds": round(time.perf_counter() - start, 2),
            "train_patches": len(patches),
            "components": int(scorer.model.basis.shape[1]),
            "dimensions": int(scorer.model.basis.shape[0]),
            "t2_limit": scorer.model.t2_limit,
            "q_limit": scorer.model.q_limit,
            "source": data.source,
            "n_train_images": len(data.train),
            "n_calibration_images": len(data.calibration),
            "calibration_images": data.calibration_names,
        }
        return scorer

    def to_artifact(self) -> Artifact:
        if not math.isfinite(self.threshold):
            raise RuntimeError("cannot save an uncalibrated PCA scorer")
        m, c = self.model, self.config
        state = {"pca.mean": m.mean, "pca.basis": m.basis, "pca.variances": m.variances}
        config = {
            "channels": self.channels,
            "pca": c.to_dict(),
            "limits": {"t2": m.t2_limit, "q": m.q_limit},
            "calibration": self.calibration_record(),
            **self.metadata,
        }
        return Artifact(self.name, state, config, self._version)

    @classmethod
    def from_artifact(cls, artifact: Artifact, device: DeviceInfo, where: Path) -> PcaScorer:
        doc = artifact.config
        cfg_path, weights = where / "config.json", where / "model.safetensors"
        try:
            config = PcaConfig.from_dict(require(doc, "pca", dict, cfg_path))
        except (TypeError, ValueError, KeyError) as e:
            raise ArtifactError(cfg_path, f"invalid settings ({e})") from e
        channels = require(doc, "channels", int, cfg_path)
        t = artifact.tensors
        for key in ("pca.mean", "pca.basis", "pca.variances"):
            if key not in t:
                raise ArtifactError(weights, f"missing tensor {key!r}")
        mean, basis, var = t["pca.mean"], t["pca.basis"], t["pca.variances"]
        d = channels * config.patch**2
        if (
            mean.shape != (d,)
            or basis.ndim != 2
            or basis.shape[0] != d
            or var.shape != (basis.shape[1],)
        ):
            raise ArtifactError(weights, f"PCA tensors do not fit {d}-dim patches")
        if not all(torch.isfinite(v).all() for v in (mean, basis, var)) or (var <= 0).any():
            raise ArtifactError(weights, "PCA tensors contain NaN, infinity or variances ≤ 0")
        limits = require(doc, "limits", dict, cfg_path)
        t2_lim = float(require(limits, "t2", (int, float), cfg_path))
        q_lim = float(require(limits, "q", (int, float), cfg_path))
        model = PcaModel(mean.double(), basis.double(), var.double(), t2_lim, q_lim)
        cal = require(doc, "calibration", dict, cfg_path)
        thr, pix = read_thresholds(cal, cfg_path)
        meta = {k: doc[k] for k in ("training",) if k in doc}
        scorer = cls(model, config, channels, thr, pix, meta)
        scorer.restore_calibration(cal, cfg_path)
        scorer._version = artifact.model_version
        return scorer
