"""Registration of a layer to its previous layer (or to its expected outline): one translation.

Phase correlation (OpenCV), sub-pixel, on a Hann-windowed pair. A camera over a print bed sees
only small registration jitter between layers (about a pixel); a layer shift moves the part
several pixels, so the shift itself is a feature of the geometry channel (issue 18), not only a
correction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np


@dataclass(frozen=True)
class Shift:
    """``moving`` ≈ ``fixed`` translated by (dx, dy) pixels; ``response`` is the correlation
    peak's strength (0..1; low when the pair has no common structure)."""

    dx: float
    dy: float
    response: float

    @property
    def magnitude(self) -> float:
        return float(np.hypot(self.dx, self.dy))


@cache
def _window(h: int, w: int) -> np.ndarray:
    return cv2.createHanningWindow((w, h), cv2.CV_32F)


def _plane(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3:
        a = (
            cv2.cvtColor(a[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
            if a.shape[2] >= 3
            else a[..., 0]
        )
    a = a.astype(np.float32)
    return a - float(a.mean())


def estimate_shift(moving: np.ndarray, fixed: np.ndarray) -> Shift:
    """The translation that carries ``fixed`` onto ``moving`` (grey or RGB, or float maps such
    as part masks), by windowed phase correlation."""
    m, f = _plane(moving), _plane(fixed)
    if m.shape != f.shape:
        raise ValueError(f"cannot register images of shapes {m.shape} and {f.shape}")
    (dx, dy), response = cv2.phaseCorrelate(f, m, _window(*m.shape))
    return Shift(float(dx), float(dy), float(response))


def translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` moved by (dx, dy) pixels (bilinear, edges replicated), same dtype."""
    h, w = image.shape[:2]
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
