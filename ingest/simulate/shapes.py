"""Part shapes as signed distance fields whose cross-section changes with height.

A signed distance (mm, negative inside material) gives everything the renderers need from
one evaluation: the anti-aliased outline, the perimeter / contour loops as its level sets and
their normals from its gradient. Coordinates are in the part frame (mm, origin at the part
centre); ``x`` and ``y`` may be broadcastable (a row and a column) or full arrays.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Array = np.ndarray


def _smoothstep(e0: float, e1: float, v: float) -> float:
    t = min(max((v - e0) / (e1 - e0), 0.0), 1.0)
    return t * t * (3 - 2 * t)


def sd_rounded_box(x: Array, y: Array, hx: float, hy: float, r: float) -> Array:
    """Exact distance to a box of half sizes (hx, hy) with corner radius r."""
    r = min(r, hx, hy)
    qx = np.abs(x) - (hx - r)
    qy = np.abs(y) - (hy - r)
    ox, oy = np.maximum(qx, 0.0), np.maximum(qy, 0.0)
    return np.sqrt(ox * ox + oy * oy) + np.minimum(np.maximum(qx, qy), 0.0) - r


def sd_circle(x: Array, y: Array, cx: float, cy: float, r: float) -> Array:
    dx, dy = x - cx, y - cy
    return np.sqrt(dx * dx + dy * dy) - r


def sd_segment(x: Array, y: Array, a: tuple[float, float], b: tuple[float, float]) -> Array:
    """Distance to a segment (a capsule of radius 0)."""
    ex, ey = b[0] - a[0], b[1] - a[1]
    wx, wy = x - a[0], y - a[1]
    t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    dx, dy = wx - ex * t, wy - ey * t
    return np.sqrt(dx * dx + dy * dy)


def sd_polygon(x: Array, y: Array, pts: Array) -> Array:
    """Exact signed distance to a simple polygon (Quilez's winding-sign method)."""
    x, y = np.broadcast_arrays(x, y)
    d2 = np.full(x.shape, np.inf, np.float32)
    inside = np.zeros(x.shape, bool)
    n = len(pts)
    for i in range(n):
        (ax, ay), (bx, by) = pts[i], pts[(i + 1) % n]
        ex, ey = bx - ax, by - ay
        wx, wy = x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        dx, dy = wx - ex * t, wy - ey * t
        np.minimum(d2, dx * dx + dy * dy, out=d2)
        c1, c2, c3 = y >= ay, y < by, ex * wy > ey * wx
        inside ^= (c1 & c2 & c3) | ~(c1 | c2 | c3)
    d = np.sqrt(d2)
    return np.where(inside, -d, d)


@dataclass(frozen=True)
class Shape(ABC):
    """A printed part: cross-section at height z as a signed distance field (mm)."""

    height: float

    name = "shape"
    hollow = False  # walls only (perimeters, no infill), e.g. a vase

    @abstractmethod
    def sdf(self, x: Array, y: Array, z: float) -> Array:
        """Signed distance to the section at height z (negative inside material)."""

    @property
    @abstractmethod
    def radius(self) -> float:
        """Radius of a circle (around the origin) holding every section."""

    def footprint_heights(self, z: float) -> tuple[float, ...]:
        """Heights below z whose sections, unioned, cover what is visible around section z.

        Where the part narrows, the camera sees lower layers' top surfaces (ledges, slopes).
        """
        return (0.0,) if z > 0 else ()


@dataclass(frozen=True)
class RoundedBox(Shape):
    """A box whose sides taper and whose corner radius grows toward the top."""

    hx: float
    hy: float
    r0: float
    r1: float
    taper: float

    name = "rounded_box"

    def sdf(self, x: Array, y: Array, z: float) -> Array:
        f = min(max(z / self.height, 0.0), 1.0)
        s = 1.0 - self.taper * f
        return sd_rounded_box(x, y, self.hx * s, self.hy * s, self.r0 + (self.r1 - self.r0) * f)

    @property
    def radius(self) -> float:
        return float(np.hypot(self.hx, self.hy))


@dataclass(frozen=True)
class SteppedShaft(Shape):
    """A cylinder with a bottom chamfer, a D-flat and a smaller diameter above a step."""

    r_low: float
    r_high: float
    z_step: float
    chamfer: float
    flat: float  # distance of the D-flat from the axis, as a fraction of the radius
    flat_angle: float

    name = "cylinder"

    def _r(self, z: float) -> float:
        r = self.r_low if z < self.z_step else self.r_high
        return r - max(0.0, self.chamfer - z)

    def sdf(self, x: Array, y: Array, z: float) -> Array:
        r = self._r(z)
        d = sd_circle(x, y, 0.0, 0.0, r)
        c, s = math.cos(self.flat_angle), math.sin(self.flat_angle)
        return np.maximum(d, (x * c + y * s) - self.flat * r)

    @property
    def radius(self) -> float:
        return self.r_low

    def footprint_heights(self, z: float) -> tuple[float, ...]:
        return (self.z_step - 0.05,) if z >= self.z_step else ()


@dataclass(frozen=True)
class Vase(Shape):
    """A lobed, twisting vase that swells then narrows; printed as walls only."""

    r0: float
    swell: float
    lobes: int
    lobe_amp: float
    twist: float  # radians per mm

    name = "vase"
    hollow = True

    def _r(self, z: float) -> float:
        f = min(max(z / self.height, 0.0), 1.0)
        return self.r0 * (1.0 + self.swell * math.sin(math.pi * f) - 0.15 * f)

    def sdf(self, x: Array, y: Array, z: float) -> Array:
        r = self._r(z)
        rho = np.sqrt(x * x + y * y)
        theta = np.arctan2(y, x)
        ph = self.lobes * theta + self.twist * z
        rt = r * (1.0 + self.lobe_amp * np.cos(ph))
        # the gradient correction only matters near the wall; keep it finite at the axis
        slope = r * self.lobe_amp * self.lobes * np.sin(ph) / np.maximum(rho, 0.5 * r)
        return (rho - rt) / np.sqrt(1.0 + slope * slope)

    @property
    def radius(self) -> float:
        return self.r0 * (1.0 + self.swell) * (1.0 + self.lobe_amp)

    def footprint_heights(self, z: float) -> tuple[float, ...]:
        # r(f) peaks where swell·π·cos(πf) = 0.15
        zmax = self.height * float(np.arccos(min(1.0, 0.15 / (np.pi * self.swell))) / np.pi)
        return (max(0.0, min(z - 0.3, zmax)),) if z > zmax else ()


@dataclass(frozen=True)
class Bracket(Shape):
    """An L bracket with two bolt holes; its short arm tapers like a gusset."""

    a: float  # long arm length
    b: float  # short arm length at the bottom
    t1: float  # long arm thickness
    t2: float  # short arm thickness
    taper: float
    r_hole: float

    name = "bracket"

    def sdf(self, x: Array, y: Array, z: float) -> Array:
        f = min(max(z / self.height, 0.0), 1.0)
        b = self.t1 + (self.b - self.t1) * (1.0 - self.taper * f)
        ox, oy = self.a / 2, self.b / 2  # centre the L roughly on the origin
        pts = np.array(
            [(0, 0), (self.a, 0), (self.a, self.t1), (self.t2, self.t1), (self.t2, b), (0, b)],
            np.float32,
        ) - np.array([ox, oy], np.float32)
        d = sd_polygon(x, y, pts) - 0.15
        rh = self.r_hole * (1.0 + 0.5 * _smoothstep(0.8, 1.0, f))  # counterbore at the top
        for fx in (0.55, 0.85):
            d = np.maximum(d, -sd_circle(x, y, self.a * fx - ox, self.t1 / 2 - oy, rh))
        return d

    @property
    def radius(self) -> float:
        return float(np.hypot(self.a, self.b) / 2 + 0.2)


@dataclass(frozen=True)
class HolePlate(Shape):
    """A rounded plate with countersunk corner holes and a central slot."""

    hx: float
    hy: float
    r_corner: float
    r_hole: float
    slot: float  # slot half length

    name = "plate_holes"

    def sdf(self, x: Array, y: Array, z: float) -> Array:
        f = min(max(z / self.height, 0.0), 1.0)
        d = sd_rounded_box(x, y, self.hx, self.hy, self.r_corner)
        rh = self.r_hole * (1.0 + 0.7 * _smoothstep(0.7, 1.0, f))
        px, py = self.hx - 2.2 * self.r_hole, self.hy - 2.2 * self.r_hole
        for sx, sy in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
            d = np.maximum(d, -sd_circle(x, y, sx * px, sy * py, rh))
        slot = sd_segment(x, y, (-self.slot, 0.0), (self.slot, 0.0)) - 0.8 * self.r_hole
        return np.maximum(d, -slot)

    @property
    def radius(self) -> float:
        return float(np.hypot(self.hx, self.hy))

    def footprint_heights(self, z: float) -> tuple[float, ...]:
        return (0.7 * self.height,) if z > 0.7 * self.height else ()


ShapeFactory = Callable[[np.random.Generator, float, float], Shape]


def _box(rng: np.random.Generator, half: float, height: float) -> Shape:
    aspect = rng.uniform(0.6, 0.95)
    return RoundedBox(
        height,
        hx=half,
        hy=half * aspect,
        r0=half * rng.uniform(0.05, 0.2),
        r1=half * rng.uniform(0.25, 0.55),
        taper=rng.uniform(0.0, 0.3),
    )


def _shaft(rng: np.random.Generator, half: float, height: float) -> Shape:
    return SteppedShaft(
        height,
        r_low=half,
        r_high=half * rng.uniform(0.6, 0.85),
        z_step=height * rng.uniform(0.4, 0.75),
        chamfer=half * rng.uniform(0.05, 0.12),
        flat=rng.uniform(0.7, 0.85),
        flat_angle=rng.uniform(0, 2 * np.pi),
    )


def _vase(rng: np.random.Generator, half: float, height: float) -> Shape:
    lobes = int(rng.choice([5, 6, 8]))
    amp = rng.uniform(0.03, 0.07)
    swell = rng.uniform(0.15, 0.35)
    return Vase(
        height,
        r0=half / ((1 + swell) * (1 + amp)),
        swell=swell,
        lobes=lobes,
        lobe_amp=amp,
        twist=rng.uniform(-1.0, 1.0) / max(height, 1.0),
    )


def _bracket(rng: np.random.Generator, half: float, height: float) -> Shape:
    a = 2 * half * rng.uniform(0.9, 1.0)
    return Bracket(
        height,
        a=a,
        b=a * rng.uniform(0.55, 0.8),
        t1=a * rng.uniform(0.22, 0.3),
        t2=a * rng.uniform(0.18, 0.26),
        taper=rng.uniform(0.2, 0.6),
        r_hole=a * rng.uniform(0.04, 0.055),
    )


def _plate(rng: np.random.Generator, half: float, height: float) -> Shape:
    hy = half * rng.uniform(0.65, 0.9)
    return HolePlate(
        height,
        hx=half,
        hy=hy,
        r_corner=hy * rng.uniform(0.15, 0.35),
        r_hole=hy * rng.uniform(0.1, 0.14),
        slot=half * rng.uniform(0.2, 0.4),
    )


SHAPES: dict[str, ShapeFactory] = {
    "rounded_box": _box,
    "cylinder": _shaft,
    "vase": _vase,
    "bracket": _bracket,
    "plate_holes": _plate,
}


def make_shape(name: str, rng: np.random.Generator, half: float, height: float) -> Shape:
    """A random instance of a named shape, about ``half`` mm from centre to side."""
    try:
        return SHAPES[name](rng, half, height)
    except KeyError:
        raise ValueError(f"unknown shape {name!r}; choose from {sorted(SHAPES)}") from None
