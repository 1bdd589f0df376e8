"""Part vs bed segmentation of a layer image, for the geometry channel (issue 18).

Two ways, both measured on held-out normal layers against their expected outlines (the better
one is kept, the IoU of both is recorded in the model):

- classical: Otsu's threshold on the locally smoothed image; the side that is the part is the
  one that agrees with the expected outline (or, without one, the one that is not the frame's
  border).
- learned: a per-pixel logistic regression on a few local features (smoothed intensity at two
  scales, local contrast, local standard deviation, gradient energy), fitted on normal training
  layers with their expected outlines as labels. A slicer's outline is free supervision.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression

SEGMENTERS = ("learned", "classical")
N_FEATURES = 8
_SAMPLE_PER_IMAGE = 1500  # pixels drawn per training image for the logistic fit


def grey(image: np.ndarray) -> np.ndarray:
    """uint8 or float image (grey or RGB) → float32 grey in [0, 1]."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a[..., :3]), cv2.COLOR_RGB2GRAY)
    a = a.astype(np.float32)
    return a / 255.0 if a.max(initial=0.0) > 1.5 else a


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def half(a: np.ndarray) -> np.ndarray:
    """Half resolution (area average): the segmentation's features are all smooth, and a
    quarter of the pixels keeps the geometry channel's cost small beside RADAR's."""
    return cv2.resize(
        a, (max(1, a.shape[1] // 2), max(1, a.shape[0] // 2)), interpolation=cv2.INTER_AREA
    )


def pixel_features(image: np.ndarray) -> np.ndarray:
    """(H/2, W/2, N_FEATURES) float32 local features of a layer image, at half resolution
    (scales below are in half-resolution pixels)."""
    g = half(grey(image))
    m2, m6, m16 = _blur(g, 1.0), _blur(g, 3.0), _blur(g, 8.0)
    sd = np.sqrt(np.maximum(_blur(g * g, 2.0) - _blur(g, 2.0) ** 2, 0.0))
    gx = cv2.Sobel(m2, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(m2, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)
    grad, grad8 = _blur(mag, 1.5), _blur(mag, 4.0)
    sd8 = np.sqrt(np.maximum(_blur(g * g, 4.0) - _blur(g, 4.0) ** 2, 0.0))
    return np.stack([m2, m6, m6 - m16, sd, grad, sd * sd, grad8, sd8], axis=-1)


def classical_part(image: np.ndarray, outline: np.ndarray | None = None) -> np.ndarray:
    """Part probability (0/1 float32) by Otsu's threshold on the smoothed image."""
    g = (np.clip(_blur(grey(image), 3.0), 0, 1) * 255).astype(np.uint8)
    _, hi = cv2.threshold(g, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    hi = hi.astype(np.float32)
    if outline is not None and outline.any():
        o = outline.astype(bool)
        keep_hi = hi[o].mean() - hi[~o].mean() >= 0
    else:  # the bed touches the frame's border; the part mostly does not
        border = np.concatenate([hi[0], hi[-1], hi[:, 0], hi[:, -1]])
        keep_hi = border.mean() < 0.5
    return hi if keep_hi else 1.0 - hi


@dataclass
class LearnedSegmenter:
    """Per-pixel logistic regression on :func:`pixel_features` (standardised)."""

    mean: np.ndarray  # (N_FEATURES,)
    scale: np.ndarray  # (N_FEATURES,)
    coef: np.ndarray  # (N_FEATURES,)
    intercept: float

    @classmethod
    def fit(
        cls, images: list[np.ndarray], outlines: list[np.ndarray], seed: int = 0
    ) -> LearnedSegmenter:
        if not images or len(images) != len(outlines):
            raise ValueError("the learned segmenter needs images with their outlines")
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for img, out in zip(images, outlines, strict=True):
            f = pixel_features(img).reshape(-1, N_FEATURES)
            idx = rng.choice(len(f), size=min(_SAMPLE_PER_IMAGE, len(f)), replace=False)
            xs.append(f[idx])
            ys.append(half(np.asarray(out, np.float32)).reshape(-1)[idx] > 0.5)
        x, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys)
        if y.all() or not y.any():
            raise ValueError("the outlines hold only one class (all part or all bed)")
        mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
        lr = LogisticRegression(C=1.0, max_iter=500, random_state=seed)
        lr.fit((x - mean) / scale, y)
        return cls(mean, scale, lr.coef_[0].astype(np.float64), float(lr.intercept_[0]))

    def probability(self, image: np.ndarray) -> np.ndarray:
        f = pixel_features(image)
        w = (self.coef / self.scale).astype(np.float32)
        b = np.float32(self.intercept - float(np.sum(self.coef * self.mean / self.scale)))
        z = _blur((f @ w + b).astype(np.float32), 1.0)
        h, wd = np.asarray(image).shape[:2]
        z = cv2.resize(z, (wd, h), interpolation=cv2.INTER_LINEAR)
        return (1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean,
            "scale": self.scale,
            "coef": self.coef,
            "intercept": np.array([self.intercept]),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> LearnedSegmenter:
        for key in ("mean", "scale", "coef"):
            if a[key].shape != (N_FEATURES,):
                raise ValueError(f"segmenter {key} has shape {a[key].shape}")
        return cls(a["mean"], a["scale"], a["coef"], float(a["intercept"].reshape(-1)[0]))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0
