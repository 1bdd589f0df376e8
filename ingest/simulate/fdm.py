"""FDM: what a camera above the bed sees after each layer.

The part's cross-section at the layer's height is a signed distance field; its level sets are
the perimeter loops, and straight (or wavy) line families in bed coordinates are the infill,
following slicer conventions. Every bead is shaded as a cylinder under the job's light
(bright crest, lit and shadowed flanks, dark valleys), with width jitter. Between sparse
infill lines the layer below shows, darker; outside the section the lower layers' ledges or
the bed show, with the part's cast shadow.
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
from .shading import Light, Surface, gradient, shade_profile
from .shapes import Shape, make_shape

FOV_MM = 22.0  # field of view across the image: a 0.45 mm bead is ~5 px at 256 px
FLOOR = 0.26  # shade of the deep inside of sparse infill cells (far below, little light)
BELOW = 0.7  # shade factor of the layer under the current one, seen between infill lines
LEDGE = 0.72  # shade factor of lower layers' top surfaces outside the current section


@dataclass(frozen=True)
class Family:
    """A family of parallel infill lines (wavy when ``amp`` > 0), in bed coordinates (mm)."""

    theta: float
    spacing: float
    amp: float = 0.0
    period: float = 1.0
    phase: float = 0.0

    def lines(
        self, xs: np.ndarray, ys: np.ndarray, light: Light
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | float, np.ndarray | float]:
        """(signed distance to the nearest line in mm, its index, across·light, across·half)."""
        c, s = math.cos(self.theta), math.sin(self.theta)
        hx, hy, _ = light.half
        u = (xs * c)[None, :] + (ys * s)[:, None]
        if self.amp == 0.0:
            k = np.rint(u / self.spacing)
            return u - k * self.spacing, k, c * light.lx + s * light.ly, c * hx + s * hy
        arg = (ys * c)[:, None] - (xs * s)[None, :]
        arg = arg * (2 * np.pi / self.period) + self.phase
        u = u + self.amp * np.sin(arg)
        g = (self.amp * 2 * np.pi / self.period) * np.cos(arg)
        inv = 1.0 / np.sqrt(1.0 + g * g)
        k = np.rint(u / self.spacing)
        ax, ay = (c + g * s) * inv, (s - g * c) * inv
        return (u - k * self.spacing) * inv, k, ax * light.lx + ay * light.ly, ax * hx + ay * hy


@dataclass(frozen=True, eq=False)
class FdmJob:
    """Everything fixed for one print job (drawn from the category and the job seed)."""

    seed: int
    size: int
    channels: int
    category: Category
    shape: Shape
    layers: int
    layer_h: float
    bead_w: float
    perimeters: int
    density: float
    angle: float
    center_mm: tuple[float, float]
    light: Light
    surface: Surface
    filament: np.ndarray
    bed: np.ndarray
    bed_texture: str
    width_jitter: float
    bottom_layers: int
    jitter_px: float
    seam: float  # direction (from the part centre) of the aligned Z seam
    camera: Camera = field(repr=False)

    @property
    def px_mm(self) -> float:
        return FOV_MM / self.size

    def z_mm(self, layer: int) -> float:
        return round((layer + 1) * self.layer_h, 4)

    @classmethod
    def sample(cls, category: Category, seed: int, size: int, layers: int, rgb: bool) -> FdmJob:
        rng = rng_for(seed, "fdm-job")
        ch = 3 if rgb else 1
        layer_h = float(rng.choice([0.16, 0.2, 0.2, 0.24, 0.28]))
        half = FOV_MM * rng.uniform(0.3, 0.37)
        shape = make_shape(str(rng.choice(category.shapes)), rng, half, layers * layer_h)
        tint = 1.0 + rng.uniform(-0.05, 0.05, 3)
        bed_kind = str(rng.choice(["textured", "textured", "smooth"]))
        bed_rgb = (0.33, 0.25, 0.12) if bed_kind == "textured" else (0.55, 0.45, 0.22)
        return cls(
            seed=seed,
            size=size,
            channels=ch,
            category=category,
            shape=shape,
            layers=layers,
            layer_h=layer_h,
            bead_w=rng.uniform(0.42, 0.48),
            perimeters=int(rng.choice([2, 3])),
            density=rng.uniform(0.15, 0.25),
            angle=rng.uniform(-0.2, 0.2),
            center_mm=(rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5)),
            light=Light(rng.uniform(0, 2 * np.pi), rng.uniform(0.7, 1.1)),
            surface=Surface(0.25, rng.uniform(0.62, 0.75), rng.uniform(0.12, 0.3), 16),
            filament=colour(tuple(np.clip(np.array(category.material) * tint, 0, 1)), ch),
            bed=colour(bed_rgb, ch) * rng.uniform(0.85, 1.15),
            bed_texture=bed_kind,
            width_jitter=rng.uniform(0.04, 0.09),
            bottom_layers=3,
            jitter_px=rng.uniform(0.3, 0.8),
            seam=rng.uniform(0, 2 * np.pi),
            camera=Camera.sample(
                rng, size, exposure=(0.85, 1.05), gradient=(0.05, 0.2), vignette=(0.1, 0.3)
            ),
        )


@dataclass
class _Top:
    shade: np.ndarray
    spec: np.ndarray
    sdf: np.ndarray
    cov: np.ndarray
    beads: np.ndarray  # where the layer's beads are (vs gaps showing what is below)
    facing: np.ndarray  # outline normal · light: slopes around the section lit or not


@dataclass
class _Frame:
    radiance: np.ndarray
    sdf: np.ndarray
    cov: np.ndarray
    center: tuple[float, float]
    beads: np.ndarray  # where the top layer's beads are (vs gaps showing what is below)


def _shifted(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``a`` moved by (dx, dy) pixels, zero-filled."""
    h, w = a.shape
    out = np.zeros_like(a)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


