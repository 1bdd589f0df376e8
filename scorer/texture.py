"""Two-sided local texture evidence: each pixel's local statistics against the calibration set.

RADAR's residual flags only *more* error than normal. A smooth defect (a smeared streak, a
missing patch of powder) replaces granular texture with something *easier* to denoise, so a
one-sided residual score sees it as more normal than normal: on a real gravel photograph the
low-pass residual map ranked defect pixels below normal ones (pixel AUROC 0.45, issue 23).

Here each pixel gets a descriptor of local statistics at several scales σ (Gaussian windows):

- ``residual``: log energy of the network's residual ε̂ − ε (lower in a smooth area, higher on
  a foreign object);
- ``gradient``: log energy of the input's own gradient and its orientation (the structure
  tensor's two anisotropy terms): the texture's energy and direction, where the residual is
  blind (a smoothed or missing area has almost no gradient);
- ``level``: local brightness minus the image's median, and log local variance (dark and
  bright spots, contrast).

Each dimension is centred and scaled by its robust spread over the held-out normal images, and
a pixel's evidence is the distance of its descriptor to the nearest descriptors of a memory
bank drawn from those images' pixels (k nearest, mean distance; found by an inverted file by
default, scorer.knn). Being far from every normal
pixel is evidence both ways: less texture than any normal place as much as more. Comparing
with whole normal descriptors rather than each statistic's marginal range keeps what is
normal *together* (a flat brick face next to a mortar line) from hiding a defect: the
marginals alone put brick defects below chance (pixel AUROC 0.30–0.50 on the tuning split).
A calibration image is scored against the bank without its own pixels (leave one image out),
so its evidence is what a fresh normal image would get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scorer.features import _pad, _same_shape_groups, _stack, gaussian_blur
from scorer.knn import SEARCHES, BankIndex

STATISTICS = ("residual", "gradient", "level")
_TINY = 1e-6
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


@dataclass(frozen=True)
class TextureConfig:
    """Settings of the texture evidence map (see the module docstring). Names are prefixed:
    ``--option`` keys are shared with RADAR's other nested settings."""

    texture_statistics: tuple[str, ...] = STATISTICS
    texture_scales: tuple[float, ...] = (2.0, 4.0, 8.0)  # σ of the local windows (pixels)
    texture_bank: int = 8192  # calibration descriptors kept in the memory bank
    texture_k: int = 3  # nearest bank descriptors averaged into a pixel's evidence
    # Descriptors queried every stride pixels, then interpolated. 4 costs 1.5-2.4x less
    # post-processing at 256² (a quarter of the distances) but is no default: image AUROC /
    # F1 / pixel AUROC, stride 2 → 4, seed-1 256² models (bench.texture_settings):
    # fdm_rectilinear 0.833/0.59/0.863 → 0.822/0.48/0.868 (0.831/0.71/0.868 with the grid
    # from row 0: the noise of a 40-image calibration, but not "not worse"), lpbf_powder
    # 0.989/0.92/0.827 → 0.990/0.93/0.830; tuning splits at 128², grid from row 0
    # (bench.real_accuracy): gravel 0.809/0.76/0.883 → 0.810/0.75/0.881, brick
    # 0.917/0.85/0.956 → 0.925/0.85/0.958.
    texture_stride: int = 2
    texture_map_sigma: float = 2.0  # smoothing of the evidence map
    texture_window: int = 16  # w of the hottest w×w window on the evidence map (image feature)
    # Training images whose descriptors make the bank (0: the held-out calibration images, each
    # scored without its own pixels; see fit). 64 is no default: it fixes the photographs'
    # calibration where the held-out crops overlap (grass: false-positive rate 0.95 → 0.35)
    # but a more varied bank also tolerates more, and a smooth patch in gravel falls towards
    # normal (its pixel AUROC in the tiny-model test 0.92/0.84/0.97/0.66 → 0.83/0.75/0.73/0.58).
    # Image AUROC / F1 / pixel AUROC, 0 → 64, tuning splits at 128² (bench.real_accuracy, one
    # network pass): gravel 0.810/0.73/0.883 → 0.808/0.72/0.868, grass 0.767/0.75/0.839 →
    # 0.804/0.76/0.848, brick 0.928/0.85/0.957 → 0.946/0.85/0.956, fdm_rectilinear
    # 0.802/0.59/0.848 → 0.788/0.59/0.855, fdm_grid 0.827/0.55/0.842 → 0.830/0.71/0.846,
    # lpbf_powder 0.988/0.93/0.870 → 0.991/0.94/0.863, lpbf_fused 0.700/0.39/0.724 →
    # 0.705/0.33/0.726.
    texture_bank_images: int = 0
    # Nearest-neighbour search of the bank (scorer.knn): "exact", or "ivf", an inverted file of
    # texture_cells k-means cells of which the texture_probes nearest are searched per query.
    texture_search: str = "ivf"
    texture_cells: int = 128
    texture_probes: int = 8

    def __post_init__(self) -> None:
        for name in ("texture_statistics", "texture_scales"):
            v = getattr(self, name)
            if isinstance(v, str):  # from `--option texture_statistics=gradient+level`
                v = [s for s in v.replace("+", ",").split(",") if s]
            object.__setattr__(self, name, tuple(v))
        object.__setattr__(self, "texture_scales", tuple(float(s) for s in self.texture_scales))
        bad = set(self.texture_statistics) - set(STATISTICS)
        if bad or not self.texture_statistics:
            raise ValueError(f"texture statistics must be a non-empty subset of {STATISTICS}")
        if not self.texture_scales or min(self.texture_scales) <= 0:
            raise ValueError("texture scales must be positive")
        if self.texture_bank_images < 0:
            raise ValueError("texture_bank_images must be ≥ 0")
        if self.texture_bank < 1 or self.texture_k < 1 or self.texture_stride < 1:
            raise ValueError("texture_bank, texture_k and texture_stride must be ≥ 1")
        if self.texture_search not in SEARCHES:
            raise ValueError(f"texture_search must be one of {SEARCHES}")
        if self.texture_cells < 1 or self.texture_probes < 1:
            raise ValueError("texture_cells and texture_probes must be ≥ 1")
        if self.texture_map_sigma < 0 or self.texture_window < 1:
            raise ValueError("texture_map_sigma must be ≥ 0 and texture_window ≥ 1")


