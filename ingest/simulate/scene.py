"""What a rendered layer hands to the defects: its geometry, light, colours and a re-render hook."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .shading import Light


@dataclass(frozen=True)
class Overrides:
    """Changes to the process itself that a defect asks the renderer for.

    ``width_scale`` multiplies the bead / track width (H×W; <1 under-, >1 over-extrusion);
    ``shift_mm`` displaces every layer from ``shift_from`` on (a layer shift). Merging two
    overrides multiplies the widths and keeps the later shift.
    """

    width_scale: np.ndarray | None = None
    shift_mm: tuple[float, float] = (0.0, 0.0)
    shift_from: int | None = None

    def merge(self, other: Overrides) -> Overrides:
        ws = self.width_scale
        if other.width_scale is not None:
            ws = other.width_scale if ws is None else ws * other.width_scale
        out = replace(self, width_scale=ws)
        if other.shift_from is not None:
            out = replace(out, shift_mm=other.shift_mm, shift_from=other.shift_from)
        return out

    def shift_at(self, layer: int) -> tuple[float, float]:
        if self.shift_from is not None and layer >= self.shift_from:
            return self.shift_mm
        return (0.0, 0.0)

    @property
    def empty(self) -> bool:
        return self.width_scale is None and self.shift_from is None


@dataclass
class LayerContext:
    """A clean layer as the defects see it (image grid, pixels; distances in mm)."""

    process: str
    stage: str  # "top" (FDM), "powder" or "fused" (LPBF)
    layer: int
    z_mm: float
    px_mm: float
    sdf: np.ndarray  # signed distance to the current section, mm, negative on material
    cov: np.ndarray  # material coverage in [0, 1]
    center: tuple[float, float]  # part centre, pixels (x, y)
    radius_px: float  # part bounding radius, pixels
    light: Light
    colors: dict[str, np.ndarray]  # named colours, each of shape (C,)
    radiance: np.ndarray  # clean radiance, H×W×C float32
    seed: int
    render: Callable[[Overrides], np.ndarray]  # the same layer with process overrides
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.sdf.shape  # type: ignore[return-value]

    def material_point(self, theta: float, depth: float) -> tuple[float, float]:
        """A point on material along the ray from the part centre at angle ``theta``.

        ``depth`` 0 is the outer edge, 1 the innermost material on that ray, so an anchor
        (theta, depth) drawn once per defect stays put while the section changes by layer.
        """
        h, w = self.shape
        cx, cy = self.center
        rr = np.linspace(self.radius_px * 1.4, 0.0, 160)
        xs = np.clip(np.rint(cx + rr * np.cos(theta)), 0, w - 1).astype(int)
        ys = np.clip(np.rint(cy + rr * np.sin(theta)), 0, h - 1).astype(int)
        on = np.flatnonzero(self.sdf[ys, xs] < -0.6 * self.px_mm)
        if len(on) == 0:
            iy, ix = np.unravel_index(int(np.argmin(self.sdf)), self.shape)
            return float(ix), float(iy)
        i = on[min(len(on) - 1, int(depth * len(on)))]
        return float(xs[i]), float(ys[i])

    def edge_point(self, theta: float) -> tuple[float, float, float, float]:
        """The outer edge along ``theta``: (x, y, outward normal x, outward normal y)."""
        x, y = self.material_point(theta, 0.0)
        h, w = self.shape
        ix, iy = int(np.clip(x, 1, w - 2)), int(np.clip(y, 1, h - 2))
        gx = self.sdf[iy, ix + 1] - self.sdf[iy, ix - 1]
        gy = self.sdf[iy + 1, ix] - self.sdf[iy - 1, ix]
        n = float(np.hypot(gx, gy)) or 1.0
        return x, y, float(gx / n), float(gy / n)

    def corner_point(self, theta: float) -> tuple[float, float]:
        """The outline point farthest from the centre near ``theta`` (corners lift first)."""
        best, dist = self.edge_point(theta)[:2], -1.0
        for t in theta + np.linspace(-0.7, 0.7, 9):
            x, y, _, _ = self.edge_point(float(t))
            r = float(np.hypot(x - self.center[0], y - self.center[1]))
            if r > dist:
                best, dist = (x, y), r
        return best

    def color(self, name: str) -> np.ndarray:
        return self.colors[name]
