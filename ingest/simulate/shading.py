"""Light and surface shading shared by both processes and the defects.

The camera looks straight down; a light at (azimuth, elevation) shades a surface by Lambert
(diffuse) plus a Blinn-Phong highlight. Beads, scan tracks, grains and defect bumps are all
height fields, so the same two formulas give every texture its relief.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class Light:
    """Direction toward the light; image axes x right, y down."""

    azimuth: float
    elevation: float
    lx: float = field(init=False)
    ly: float = field(init=False)
    cos_e: float = field(init=False)
    sin_e: float = field(init=False)
    half: tuple[float, float, float] = field(init=False)

    def __post_init__(self) -> None:
        lx, ly = float(np.cos(self.azimuth)), float(np.sin(self.azimuth))
        ce, se = float(np.cos(self.elevation)), float(np.sin(self.elevation))
        h = np.array([ce * lx, ce * ly, se + 1.0])
        h /= np.linalg.norm(h)
        object.__setattr__(self, "lx", lx)
        object.__setattr__(self, "ly", ly)
        object.__setattr__(self, "cos_e", ce)
        object.__setattr__(self, "sin_e", se)
        object.__setattr__(self, "half", (float(h[0]), float(h[1]), float(h[2])))

    def shadow_offset(self, length_px: float) -> tuple[int, int]:
        """Integer pixel offset of a cast shadow (away from the light)."""
        return round(-self.lx * length_px), round(-self.ly * length_px)


def glossy(x: np.ndarray, power: int) -> np.ndarray:
    """max(x, 0)**power for power a power of two, by repeated squaring (fast)."""
    y = np.maximum(x, 0.0)
    p = 1
    while p < power:
        y = y * y
        p *= 2
    return y


@dataclass(frozen=True)
class Surface:
    """How a material reflects: ambient level, diffuse gain, specular gain and sharpness."""

    ambient: float
    diffuse: float
    specular: float
    gloss: int = 16


def shade_profile(
    r: np.ndarray,
    across_l: np.ndarray | float,
    across_h: np.ndarray | float,
    light: Light,
    surface: Surface,
) -> tuple[np.ndarray, np.ndarray]:
    """Shade a cylindrical ridge (bead, scan track) from its cross coordinate.

    ``r`` is the signed position across the ridge in [-1, 1] (0 on its crest); ``across_l``
    and ``across_h`` are the dot products of the image-plane unit vector pointing to +r with
    the light's and the half vector's horizontal parts. For a circular profile the normal is
    (r, sqrt(1 - r²)), which gives the lit flank, the shadowed flank and the crest highlight.
    Returns (diffuse shade, specular).
    """
    h = np.sqrt(np.maximum(1.0 - r * r, 0.0))
    ndl = h * light.sin_e + r * (across_l * light.cos_e)
    ndh = h * light.half[2] + r * across_h
    shade = surface.ambient + surface.diffuse * np.maximum(ndl, 0.0)
    spec = surface.specular * glossy(ndh, surface.gloss)
    return shade.astype(np.float32, copy=False), spec.astype(np.float32, copy=False)


def gradient(field: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference gradient (per unit of ``scale``), edges replicated."""
    k = np.array([[-1.0, 0.0, 1.0]], np.float32) * (0.5 / scale)
    gx = cv2.filter2D(field, cv2.CV_32F, k, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(field, cv2.CV_32F, k.T, borderType=cv2.BORDER_REPLICATE)
    return gx, gy


def shade_heightfield(
    height: np.ndarray, light: Light, surface: Surface, px: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Shade a height field (same unit as ``px``): returns (diffuse, specular)."""
    gx, gy = gradient(height, px)
    hx, hy, hz = light.half
    inv = 1.0 / np.sqrt(1.0 + gx * gx + gy * gy)
    ndl = (light.sin_e - (gx * light.lx + gy * light.ly) * light.cos_e) * inv
    ndh = (hz - gx * hx - gy * hy) * inv
    shade = surface.ambient + surface.diffuse * np.maximum(ndl, 0.0)
    return shade, surface.specular * glossy(ndh, surface.gloss)