def descriptors(
    residuals: Sequence[np.ndarray], grays: Sequence[np.ndarray], cfg: TextureConfig
) -> list[np.ndarray]:
    """(D, H, W) float32 local statistics per image (see the module docstring).

    ``residuals`` are (C, H, W) signed ε̂ − ε, ``grays`` the model-scale grey input (H, W).
    """
    if len(residuals) != len(grays):
        raise ValueError(f"{len(residuals)} residuals for {len(grays)} images")
    out: list[np.ndarray] = [np.empty(0)] * len(grays)
    for idxs in _same_shape_groups(grays):
        x = _stack(grays, idxs)  # (B, 1, H, W)
        feats: list[torch.Tensor] = []
        if "residual" in cfg.texture_statistics:
            energy = _stack(residuals, idxs)[:, 0].square().sum(dim=1, keepdim=True)
            feats += [torch.log(gaussian_blur(energy, s) + _TINY) for s in cfg.texture_scales]
        if "gradient" in cfg.texture_statistics:
            p = _pad(gaussian_blur(x, 0.7), 1)
            gx, gy = (
                F.conv2d(p, _SOBEL_X.view(1, 1, 3, 3)),
                F.conv2d(p, _SOBEL_X.T.reshape(1, 1, 3, 3)),
            )
            for s in cfg.texture_scales:
                gxx, gyy = gaussian_blur(gx * gx, s), gaussian_blur(gy * gy, s)
                gxy = gaussian_blur(gx * gy, s)
                e = gxx + gyy + _TINY
                feats += [torch.log(e), (gxx - gyy) / e, 2 * gxy / e]
        if "level" in cfg.texture_statistics:
            med = x.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
            for s in cfg.texture_scales:
                m = gaussian_blur(x, s)
                var = (gaussian_blur(x * x, s) - m * m).clamp(min=0)
                feats += [m - med, torch.log(var + _TINY)]
        maps = torch.cat(feats, dim=1).numpy()
        for j, i in enumerate(idxs):
            out[i] = maps[j]
    return out


def bank_sample(images: Sequence[np.ndarray], n: int) -> list[np.ndarray]:
    """Up to ``n`` of ``images`` spread evenly over the list (training images in file order
    come from the whole print or photograph, not only its start)."""
    if n <= 0 or not images:
        return []
    idx = np.unique(np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int))
    return [images[i] for i in idx]


