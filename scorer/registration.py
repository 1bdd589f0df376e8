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


def mask_offset(moving: np.ndarray, fixed: np.ndarray, max_shift: int) -> Shift:
    """The translation, within ±``max_shift`` px, that best lays the region ``fixed`` (a 0/1
    mask, e.g. the expected outline) over the region ``moving`` (the part found in the image):
    the peak of their plain cross-correlation (the overlap), with a parabolic sub-pixel step.

    Phase correlation whitens the spectrum, which suits textured images but not two large
    flat regions: on part-vs-outline masks it locked onto stray edges (normal layers measured
    0.5 to 68 px). The overlap's peak is broad but sits where the regions agree best, and a
    segmentation error that is spread around the edge barely moves it. ``response`` is the
    overlap at the peak over the smaller region's area."""
    m = np.asarray(moving, np.float32)
    f = np.asarray(fixed, np.float32)
    if m.shape != f.shape or m.ndim != 2:
        raise ValueError(f"cannot register masks of shapes {m.shape} and {f.shape}")
    area = float(min(m.sum(), f.sum()))
    if area < 1.0:
        return Shift(0.0, 0.0, 0.0)
    spec = np.fft.rfft2(m) * np.conj(np.fft.rfft2(f))
    corr = np.fft.fftshift(np.fft.irfft2(spec, s=m.shape))
    cy, cx = m.shape[0] // 2, m.shape[1] // 2
    r = int(max(1, min(max_shift, cy - 1, cx - 1)))
    win = corr[cy - r : cy + r + 1, cx - r : cx + r + 1]
    iy, ix = np.unravel_index(int(np.argmax(win)), win.shape)

    def vertex(a: float, b: float, c: float) -> float:
        d = a - 2 * b + c
        return 0.0 if d >= 0 else 0.5 * (a - c) / d

    dy = dx = 0.0
    if 0 < iy < win.shape[0] - 1:
        dy = vertex(win[iy - 1, ix], win[iy, ix], win[iy + 1, ix])
    if 0 < ix < win.shape[1] - 1:
        dx = vertex(win[iy, ix - 1], win[iy, ix], win[iy, ix + 1])
    return Shift(float(ix - r + dx), float(iy - r + dy), float(win[iy, ix]) / area)
