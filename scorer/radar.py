"""RADAR: reconstruction-free anomaly detection from one forward diffusion step per patch.

patches → x_t* with position-seeded ε → ε̂ = ε_θ(x_t*, t*) → stitch ε̂ − ε → L2 over channels →
whitened by its normal level for the local content (ours, scorer.whitening) → blur + Sobel →
(f1, f2) → one-sided tail score (ours, scorer.tail; the paper's Isolation Forest with
detector="iforest"). The pixel map is the smoothed energy of the low-passed signed residual
(ours; the paper's smoothed Sobel map with pixel_map="sobel").
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from rich.console import Console

from scorer.artifact import Artifact, ArtifactError, check_state_dict, require
from scorer.backends import EXPORT_FILE, EngineMixin
from scorer.calibration import map_features, pixel_calibration, read_areas, to_results
from scorer.data import to_model_tensor
from scorer.device import DeviceInfo
from scorer.diffusion import GaussianDiffusion, ScheduleConfig
from scorer.features import (
    FeatureConfig,
    ImageFeatures,
    image_features,
    lowpass_pixel_maps,
    sobel_pixel_maps,
)
from scorer.isoforest import IsoForestConfig, IsoForestDetector
from scorer.methods import ScoreResult, TrainData, TrainSettings
from scorer.options import MethodConfig
from scorer.patches import PatchGrid, pad_to_patch, position_noise
from scorer.patchnet import seconds_per_call
from scorer.tail import TailConfig, TailDetector
from scorer.texture import TextureCalibration, TextureConfig, bank_sample, descriptors
from scorer.training_loop import PatchSampler, train_diffusion
from scorer.unet import UNet, UNetConfig, count_parameters
from scorer.whitening import ResidualWhitening, WhiteningConfig, content

log = logging.getLogger(__name__)

__all__ = ["RadarConfig", "RadarScorer", "ScoreResult"]


# f2's window for RADAR. 32 at 256² (development data, seed 0, 2 draws, Isolation Forest): FDM
# image AUROC 0.917 (w 16) → 0.955 (24) → 0.981 (32) → 0.966 (48), the gain in the large
# defects (burn 0.85 → 0.98, layer shift 0.86 → 0.99, warping 0.55 → 0.87); LPBF powder ≥ 0.99
# at every w. The other methods keep 16 (their scores were measured with it).
RADAR_WINDOW = 32
PIXEL_MAPS = ("lowpass", "sobel", "texture")
DETECTORS = ("tail", "iforest")
# What the detector's two features are: the residual's (f1, f2) (the paper's), the two-sided
# texture evidence map's (RMS, hottest window) (scorer.texture), or one of each (f2 of both).
IMAGE_FEATURES = ("residual", "texture", "both")
TEXTURE_BANK = "texture.bank"  # the texture memory bank's tensor in model.safetensors
TEXTURE_COST = 1.0  # the texture evidence's calibration time over the network's (profiled)
MIN_TRAIN_SHARE = 0.25  # of the time left, kept for training whatever calibration needs


class Detector(Protocol):
    """What RADAR needs from its image-level detector (both rebuild from stored features)."""

    features: np.ndarray
    calibration_scores: np.ndarray
    threshold: float

    def score(self, features: np.ndarray) -> np.ndarray: ...

    def decide(self, scores: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RadarConfig(MethodConfig):
    """Inference and calibration settings of RADAR (stored in the artifact)."""

    METHOD: ClassVar[str] = "RADAR"
    NESTED: ClassVar[dict[str, type]] = {
        "features": FeatureConfig,
        "iforest": IsoForestConfig,
        "tail": TailConfig,
        "whitening": WhiteningConfig,
        "texture": TextureConfig,
    }

    patch: int = 64
    stride: int = 48
    t_star: int = 100
    # K noise draws averaged per patch: the network's random error averages out, a defect's
    # systematic one stays. Development data (seed 0, t = 100), image AUROC / F1, 1 → 2 draws:
    # FDM 0.878 / 0.730 → 0.897 / 0.848, LPBF powder 0.994 / 0.962 → 0.995 / 0.933; it doubles
    # the network time (p95 at 256² still well under the 0.5 s aim, see bench.bench_scorer).
    draws: int = 2
    noise_seed: int = 0
    pixel_quantile: float = 0.999
    criterion: str = "normal_peak"
    # Pixel map: "lowpass" (ours, scorer.features.lowpass_pixel_maps) or "sobel" (the paper's
    # smoothed Sobel map E). Measured on development data (seed 0, t = 100, 2 draws), pixel
    # AUROC / PRO, Sobel → lowpass: FDM 0.779 / 0.744 → 0.809 / 0.764, LPBF powder
    # 0.695 / 0.732 → 0.819 / 0.727 (short feed 0.48 → 0.70). The plain residual energy did
    # better on FDM (0.90) but failed on powder (0.46): a smoother-than-normal bed leaves *less*
    # residual there; blurring more before squaring did better on powder (0.87), worse on FDM.
    pixel_map: str = "texture"  # "lowpass" was the default before issue 23
    pixel_sigma: float = 8.0  # smoothing of the low-pass energy
    # Image score from (f1, f2): "tail" (ours, scorer.tail: one-sided robust distance above
    # normal) or "iforest" (the paper's Isolation Forest). Development data (seed 0, 2 draws,
    # w = 32), image AUROC / F1, forest → tail: FDM 0.981 / 0.83 → 0.964 / 0.84, LPBF powder
    # 0.988 / 0.00 → 1.000 / 0.99 (the forest's threshold sat on its saturated top scores).
    detector: str = "tail"
    features: FeatureConfig = field(default_factory=lambda: FeatureConfig(window=RADAR_WINDOW))
    iforest: IsoForestConfig = field(default_factory=IsoForestConfig)
    tail: TailConfig = field(default_factory=TailConfig)
    whitening: WhiteningConfig = field(default_factory=WhiteningConfig)
    # Two-sided texture evidence (ours, scorer.texture; issue 23): the pixel map is the distance
    # of each pixel's local statistics (residual energy, input gradient energy and direction,
    # brightness, contrast) to the nearest of the calibration images', and the detector sees
    # the residual's f2 beside the evidence map's hottest window. The one-sided residual map
    # ranked a smooth defect in real gravel below normal pixels (pixel AUROC 0.45); artifacts
    # from before keep "residual" (see from_artifact). Measured in bench.real_accuracy.
    image_features: str = "both"
    texture: TextureConfig = field(default_factory=TextureConfig)

    @property
    def uses_texture(self) -> bool:
        return self.pixel_map == "texture" or self.image_features != "residual"

    def __post_init__(self) -> None:
        if not 0 < self.stride <= self.patch:
            raise ValueError(f"stride must be in 1..patch ({self.patch}), got {self.stride}")
        if self.draws < 1:
            raise ValueError(f"draws must be ≥ 1, got {self.draws}")
        if not 0.0 < self.pixel_quantile < 1.0:
            raise ValueError(f"pixel_quantile must be in (0, 1), got {self.pixel_quantile}")
        if self.criterion not in T_CRITERIA:
            raise ValueError(f"criterion must be one of {sorted(T_CRITERIA)}")
        if self.pixel_map not in PIXEL_MAPS:
            raise ValueError(f"pixel_map must be one of {PIXEL_MAPS}, got {self.pixel_map!r}")
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.image_features not in IMAGE_FEATURES:
            raise ValueError(f"image_features must be one of {IMAGE_FEATURES}")
        if self.pixel_sigma <= 0:
            raise ValueError(f"pixel_sigma must be > 0, got {self.pixel_sigma}")

    def make_detector(self, features: np.ndarray) -> Detector:
        """The image-level detector fitted on calibration (f1, f2) rows."""
        if self.detector == "iforest":
            return IsoForestDetector(features, self.iforest)
        return TailDetector(features, self.tail)

    @classmethod
    def from_settings(cls, s: TrainSettings) -> RadarConfig:
        """Common settings plus RADAR-specific overrides from ``settings.extra``."""
        own, nested = cls.split_options(s.extra)
        return cls(
            patch=s.patch,
            stride=s.stride,
            noise_seed=s.seed,
            features=FeatureConfig(**{"window": RADAR_WINDOW, **nested["features"]}),
            iforest=IsoForestConfig(random_state=s.seed, **nested["iforest"]),
            tail=TailConfig(random_state=s.seed, **nested["tail"]),
            whitening=WhiteningConfig(**nested["whitening"]),
            texture=TextureConfig(**nested["texture"]),
            **own,
        )


def _spread(values: np.ndarray) -> float:
    """Robust relative spread: 1.4826·MAD of log values (≈ σ of log for a normal cluster)."""
    logs = np.log(np.maximum(values, 1e-12))
    return float(1.4826 * np.median(np.abs(logs - np.median(logs))))


def _excess_kurtosis(x: np.ndarray) -> float:
    x = x.astype(np.float64).ravel()
    x = x - x.mean()
    var = float(np.mean(x**2))
    return float(np.mean(x**4) / var**2 - 3.0) if var > 0 else float("nan")


# Criteria for t*: each maps one candidate's normal-only measurements to a cost (lower wins).
T_CRITERIA = {
    # How far a localized disturbance must rise: normal maps whose hottest window (f2) barely
    # exceeds their global level (f1), and whose f2 varies little between images, leave the
    # smallest margin for an anomaly to clear. i.i.d. Gaussian residuals — the paper's Fig. 4
    # picture of a well-explained normal patch — minimise log(f2/f1). Uses no anomalies.
    "normal_peak": lambda m: m["log_peak_ratio"] + m["f2_log_spread"],
    # Tightest normal cluster in log-feature space: an anomaly that scales f2 by a factor is
    # then the most standard deviations away. Uses no anomalies.
    "normal_spread": lambda m: m["f2_log_spread"] + 0.5 * m["f1_log_spread"],
    # The paper's premise (Fig. 4): the normal noise residual should look Gaussian.
    "gaussianity": lambda m: abs(m["residual_excess_kurtosis"]),
}


class RadarScorer(EngineMixin):
    """The RADAR method: trained ε_θ + calibration (t*, Isolation Forest, pixel threshold)."""

    name: ClassVar[str] = "radar"

    def __init__(
        self,
        model: UNet,
        config: RadarConfig,
        device: DeviceInfo,
        detector: Detector | None = None,
        pixel_threshold: float = math.inf,
        metadata: dict[str, Any] | None = None,
        schedule: ScheduleConfig | None = None,
        whitening: ResidualWhitening | None = None,
        texture: TextureCalibration | None = None,
    ) -> None:
        self.device = device
        self.whitening = whitening
        self.texture = texture
        self.config = config
        self.diffusion = GaussianDiffusion(schedule)
        self.detector = detector
        self.pixel_threshold = pixel_threshold
        self.calibration_areas: list[int] = []  # see scorer.calibration.cluster_areas
        self.metadata: dict[str, Any] = metadata or {}
        self._version = ""
        self.export_file: Path | None = None  # an ONNX export of the weights (backends)
        self.set_model(model)

    def set_model(self, model: UNet) -> None:
        model = model.to(self.device.device).eval().requires_grad_(False)
        if self.device.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model

    @property
    def channels(self) -> int:
        return self.model.config.in_channels

    @property
    def model_version(self) -> str:
        return self._version

    # ---- network pass -------------------------------------------------------------------------

    def _forward(self, xt: torch.Tensor, t: int) -> torch.Tensor:
        """ε̂ for a stack of noisy patches (all images and all K draws of a batch at once)."""
        return self.backend.forward(xt, t)

    def residual_maps(self, images: Sequence[np.ndarray], t: int | None = None) -> list[np.ndarray]:
        """Stitched ε̂ − ε per image, (C, H, W) float32; all patches of all images in one pass."""
        t = self.config.t_star if t is None else t
        c, p, k = self.channels, self.config.patch, self.config.draws
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(np.asarray(img).shape[:2], []).append(i)
        plans, xts, epss = [], [], []
        for idxs in groups.values():
            x = to_model_tensor([images[i] for i in idxs], c)
            x, (h, w) = pad_to_patch(x, p)
            grid = PatchGrid(x.shape[-2], x.shape[-1], p, self.config.stride)
            eps = position_noise(grid, c, k, self.config.noise_seed)  # (K, N, C, p, p)
            eps = eps[:, None].expand(k, len(idxs), *eps.shape[1:])  # (K, B, N, C, p, p)
            xt = self.diffusion.q_sample(grid.extract(x)[None].expand_as(eps), t, eps)
            plans.append((idxs, grid, (h, w), eps.shape))
            xts.append(xt.reshape(-1, c, p, p))
            epss.append(eps.reshape(-1, c, p, p))
        if not plans:
            return []
        eps_all = torch.cat(epss)
        resid = self._forward(torch.cat(xts), t) - eps_all
        out: list[np.ndarray] = [np.empty(0)] * len(images)
        start = 0
        for idxs, grid, (h, w), shape in plans:
            n = math.prod(shape[:3])
            r = resid[start : start + n].reshape(shape).mean(dim=0)  # average the K draws
            start += n
            maps = grid.stitch(r)[:, :, :h, :w].numpy()
            for j, i in enumerate(idxs):
                out[i] = maps[j]
        return out

    def _content(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        cfg = self.config.whitening
        out = []
        for img in images:
            edge, level = content(to_model_tensor([img], self.channels), cfg)
            out.append((edge[0], level[0]))
        return out

    def _grays(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Model-scale grey inputs (H, W), what the texture statistics look at."""
        return [to_model_tensor([img], self.channels)[0].mean(dim=0).numpy() for img in images]

    def _features(
        self,
        residuals: Sequence[np.ndarray],
        images: Sequence[np.ndarray],
        whitening: ResidualWhitening | None,
        texture: TextureCalibration | None = None,
        evidence: Sequence[np.ndarray] | None = None,
    ) -> list[ImageFeatures]:
        """(f1, f2) and the pixel map of each image, as the config says: from the residual
        (whitened when there is a whitening; its pixel map always from the raw residual, see
        scorer.whitening) and/or from the two-sided texture evidence map (scorer.texture;
        ``evidence`` when it is already made: the calibration images' leave-one-out maps)."""
        cfg = self.config
        energies = [np.sum(r * r, axis=0) for r in residuals]
        raw = [np.sqrt(e) for e in energies]
        if whitening is None:
            feature_maps = raw
        else:
            feature_maps = [
                np.sqrt(e / whitening.expected(edge, level))
                for e, (edge, level) in zip(energies, self._content(images), strict=True)
            ]
        if cfg.pixel_map == "lowpass":
            pixel_maps = lowpass_pixel_maps(residuals, cfg.features, cfg.pixel_sigma)
        elif whitening is not None:
            pixel_maps = sobel_pixel_maps(raw, cfg.features)
        else:
            pixel_maps = None  # the Sobel map of the feature maps themselves
        feats = image_features(feature_maps, cfg.features, pixel_maps)
        if not cfg.uses_texture:
            return feats
        if evidence is None:
            if texture is None:
                raise RuntimeError("the texture evidence needs a texture calibration")
            evidence = texture.evidence(self._texture_stats(residuals, images))
        tex = map_features(evidence, cfg.texture.texture_window)
        out = []
        for f, e, (t1, t2) in zip(feats, evidence, tex, strict=True):
            f1, f2 = {"residual": (f.f1, f.f2), "texture": (t1, t2), "both": (f.f2, t2)}[
                cfg.image_features
            ]
            out.append(ImageFeatures(f1, f2, e if cfg.pixel_map == "texture" else f.pixel_map))
        return out

    def _texture_stats(
        self, residuals: Sequence[np.ndarray], images: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        return descriptors(residuals, self._grays(images), self.config.texture)

    def image_features(
        self, images: Sequence[np.ndarray], t: int | None = None
    ) -> list[ImageFeatures]:
        return self._features(self.residual_maps(images, t), images, self.whitening, self.texture)

    # ---- scoring ------------------------------------------------------------------------------

    def score_batch(self, images: Sequence[np.ndarray]) -> list[ScoreResult]:
        if self.detector is None:
            raise RuntimeError("RADAR scorer is not calibrated")
        if not images:
            return []
        start = time.perf_counter()
        return self.score_residuals(self.residual_maps(images), images, start)

    def score_residuals(
        self,
        residuals: Sequence[np.ndarray],
        images: Sequence[np.ndarray],
        start: float | None = None,
    ) -> list[ScoreResult]:
        """Score images whose residual maps at t* are already made (what score_batch does after
        the network; also lets post-processing be compared on one network pass)."""
        if self.detector is None:
            raise RuntimeError("RADAR scorer is not calibrated")
        start = time.perf_counter() if start is None else start
        feats = self._features(residuals, images, self.whitening, self.texture)
        matrix = np.array([[f.f1, f.f2] for f in feats])
        scores = self.detector.score(matrix)
        flags = self.detector.decide(scores)
        return to_results(
            [f.pixel_map for f in feats],
            scores,
            flags,
            [(f.f1, f.f2) for f in feats],
            self.pixel_threshold,
            self.config.features,
            start,
        )

    # ---- calibration --------------------------------------------------------------------------

    def _fit_whitening(
        self, energies: Sequence[np.ndarray], images: Sequence[np.ndarray]
    ) -> ResidualWhitening | None:
        if not self.config.whitening.whiten:
            return None
        ctx = self._content(images)
        flat = lambda xs: np.concatenate([x.ravel() for x in xs])  # noqa: E731
        return ResidualWhitening.fit(
            flat([c[0] for c in ctx]),
            flat([c[1] for c in ctx]),
            flat(energies),
            self.config.whitening,
        )

    def calibrate(
        self,
        images: Sequence[np.ndarray],
        candidates: Sequence[int],
        batch: int = 8,
        bank_images: Sequence[np.ndarray] = (),
    ) -> None:
        """Choose t* on normal hold-out images only, then fit the whitening, the forest and the
        pixel threshold at t*. ``bank_images`` (normal training images) make the texture
        memory bank (see TextureCalibration.fit); thresholds still come from ``images``."""
        if len(images) < 2:
            raise ValueError("calibration needs at least 2 held-out normal images")
        cost = T_CRITERIA[self.config.criterion]
        measured: dict[int, dict[str, float]] = {}
        per_t: dict[int, tuple[list[ImageFeatures], ResidualWhitening | None]] = {}
        for t in candidates:
            start = time.perf_counter()
            residuals = self._residuals(images, t, batch)
            kurt = [_excess_kurtosis(r) for r in residuals]
            whitening = self._fit_whitening([np.sum(r * r, axis=0) for r in residuals], images)
            bank_res = self._residuals(bank_images, t, batch) if self.config.uses_texture else []
            texture, evidence = self._fit_texture(residuals, images, bank_res, bank_images)
            feats = self._features(residuals, images, whitening, texture, evidence)
            f = np.array([[x.f1, x.f2] for x in feats])
            m = {
                "f1_mean": float(f[:, 0].mean()),
                "f2_mean": float(f[:, 1].mean()),
                "f1_log_spread": _spread(f[:, 0]),
                "f2_log_spread": _spread(f[:, 1]),
                "log_peak_ratio": float(np.mean(np.log(f[:, 1] / np.maximum(f[:, 0], 1e-12)))),
                "residual_excess_kurtosis": float(np.mean(kurt)),
                "seconds": round(time.perf_counter() - start, 3),
            }
            m["cost"] = float(cost(m))
            measured[t], per_t[t] = m, (feats, whitening, texture)
        t_star = min(measured, key=lambda t: measured[t]["cost"])
        self.config = replace(self.config, t_star=t_star)
        feats, self.whitening, self.texture = per_t[t_star]
        self._fit_thresholds(feats)
        self.metadata["t_selection"] = {
            "criterion": self.config.criterion,
            "candidates": list(candidates),
            "chosen": t_star,
            "measurements": {str(t): m for t, m in measured.items()},
            "images": len(images),
        }

    def _residuals(self, images: Sequence[np.ndarray], t: int, batch: int) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for i in range(0, len(images), batch):
            out += self.residual_maps(images[i : i + batch], t)
        return out

    def _fit_texture(
        self,
        residuals: Sequence[np.ndarray],
        images: Sequence[np.ndarray],
        bank_residuals: Sequence[np.ndarray] = (),
        bank_images: Sequence[np.ndarray] = (),
    ) -> tuple[TextureCalibration | None, list[np.ndarray] | None]:
        """The texture calibration and the held-out images' own evidence (against a bank of
        training images' descriptors when given, else leave one image out)."""
        if not self.config.uses_texture:
            return None, None
        stats = self._texture_stats(residuals, images)
        bank = self._texture_stats(bank_residuals, bank_images) if len(bank_images) else []
        return TextureCalibration.fit(stats, self.config.texture, self.config.noise_seed, bank)

    def _fit_thresholds(self, feats: Sequence[ImageFeatures]) -> None:
        matrix = np.array([[x.f1, x.f2] for x in feats])
        self.detector = self.config.make_detector(matrix)
        maps = [x.pixel_map for x in feats]
        self.pixel_threshold, self.calibration_areas = pixel_calibration(
            maps, self.config.pixel_quantile, self.config.features
        )

    def calibrate_residuals(
        self,
        residuals: Sequence[np.ndarray],
        images: Sequence[np.ndarray],
        bank_residuals: Sequence[np.ndarray] = (),
        bank_images: Sequence[np.ndarray] = (),
    ) -> None:
        """Re-fit the post-processing (whitening, texture tables, detector, pixel threshold)
        at the current t* from held-out normal images' residual maps (and the texture bank's
        training images'), without the network: post-processing choices are compared on one
        network pass."""
        energies = [np.sum(r * r, axis=0) for r in residuals]
        self.whitening = self._fit_whitening(energies, images)
        self.texture, evidence = self._fit_texture(residuals, images, bank_residuals, bank_images)
        self._fit_thresholds(
            self._features(residuals, images, self.whitening, self.texture, evidence)
        )

    # ---- training -----------------------------------------------------------------------------

    def patch_seconds(self) -> float:
        """Measured seconds per patch of the forward pass (for budgeting calibration)."""
        p, n = self.config.patch, self.device.patch_batch
        x = torch.zeros(n, self.channels, p, p)
        return seconds_per_call(lambda: self._forward(x, self.config.t_star)) / n

    @classmethod
    def fit(
        cls,
        data: TrainData,
        settings: TrainSettings,
        device: DeviceInfo,
        deadline: float,
        console: Console | None = None,
    ) -> RadarScorer:
        torch.manual_seed(settings.seed)
        config = RadarConfig.from_settings(settings)
        if settings.train_t_max is None:
            # Scoring queries only the candidate steps: spend the training steps on t ≤ 2·max.
            settings = replace(settings, train_t_max=2 * max(settings.t_candidates))
        unet_cfg = UNetConfig(
            in_channels=data.channels,
            base_width=settings.width,
            channel_mults=tuple(settings.channel_mults),
            attention_resolutions=tuple(settings.attention_resolutions),
            patch_size=settings.patch,
        )
        model = UNet(unet_cfg)
        scorer = cls(model, config, device)
        # Reserve wall-clock time for calibration so the budget covers the whole command.
        h, w = np.asarray(data.calibration[0]).shape[:2]
        grid = PatchGrid(max(h, config.patch), max(w, config.patch), config.patch, config.stride)
        per_patch = scorer.patch_seconds()
        bank = (
            bank_sample(data.train, config.texture.texture_bank_images)
            if config.uses_texture
            else []
        )
        n_images = len(data.calibration) + len(bank)
        n_fwd = n_images * grid.count * config.draws * len(settings.t_candidates)
        # The texture evidence map (descriptors and their nearest normal neighbours) costs about
        # as much as the network on CPU (profiled at 128²: 125 ms against 143 ms a layer);
        # without it in the reserve, trainings ran 0.4 to 2.3 minutes over a 10-minute budget.
        post = TEXTURE_COST if config.uses_texture else 0.0
        reserve = 1.3 * n_fwd * per_patch * (1.0 + post) + 1.0
        # Training keeps at least MIN_TRAIN_SHARE of the time left: on a loaded machine the
        # measured forward pass can make the reserve swallow the whole budget (0 steps).
        left = deadline - time.monotonic()
        if reserve > (1 - MIN_TRAIN_SHARE) * left:
            log.warning(
                "RADAR: calibration would take %.0f s of the %.0f s left; training keeps %.0f %%"
                " of the budget and the command may run over it",
                reserve, left, 100 * MIN_TRAIN_SHARE,
            )  # fmt: skip
            reserve = max((1 - MIN_TRAIN_SHARE) * left, 0.0)
        sampler = PatchSampler(
            data.train,
            data.channels,
            settings.patch,
            settings,
            torch.Generator().manual_seed(settings.seed),
        )
        train_model = UNet(unet_cfg)
        train_model.load_state_dict(model.state_dict())
        ema, stats = train_diffusion(
            train_model, scorer.diffusion, sampler, settings, device, deadline - reserve, console
        )
        scorer.set_model(ema)  # type: ignore[arg-type]
        cal_start = time.perf_counter()
        scorer.calibrate(data.calibration, settings.t_candidates, bank_images=bank)
        scorer.metadata["training"] = {
            **stats.to_dict(),
            "calibration_seconds": round(time.perf_counter() - cal_start, 2),
            "calibration_reserve_seconds": round(reserve, 2),
            "forward_ms_per_patch": round(per_patch * 1000, 3),
            "device": str(device.device),
            "source": data.source,
            "n_train_images": len(data.train),
            "n_calibration_images": len(data.calibration),
            "n_texture_bank_images": len(bank),
            "image_shape": list(np.asarray(data.train[0]).shape),
            "calibration_images": data.calibration_names,
            "settings": {k: v for k, v in asdict(settings).items() if k not in ("show_progress",)},
            "parameters": count_parameters(ema),
        }
        return scorer

    # ---- persistence --------------------------------------------------------------------------

    def to_artifact(self) -> Artifact:
        if self.detector is None:
            raise RuntimeError("cannot save an uncalibrated RADAR scorer")
        det = self.detector
        state = {f"unet.{k}": v for k, v in self.model.state_dict().items()}
        if self.texture is not None:
            state[TEXTURE_BANK] = torch.from_numpy(self.texture.bank.copy())
        config = {
            "channels": self.channels,
            "architecture": self.model.config.to_dict(),
            "schedule": self.diffusion.config.to_dict(),
            "radar": self.config.to_dict(),
            "calibration": {
                "features": det.features.tolist(),
                "in_sample_scores": det.score(det.features).tolist(),
                "image_scores": det.calibration_scores.tolist(),
                "threshold": det.threshold,
                "pixel_threshold": self.pixel_threshold,
                "pixel_quantile": self.config.pixel_quantile,
                "largest_areas": self.calibration_areas,
                "whitening": None if self.whitening is None else self.whitening.to_dict(),
                "texture": None if self.texture is None else self.texture.to_dict(),
            },
            **self.metadata,
        }
        return Artifact(self.name, state, config, self._version)

    @classmethod
    def from_artifact(cls, artifact: Artifact, device: DeviceInfo, where: Path) -> RadarScorer:
        doc = artifact.config
        cfg_path, weights = where / "config.json", where / "model.safetensors"
        try:
            unet_cfg = UNetConfig.from_dict(require(doc, "architecture", dict, cfg_path))
            schedule = ScheduleConfig(**require(doc, "schedule", dict, cfg_path))
            radar_doc = require(doc, "radar", dict, cfg_path)
            # Artifacts from before these settings stored no choice: they used the Sobel map
            # (their pixel threshold is on that scale) and a two-sided forest.
            iforest = {"one_sided": False, **radar_doc.get("iforest", {})}
            # ... and texture maps from before the inverted file searched their bank exactly.
            texture = {"texture_search": "exact", **radar_doc.get("texture", {})}
            old = {"pixel_map": "sobel", "detector": "iforest", "image_features": "residual"}
            config = RadarConfig.from_dict(
                {**old, **radar_doc, "iforest": iforest, "texture": texture}
            )
        except (TypeError, ValueError, KeyError) as e:
            raise ArtifactError(cfg_path, f"invalid settings ({e})") from e
        cal = require(doc, "calibration", dict, cfg_path)
        feats = np.asarray(require(cal, "features", list, cfg_path), dtype=np.float64)
        if feats.ndim != 2 or feats.shape[1] != 2 or len(feats) < 2:
            raise ArtifactError(cfg_path, f"calibration features have shape {feats.shape}")
        model = UNet(unet_cfg)
        state = check_state_dict(model.state_dict(), artifact.tensors, weights, prefix="unet.")
        if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            raise ArtifactError(weights, "weights contain NaN or infinity")
        model.load_state_dict(state)
        detector = config.make_detector(feats)
        stored = np.asarray(require(cal, "in_sample_scores", list, cfg_path), dtype=np.float64)
        threshold = require(cal, "threshold", (int, float), cfg_path)
        if (
            stored.shape != (len(feats),)
            or not np.allclose(detector.score(feats), stored, atol=1e-9)
            or not np.isclose(detector.threshold, threshold, atol=1e-9)
        ):
            raise ArtifactError(
                cfg_path,
                f"refitted {config.detector} detector does not reproduce the stored calibration "
                "scores (edited file, or a different scikit-learn for the forest)",
            )
        pixel_threshold = float(require(cal, "pixel_threshold", (int, float), cfg_path))
        whitening = None
        if cal.get("whitening") is not None:
            try:
                whitening = ResidualWhitening.from_dict(require(cal, "whitening", dict, cfg_path))
            except (TypeError, ValueError, KeyError) as e:
                raise ArtifactError(cfg_path, f"invalid whitening table ({e})") from e
        texture = None
        if config.uses_texture:
            if TEXTURE_BANK not in artifact.tensors:
                raise ArtifactError(weights, f"no {TEXTURE_BANK} tensor (texture memory bank)")
            try:
                texture = TextureCalibration.from_dict(
                    require(cal, "texture", dict, cfg_path),
                    artifact.tensors[TEXTURE_BANK].numpy(),
                    config.texture,
                )
            except (TypeError, ValueError, KeyError) as e:
                raise ArtifactError(cfg_path, f"invalid texture calibration ({e})") from e
        meta = {k: doc[k] for k in ("t_selection", "training") if k in doc}
        scorer = cls(
            model, config, device, detector, pixel_threshold, meta, schedule, whitening, texture
        )
        scorer.calibration_areas = read_areas(cal, cfg_path)
        scorer._version = artifact.model_version
        scorer.export_file = where / EXPORT_FILE
        return scorer