def _queries(desc: np.ndarray, stride: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Descriptors every ``stride`` pixels, from row/column (stride − 1) // 2: the bilinear
    upsampling of their map (align_corners=False) puts sample i at stride·i + (stride − 1)/2,
    so the map is off by at most half a pixel (from 0, stride 4 put it 1.5 px off)."""
    o = (stride - 1) // 2
    q = torch.as_tensor(desc[:, o::stride, o::stride])
    return q.reshape(q.shape[0], -1).T.contiguous(), (q.shape[1], q.shape[2])


@dataclass(frozen=True)
class TextureCalibration:
    """Robust centre and scale per descriptor dimension and the memory bank of normal
    (standardised) descriptors."""

    center: tuple[float, ...]
    scale: tuple[float, ...]
    bank: np.ndarray  # (N, D) float32
    config: TextureConfig = field(default_factory=TextureConfig)

    @classmethod
    def fit(
        cls,
        descs: Sequence[np.ndarray],
        cfg: TextureConfig,
        seed: int = 0,
        bank_descs: Sequence[np.ndarray] = (),
    ) -> tuple[TextureCalibration, list[np.ndarray]]:
        """The calibration and the held-out images' (``descs``) own evidence maps.

        With ``bank_descs`` (training images' descriptors) the scales and the bank come from
        those, and the held-out images are scored against a bank they are not in: what a fresh
        normal image gets. Without, the bank is drawn from the held-out images themselves and
        each is scored without its own pixels (leave one image out) — which is optimistic when
        held-out images overlap (crops of one photograph share pixels)."""
        if len(descs) < 2:
            raise ValueError("texture calibration needs at least 2 images")
        qs = [_queries(d, cfg.texture_stride)[0] for d in descs]
        pool = [_queries(d, cfg.texture_stride)[0] for d in bank_descs] or qs
        allq = torch.cat(pool)
        center = allq.median(dim=0).values
        scale = 1.4826 * (allq - center).abs().median(dim=0).values
        scale = torch.maximum(scale, 1e-3 * scale.max().clamp(min=_TINY))
        gen = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(allq), generator=gen)[: cfg.texture_bank]
        bank = ((allq[pick] - center) / scale).float()
        cal = cls(tuple(center.tolist()), tuple(scale.tolist()), bank.numpy().copy(), cfg)
        if bank_descs:
            return cal, cal.evidence(descs)
        owner = torch.cat([torch.full((len(q),), i) for i, q in enumerate(qs)])
        maps = [cal._evidence(d, exclude=owner[pick] == i) for i, d in enumerate(descs)]
        return cal, maps

    def _evidence(self, desc: np.ndarray, exclude: torch.Tensor | None = None) -> np.ndarray:
        cfg = self.config
        q, (h, w) = _queries(desc, cfg.texture_stride)
        z = (q - torch.tensor(self.center)) / torch.tensor(self.scale)
        m = self.index.mean_distance(z, cfg.texture_k, exclude)
        m = m.reshape(1, 1, h, w)
        m = F.interpolate(m, size=desc.shape[1:], mode="bilinear", align_corners=False)
        return gaussian_blur(m, cfg.texture_map_sigma)[0, 0].numpy().astype(np.float32)

    @cached_property
    def index(self) -> BankIndex:
        """The bank's nearest-neighbour search, built once per calibration."""
        cfg = self.config
        return BankIndex(self.bank, cfg.texture_search, cfg.texture_cells, cfg.texture_probes)

    def evidence(self, descs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Evidence map per image: distance to the nearest normal descriptors, smoothed."""
        return [self._evidence(d) for d in descs]

    def to_dict(self) -> dict[str, Any]:
        """The JSON part; the bank is a tensor (stored beside the weights)."""
        return {"center": list(self.center), "scale": list(self.scale)}

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], bank: np.ndarray, cfg: TextureConfig
    ) -> TextureCalibration:
        center = tuple(float(v) for v in d["center"])
        scale = tuple(float(v) for v in d["scale"])
        bank = np.asarray(bank, dtype=np.float32)
        if bank.ndim != 2 or bank.shape[1] != len(center) or len(scale) != len(center):
            raise ValueError(f"texture bank of shape {bank.shape} for {len(center)} dimensions")
        if not (np.isfinite(bank).all() and np.isfinite(center).all()) or min(scale) <= 0:
            raise ValueError("texture calibration needs finite values and positive scales")
        return cls(center, scale, bank, cfg)