class FdmRenderer:
    """Renders any layer of one job on its own (no state carried between layers)."""

    process = "fdm"

    def __init__(self, job: FdmJob) -> None:
        self.job = job
        s = job.size
        self._base = ((np.arange(s, dtype=np.float32) + 0.5 - s / 2) * job.px_mm).astype(np.float32)
        self._sections: dict[tuple, np.ndarray] = {}
        rng = rng_for(job.seed, "fdm-textures")
        self._bed = self._bed_texture(rng)
        self._floor = self._floor_texture(rng)

    def _bed_texture(self, rng: np.random.Generator) -> np.ndarray:
        s = self.job.size
        fine = cv2.GaussianBlur(rng.standard_normal((s, s)).astype(np.float32), (0, 0), 1.0)
        fine /= fine.std() + 1e-6
        amp = 0.15 if self.job.bed_texture == "textured" else 0.03
        return (1.0 + amp * fine + 0.06 * smooth_noise(rng, (s, s), 4, 2)).astype(np.float32)

    def _floor_texture(self, rng: np.random.Generator) -> np.ndarray:
        """The part's inside far below sparse infill: the bottom skin, dim and out of focus."""
        j = self.job
        shade, _, _ = self._infill(
            [Family(np.pi / 4, j.bead_w * 0.98)],
            self._base,
            self._base,
            np.full((j.size, j.size), j.bead_w, np.float32),
        )
        skin = cv2.GaussianBlur(shade, (0, 0), 1.5 * j.size / 256)
        skin *= 1.0 / (skin.mean() + 1e-6)
        return (FLOOR * skin * (1.0 + 0.3 * smooth_noise(rng, skin.shape, 5, 2))).astype(np.float32)

    # -- geometry -------------------------------------------------------------------------
    def jitter(self, layer: int) -> tuple[float, float]:
        """Registration jitter of this layer's frame, pixels (sub-pixel to ~2 px)."""
        d = rng_for(self.job.seed, "jitter", layer).normal(0.0, self.job.jitter_px, 2)
        return float(np.clip(d[0], -2, 2)), float(np.clip(d[1], -2, 2))

    def _section(
        self, xs: np.ndarray, ys: np.ndarray, z: float, shift: tuple[float, float]
    ) -> np.ndarray:
        """Signed distance to the section at z on the grid (xs, ys); the last few are kept,
        since a defect's re-render and the footprints ask for the same ones again."""
        key = (float(xs[0]), float(ys[0]), len(xs), z, shift)
        if key in self._sections:
            return self._sections[key]
        j = self.job
        c, s = math.cos(j.angle), math.sin(j.angle)
        x = (xs - j.center_mm[0] - shift[0])[None, :]
        y = (ys - j.center_mm[1] - shift[1])[:, None]
        d = j.shape.sdf(c * x + s * y, c * y - s * x, z).astype(np.float32)
        d.flags.writeable = False
        if len(self._sections) >= 8:
            self._sections.pop(next(iter(self._sections)))
        self._sections[key] = d
        return d

    def _footprint(
        self, xs: np.ndarray, ys: np.ndarray, layer: int, ov: Overrides
    ) -> np.ndarray | None:
        """Union of lower sections visible around this one (half resolution, upsampled)."""
        j = self.job
        z = j.z_mm(layer)
        heights = [(h, ov.shift_at(round(h / j.layer_h) - 1)) for h in j.shape.footprint_heights(z)]
        if not heights:
            return None
        if len(xs) % 2:  # odd sizes: full resolution
            return np.min([self._section(xs, ys, h, sh) for h, sh in heights], axis=0)
        hx, hy = xs.reshape(-1, 2).mean(1), ys.reshape(-1, 2).mean(1)
        d = np.min([self._section(hx, hy, h, sh) for h, sh in heights], axis=0)
        return cv2.resize(d, (len(xs), len(ys)), interpolation=cv2.INTER_LINEAR)

    def families(self, layer: int) -> list[Family]:
        """Infill line families of a layer, following slicer conventions."""
        j = self.job
        w, dens = j.bead_w, j.density
        if layer < j.bottom_layers:
            return [Family(np.pi / 4 + (layer % 2) * np.pi / 2, w * 0.98)]
        pattern = j.category.infill
        if pattern == "rectilinear":
            return [Family(np.pi / 4 + (layer % 2) * np.pi / 2, w / dens)]
        if pattern == "grid":
            return [Family(np.pi / 4, 2 * w / dens), Family(3 * np.pi / 4, 2 * w / dens)]
        if pattern == "triangles":
            return [Family(np.pi / 6 + i * np.pi / 3, 3 * w / dens) for i in range(3)]
        if pattern == "gyroid":
            z = j.z_mm(layer)
            sp = 1.2 * w / dens
            period = 2.0 * sp
            turn = int(z / period) % 2  # the wave direction flips every half gyroid cell
            amp = sp * (0.15 + 0.3 * abs(math.cos(math.pi * z / period)))
            return [Family(turn * np.pi / 2, sp, amp, period, 2 * np.pi * z / period)]
        return []

    # -- rendering --------------------------------------------------------------------------
    def _infill(
        self,
        fams: list[Family],
        xs: np.ndarray,
        ys: np.ndarray,
        width: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(shade, specular, bead presence) of the top-most bead of the line families."""
        j = self.job
        best_h2 = best_r = best_al = best_ah = None
        for i, fam in enumerate(fams):
            q, k, al, ah = fam.lines(xs, ys, j.light)
            wl = width * (1.0 + 0.1 * (hash01(k, i + j.seed % 97) - 0.5))
            r = 2.0 * q / wl
            h2 = 1.0 - r * r
            if best_h2 is None:
                best_h2, best_r, best_al, best_ah = h2, r, al, ah
                continue
            m = (h2 > best_h2).astype(np.float32)
            best_h2 = np.maximum(best_h2, h2)
            best_r = best_r + m * (r - best_r)
            best_al = best_al + m * (al - best_al)
            best_ah = best_ah + m * (ah - best_ah)
        present = (best_h2 > 0).astype(np.float32)
        shade, spec = shade_profile(np.clip(best_r, -1, 1), best_al, best_ah, j.light, j.surface)
        return shade, spec, present

    def _top(
        self,
        layer: int,
        xs: np.ndarray,
        ys: np.ndarray,
        shift: tuple[float, float],
        wj: np.ndarray,
        shift_below: tuple[float, float] | None = None,
    ) -> _Top:
        """The top surface of ``layer``'s section: perimeters, infill and what shows between
        (the layer below, offset by ``shift_below``, default ``shift``)."""
        j = self.job
        px, lt = j.px_mm, j.light
        sdf = self._section(xs, ys, j.z_mm(layer), shift)
        t = -sdf
        cov = np.clip(0.5 + t / px, 0.0, 1.0)
        # perimeters: level sets of the distance; +r points inward (against the gradient)
        sp = j.bead_w - j.layer_h * (1 - np.pi / 4)
        gx, gy = gradient(sdf, px)
        hx, hy, _ = lt.half
        kp = t / sp
        rp = (kp - np.floor(kp) - 0.5) * (2.0 * sp / j.bead_w) / (wj * self._seam(xs, ys, shift))
        p_on = (np.abs(rp) < 1.0).astype(np.float32)
        p_shade, p_spec = shade_profile(
            np.clip(rp, -1, 1), -(gx * lt.lx + gy * lt.ly), -(gx * hx + gy * hy), lt, j.surface
        )
        p_shade = p_on * p_shade + (1 - p_on) * (j.surface.ambient * BELOW)
        p_spec *= p_on
        # inside the perimeters: infill (or, walls only, the dark inside of the part)
        inner = (t > j.perimeters * sp - 0.15 * j.bead_w).astype(np.float32)
        fams = [] if j.shape.hollow and layer >= j.bottom_layers else self.families(layer)
        width = j.bead_w * wj
        if fams:  # a shifted head lays its infill shifted too
            i_shade, i_spec, i_on = self._infill(fams, xs - shift[0], ys - shift[1], width)
            sb = shift if shift_below is None else shift_below
            below = self._below(layer, xs - sb[0], ys - sb[1], width)
            i_shade = i_on * i_shade + (1 - i_on) * below
            i_spec *= i_on
        else:
            i_shade, i_spec, i_on = self._floor, 0.0, 0.0
        return _Top(
            shade=inner * i_shade + (1 - inner) * p_shade,
            spec=cov * (inner * i_spec + (1 - inner) * p_spec),
            sdf=sdf,
            cov=cov,
            beads=cov * (inner * i_on + (1 - inner) * p_on),
            facing=np.clip(gx * lt.lx + gy * lt.ly, -1.0, 1.0),
        )

    def _render(self, layer: int, ov: Overrides) -> _Frame:
        j = self.job
        px, lt = j.px_mm, j.light
        z = j.z_mm(layer)
        dx, dy = self.jitter(layer)
        xs, ys = self._base + dx * px, self._base + dy * px
        shift = ov.shift_at(layer)
        wrng = rng_for(j.seed, "width", layer)
        wj = 1.0 + j.width_jitter * smooth_noise(wrng, (j.size, j.size), 7, 2)
        wj += 0.04 * smooth_noise(wrng, (j.size, j.size), j.size / 6)
        if ov.width_scale is not None:
            wj = wj * ov.width_scale
        top = self._top(layer, xs, ys, shift, wj, ov.shift_at(layer - 1))
        cov = top.cov
        fil = cov * top.shade
        spec = top.spec

        # outside the section: lower layers (their top, a ledge), else the bed; all shadowed
        outside = 1.0 - cov
        shadow_px = min(z / math.tan(lt.elevation) / px, 8.0 * j.size / 256)
        ox, oy = lt.shadow_offset(shadow_px)
        shadow = cv2.blur(_shifted(cov, ox, oy), (5, 5))
        lit = 1.0 - 0.55 * np.clip(shadow - cov, 0.0, 1.0)
        if ov.shift_from is not None and 0 < ov.shift_from <= layer:
            # the last layer printed before the shift sticks out from under the new ones
            prev = self._top(ov.shift_from - 1, xs, ys, (0.0, 0.0), wj)
            step = outside * prev.cov
            depth = max(LEDGE, 0.95 - 0.03 * (layer - ov.shift_from))
            fil = fil + step * depth * prev.shade * lit
            spec = spec + step * depth * prev.spec
            outside = outside - step
        low = self._footprint(xs, ys, layer, ov)
        if low is not None:
            lcov = np.clip(0.5 - low / px, 0.0, 1.0) * outside
            fam = Family(np.pi / 4 + (layer % 2) * np.pi / 2, j.bead_w * 0.98)
            l_shade, _, _ = self._infill([fam], xs, ys, j.bead_w * wj)
            # lower, out of focus and sloping: a faint skin texture, lit where facing the lamp
            mean = j.surface.ambient + j.surface.diffuse * lt.sin_e
            l_shade = (mean + 0.35 * (l_shade - mean)) * (1.0 + 0.3 * top.facing)
            fil = fil + lcov * LEDGE * l_shade * lit
            outside = outside - lcov
        m = np.float32([[1, 0, -dx], [0, 1, -dy]])
        bed = cv2.warpAffine(
            self._bed, m, (j.size, j.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        bed *= outside * lit
        rad = fil[..., None] * j.filament + bed[..., None] * j.bed + spec[..., None]
        cx = (j.center_mm[0] + shift[0]) / px + j.size / 2 - 0.5 - dx
        cy = (j.center_mm[1] + shift[1]) / px + j.size / 2 - 0.5 - dy
        return _Frame(rad.astype(np.float32, copy=False), top.sdf, cov, (cx, cy), top.beads)

    def _seam(self, xs: np.ndarray, ys: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
        """Width factor of the perimeters: loops start and end on one line, leaving a notch."""
        j = self.job
        c, s = math.cos(j.seam + j.angle), math.sin(j.seam + j.angle)
        x = (xs - j.center_mm[0] - shift[0])[None, :]
        y = (ys - j.center_mm[1] - shift[1])[:, None]
        across = (x * s - y * c) / (0.7 * j.bead_w)
        ahead = (x * c + y * s) > 0
        return 1.0 - 0.4 * ahead * np.exp(-across * across)

    def _below(self, layer: int, xs: np.ndarray, ys: np.ndarray, width: np.ndarray) -> np.ndarray:
        """Shade seen between sparse infill lines: the previous layer's infill, or deep cells."""
        j = self.job
        pattern = j.category.infill
        if layer < 1 or layer < j.bottom_layers or pattern not in ("rectilinear", "gyroid"):
            return self._floor
        shade, _, on = self._infill(self.families(layer - 1), xs, ys, width)
        return on * (BELOW * shade) + (1 - on) * self._floor

    def expected_outline(self, layer: int) -> np.ndarray:
        """The designed section of ``layer`` in the camera frame, uint8 H×W, 1 = material: what
        a slicer's outline of that layer shows (no registration jitter, no defect)."""
        j = self.job
        return (self._section(self._base, self._base, j.z_mm(layer), (0.0, 0.0)) < 0).astype(
            np.uint8
        )

    def context(self, layer: int) -> LayerContext:
        """Render the clean layer and describe it for the defects."""
        j = self.job
        f = self._render(layer, Overrides())
        return LayerContext(
            process="fdm",
            stage="top",
            layer=layer,
            z_mm=j.z_mm(layer),
            px_mm=j.px_mm,
            sdf=f.sdf,
            cov=f.cov,
            center=f.center,
            radius_px=j.shape.radius / j.px_mm,
            light=j.light,
            colors={
                "material": j.filament,
                "soot": colour((0.10, 0.08, 0.06), j.channels),
                "burn": colour((0.32, 0.18, 0.07), j.channels),
                "foreign": colour((0.15, 0.35, 0.2), j.channels),
            },
            radiance=f.radiance,
            seed=j.seed,
            render=lambda ov: self._render(layer, ov).radiance,
            extras={"bead_px": j.bead_w / j.px_mm, "surface": j.surface, "beads": f.beads},
        )
