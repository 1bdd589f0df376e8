"""LPBF (laser powder-bed fusion): the powder bed after recoat, or after exposure.

Powder is a height field of spherical grains (a few size classes, random packing) lit by a
low-angle lamp, so each grain has a lit side and a shadow; every recoat lays fresh grains.
The exposed cross-section is a set of contour tracks along the outline and stripe-wise
hatching inside, rotated 67° per layer, each track a shallow ridge with melt-pool ripples;
molten metal is smoother and darker than powder except for the track flanks facing the lamp.
Around the part the powder is denuded (fewer, smaller grains: darker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .camera import Camera
from .categories import Category, colour
from .noise import hash01, rng_for, smooth_noise
from .scene import LayerContext, Overrides
from .shading import Light, Surface, gradient, shade_heightfield, shade_profile
from .shapes import Shape, make_shape

FOV_MM = 6.0  # 23 µm per pixel at 256 px: 20-60 µm grains are 1-3 px, 0.1 mm hatch ~4 px
HATCH_ROTATION = np.deg2rad(67.0)
GRAIN_CLASSES = ((0.55, 0.5), (0.85, 0.35), (1.35, 0.15))  # (radius / mean radius, share)
POWDER = Surface(0.18, 0.95, 0.05, 8)
METAL = Surface(0.3, 0.55, 0.7, 8)


@dataclass(frozen=True, eq=False)
class LpbfJob:
    """Everything fixed for one build job (drawn from the category and the job seed)."""

    seed: int
    size: int
    channels: int
    category: Category
    shape: Shape
    layers: int
    layer_h: float
    hatch: float  # hatch spacing, mm
    track: float  # track width / hatch spacing
    stripe: float  # stripe width, mm
    hatch0: float
    contours: int
    grain_r: float  # mean grain radius, mm
    packing: float
    angle: float
    center_mm: tuple[float, float]
    light: Light
    powder: np.ndarray
    metal: np.ndarray
    fused_gain: float
    jitter_px: float
    camera: Camera = field(repr=False)

    @property
    def px_mm(self) -> float:
        return FOV_MM / self.size

    def z_mm(self, layer: int) -> float:
        return round((layer + 1) * self.layer_h, 4)

    @classmethod
    def sample(cls, category: Category, seed: int, size: int, layers: int, rgb: bool) -> LpbfJob:
        rng = rng_for(seed, "lpbf-job")
        ch = 3 if rgb else 1
        layer_h = float(rng.choice([0.03, 0.04, 0.05]))
        half = FOV_MM * rng.uniform(0.28, 0.36)
        shape = make_shape(str(rng.choice(category.shapes)), rng, half, layers * layer_h)
        tint = 1.0 + rng.uniform(-0.04, 0.04, 3)
        return cls(
            seed=seed,
            size=size,
            channels=ch,
            category=category,
            shape=shape,
            layers=layers,
            layer_h=layer_h,
            hatch=rng.uniform(0.09, 0.12),
            track=rng.uniform(1.2, 1.45),
            stripe=rng.uniform(1.0, 1.6),
            hatch0=rng.uniform(0, np.pi),
            contours=int(rng.choice([1, 2])),
            grain_r=rng.uniform(0.014, 0.02),
            packing=rng.uniform(1.1, 1.5),
            angle=rng.uniform(-0.2, 0.2),
            center_mm=(rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)),
            light=Light(rng.uniform(-0.5, 0.5) + np.pi * rng.integers(0, 2), rng.uniform(0.3, 0.5)),
            powder=colour(tuple(np.clip(np.array(category.material) * tint, 0, 1)), ch),
            metal=colour((0.56, 0.55, 0.53), ch),
            fused_gain=rng.uniform(0.9, 1.1),
            jitter_px=rng.uniform(0.3, 0.8),
            camera=Camera.sample(
                rng, size, exposure=(0.85, 1.05), gradient=(0.1, 0.3), vignette=(0.15, 0.35)
            ),
        )


def _cap_kernel(r: float) -> np.ndarray:
    """Height of a sphere of radius r (px) over each pixel, 4×4 supersampled."""
    n = int(np.ceil(r)) + 1
    o = (np.arange(4 * (2 * n + 1), dtype=np.float32) + 0.5) / 4 - (n + 0.5)
    h = np.sqrt(np.maximum(r * r - o[None, :] ** 2 - o[:, None] ** 2, 0.0))
    return h.reshape(2 * n + 1, 4, 2 * n + 1, 4).mean(axis=(1, 3))


@dataclass
class _Frame:
    radiance: np.ndarray
    sdf: np.ndarray
    cov: np.ndarray
    center: tuple[float, float]
    powder: np.ndarray  # shaded powder (H×W), for defects that expose or disturb it


class LpbfRenderer:
    """Renders any layer of one build job on its own."""

    process = "lpbf"

    def __init__(self, job: LpbfJob) -> None:
        self.job = job
        s = job.size
        self._base = ((np.arange(s, dtype=np.float32) + 0.5 - s / 2) * job.px_mm).astype(np.float32)
        r = job.grain_r / job.px_mm
        self._kernels = [(_cap_kernel(r * f), share, r * f) for f, share in GRAIN_CLASSES]

    @property
    def stage(self) -> str:
        return self.job.category.stage

    def jitter(self, layer: int) -> tuple[float, float]:
        d = rng_for(self.job.seed, "jitter", layer).normal(0.0, self.job.jitter_px, 2)
        return float(np.clip(d[0], -2, 2)), float(np.clip(d[1], -2, 2))

    def powder(self, layer: int, purpose: str = "recoat") -> np.ndarray:
        """Shaded powder of one recoat: fresh random grains every layer (H×W, mean ≈ 1)."""
        j = self.job
        s = j.size
        rng = rng_for(j.seed, purpose, layer)
        height = np.zeros((s, s), np.float32)
        for kern, share, r in self._kernels:
            n = int(j.packing * share * s * s / (np.pi * max(r, 0.5) ** 2))
            idx = rng.integers(0, s * s, n)
            w = rng.uniform(0.7, 1.0, n).astype(np.float32)
            pts = np.bincount(idx, w, s * s).astype(np.float32).reshape(s, s)
            np.maximum(height, cv2.filter2D(pts, cv2.CV_32F, kern), out=height)
        shade, spec = shade_heightfield(height, j.light, POWDER)
        occl = height / (height.max() + 1e-6)
        out = shade * (0.45 + 0.75 * occl) + spec
        return out * (1.0 / (out.mean() + 1e-6))

    def hatch_angle(self, layer: int) -> float:
        return float((self.job.hatch0 + layer * HATCH_ROTATION) % np.pi)

    def _section(self, xs: np.ndarray, ys: np.ndarray, z: float) -> np.ndarray:
        j = self.job
        c, s = math.cos(j.angle), math.sin(j.angle)
        x = (xs - j.center_mm[0])[None, :]
        y = (ys - j.center_mm[1])[:, None]
        return j.shape.sdf(c * x + s * y, c * y - s * x, z).astype(np.float32)

    def fused(
        self, layer: int, xs: np.ndarray, ys: np.ndarray, sdf: np.ndarray, width: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(shade, specular) of the exposed surface of ``layer``: contours and striped hatch."""
        j = self.job
        lt = j.light
        hx, hy, _ = lt.half
        t = -sdf
        hs = j.hatch
        # contours: level sets of the distance, like FDM perimeters
        gx, gy = gradient(sdf, j.px_mm)
        kc = t / hs
        rc = np.clip((kc - np.floor(kc) - 0.5) * 2.0 / (j.track * width), -1, 1)
        c_shade, c_spec = shade_profile(
            rc, -(gx * lt.lx + gy * lt.ly), -(gx * hx + gy * hy), lt, METAL
        )
        # hatch: tracks along u, stacked along v, in stripes across u
        th = self.hatch_angle(layer)
        c, s = math.cos(th), math.sin(th)
        u = (xs * c)[None, :] + (ys * s)[:, None]
        v = (ys * c)[:, None] - (xs * s)[None, :]
        k = np.rint(v / hs)
        rh = np.clip(2.0 * (v - k * hs) / (j.track * hs * width / hs), -1, 1)
        al, ah = -s * lt.lx + c * lt.ly, -s * hx + c * hy
        h_shade, h_spec = shade_profile(rh, al, ah, lt, METAL)
        direction = 2.0 * (k % 2) - 1.0  # bidirectional scanning: ripples point both ways
        ripple = np.cos(2 * np.pi * (direction * u / (0.7 * hs) + 1.5 * rh * rh))
        stripe = np.floor(u / j.stripe)
        relief = 0.7 + 0.3 * np.sqrt(1.0 - rh * rh)  # valleys between tracks are darker
        var = 1.0 + 0.08 * ripple + 0.06 * (hash01(stripe, layer % 7) - 0.5)
        shade = h_shade * relief * var
        seam = np.abs(u - (stripe + 0.5) * j.stripe) > 0.5 * j.stripe - 0.6 * j.px_mm
        shade = shade * (1.0 - 0.25 * seam)
        inner = (t > j.contours * hs).astype(np.float32)
        return inner * shade + (1 - inner) * c_shade, inner * h_spec + (1 - inner) * c_spec

    def _render(
        self, layer: int, ov: Overrides, stage: str | None = None, surface: int | None = None
    ) -> _Frame:
        """Layer ``layer``'s frame; ``surface`` (default the same) picks whose surface shows.

        Rendering the previous layer's surface in this layer's frame is what a short feed
        exposes: no fresh powder, last layer's melt tracks and powder.
        """
        j = self.job
        px = j.px_mm
        stage = stage or self.stage
        surface = layer if surface is None else surface
        dx, dy = self.jitter(layer)
        xs, ys = self._base + dx * px, self._base + dy * px
        sdf = self._section(xs, ys, j.z_mm(surface))
        cov = np.clip(0.5 - sdf / px, 0.0, 1.0)
        powder = self.powder(surface)
        wrng = rng_for(j.seed, "width", surface)
        width = 1.0 + 0.06 * smooth_noise(wrng, sdf.shape, 9)
        if ov.width_scale is not None:
            width = width * ov.width_scale
        if stage == "powder":
            # a thin fresh layer over the last exposure: the part barely shows through
            shade = powder * (1.0 - 0.05 * cov)
            rad = shade[..., None] * j.powder
        else:
            f_shade, f_spec = self.fused(surface, xs, ys, sdf, width)
            reach = 0.08 + 0.04 * np.abs(smooth_noise(wrng, sdf.shape, 6))
            denuded = np.clip(1.0 - sdf / reach, 0, 1)
            p = powder * (1.0 - 0.22 * denuded * (1 - cov))
            metal = cov * f_shade * j.fused_gain
            rad = (
                ((1 - cov) * p)[..., None] * j.powder
                + metal[..., None] * j.metal
                + (cov * f_spec)[..., None]
            )
        cx = j.center_mm[0] / px + j.size / 2 - 0.5 - dx
        cy = j.center_mm[1] / px + j.size / 2 - 0.5 - dy
        return _Frame(rad.astype(np.float32, copy=False), sdf, cov, (cx, cy), powder)

    def expected_outline(self, layer: int) -> np.ndarray:
        """The designed section of ``layer`` in the camera frame, uint8 H×W, 1 = material: what
        a slicer's outline of that layer shows (no registration jitter, no defect)."""
        j = self.job
        return (self._section(self._base, self._base, j.z_mm(layer)) < 0).astype(np.uint8)

    def context(self, layer: int) -> LayerContext:
        j = self.job
        f = self._render(layer, Overrides())
        return LayerContext(
            process="lpbf",
            stage=self.stage,
            layer=layer,
            z_mm=j.z_mm(layer),
            px_mm=j.px_mm,
            sdf=f.sdf,
            cov=f.cov,
            center=f.center,
            radius_px=j.shape.radius / j.px_mm,
            light=j.light,
            colors={
                "material": j.powder,
                "metal": j.metal,
                "oxide": colour((0.22, 0.2, 0.24), j.channels),
                "heat": colour((0.62, 0.5, 0.33), j.channels),
            },
            radiance=f.radiance,
            seed=j.seed,
            render=lambda ov: self._render(layer, ov).radiance,
            extras={
                "powder": f.powder,
                "previous_surface": lambda: (
                    self._render(layer, Overrides(), "fused", max(layer - 1, 0)).radiance
                ),
                "hatch_angle": self.hatch_angle(layer),
            },
        )
