"""FDM defects: each a physical story told on the clean layer, scaled by severity.

Sizes are relative to the part (its bounding radius) and the bead width, so they look the
same at any image size. Placement comes from the defect's anchor stream: a defect stays where
it started while it persists or grows over the following layers.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import effects as fx
from .defect_types import DefectInstance, DefectSpec
from .noise import smooth_noise
from .scene import LayerContext, Overrides
from .shading import Surface


def _site(ctx: LayerContext, d: DefectInstance, depth: tuple[float, float] = (0.15, 0.6)):
    """The defect's anchor point on the part (fixed for its life) and the anchor stream."""
    a = d.anchor()
    theta, dep = a.uniform(0, 2 * np.pi), a.uniform(*depth)
    return ctx.material_point(theta, dep), theta, a


def _region(ctx: LayerContext, d: DefectInstance, size: float, soft: float = 0.4) -> np.ndarray:
    """Soft irregular patch of radius ``size`` × part radius around the anchor."""
    (cx, cy), _, a = _site(ctx, d)
    r = size * ctx.radius_px * min(d.extent, 2.0)
    return fx.blob(ctx.shape, (cx, cy), r, a, rough=0.35, soft=soft * r)


def _under_extrusion(ctx: LayerContext, d: DefectInstance) -> Overrides:
    """A partial clog: beads thin out and skip in a patch, showing the layer below."""
    w = _region(ctx, d, 0.18 + 0.2 * d.severity)
    skips = smooth_noise(d.anchor(), ctx.shape, 0.25 * ctx.shape[0] / ctx.extras["bead_px"])
    starve = 0.35 + 0.5 * d.severity
    scale = 1.0 - starve * w
    scale *= 1.0 - 0.9 * ((skips > 0.9 - 0.8 * d.severity) & (w > 0.5))
    return Overrides(width_scale=np.maximum(scale, 0.05).astype(np.float32))


def _over_extrusion_width(ctx: LayerContext, d: DefectInstance) -> Overrides:
    """Too much plastic: beads widen and merge over a patch."""
    w = _region(ctx, d, 0.18 + 0.2 * d.severity)
    return Overrides(width_scale=(1.0 + (0.6 + 0.9 * d.severity) * w).astype(np.float32))


def _over_extrusion_blobs(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """Zits: glossy lumps where excess plastic oozes, along the outline near the patch."""
    _, theta, a = _site(ctx, d)
    bead = ctx.extras["bead_px"]
    n = 3 + int(5 * d.severity)
    pts = [ctx.material_point(theta + a.normal(0, 0.3), a.uniform(0.0, 0.1)) for _ in range(n)]
    radii = bead * a.uniform(0.6, 1.0, n) * (0.9 + 0.8 * d.severity)
    h = fx.caps(ctx.shape, np.array(pts), radii, a, flatten=0.8)
    return fx.bumps(rad, h, ctx.color("material"), ctx, ctx.extras["surface"])


def _voids(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """Porosity: a cluster of small holes in the beads, dark inside."""
    (cx, cy), _, _ = _site(ctx, d, (0.0, 0.3))
    f = d.fresh()
    bead = ctx.extras["bead_px"]
    spread = (0.15 + 0.15 * d.severity) * ctx.radius_px * min(d.extent, 2.0)
    n = 3 + int(10 * d.severity)
    w = np.zeros(ctx.shape, np.float32)
    for _ in range(n):
        p = (cx + f.normal(0, spread / 2), cy + f.normal(0, spread / 2))
        r = bead * f.uniform(0.35, 0.8) * (0.6 + 0.8 * d.severity)
        e = f.uniform(1.0, 2.0)
        np.maximum(w, fx.blob(ctx.shape, p, r, f, 0.3, 0.8, e, f.uniform(0, np.pi)), out=w)
    w *= cv2.dilate(ctx.extras["beads"], np.ones((3, 3), np.uint8))
    return fx.pits(rad, w, ctx, depth=2.0 * bead)


def _crack(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """A crack running in from a corner, a dark gap with a lit lip; it grows longer."""
    a = d.anchor()
    x, y = ctx.corner_point(a.uniform(0, 2 * np.pi))
    inward = np.arctan2(ctx.center[1] - y, ctx.center[0] - x) + a.normal(0, 0.3)
    step = max(1.0, ctx.shape[0] / 128)
    full = int(ctx.radius_px * (0.35 + 0.4 * d.severity) * 2.5 / step)
    start = (x - 2 * np.cos(inward), y - 2 * np.sin(inward))
    path = fx.random_walk(a, start, inward, full, step, 0.25, 0.1)
    n = max(3, int(full / 2.5 * d.extent))
    lines = [path[:n]]
    if d.severity > 0.5 and n > 8:
        k = n // 2
        branch = inward + a.choice([-1, 1]) * 0.8
        lines.append(fx.random_walk(a, tuple(path[k]), branch, n // 3, step, 0.3, 0.1))
    width = (1.2 + 2.0 * d.severity) * ctx.shape[0] / 256
    # it splits the layers below too, so it shows (dimmer) between infill lines as well
    gap = fx.curves(ctx.shape, lines, width) * ctx.cov * (0.6 + 0.4 * ctx.extras["beads"])
    lx, ly = ctx.light.shadow_offset(-1.5)
    lip = np.clip(fx.shift(gap, lx, ly) - gap, 0, 1) * ctx.cov
    out = rad * (1.0 - 0.85 * gap)[..., None]
    return out * (1.0 + 0.35 * lip)[..., None]


def _layer_shift(ctx: LayerContext, d: DefectInstance) -> Overrides:
    """The head skipped steps on one axis: every layer from the onset is offset."""
    a = d.anchor()
    axis = a.integers(0, 2)
    mag = (0.25 + 0.85 * d.severity) * a.choice([-1, 1])
    return Overrides(shift_mm=(mag * (axis == 0), mag * (axis == 1)), shift_from=d.onset)


def _warping(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """A corner curls up off the bed: magnified, tilted, blurred, with a gap under it."""
    corner = ctx.corner_point(d.anchor().uniform(0, 2 * np.pi))
    radius = ctx.radius_px * (0.45 + 0.3 * d.severity)
    amount = (2.5 + 5.0 * d.severity) * d.extent * ctx.shape[0] / 256
    out, _ = fx.lift(rad, ctx, corner, radius, amount)
    return out


def _strings(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """Stringing: hairs of plastic pulled across travel moves; as it grows, spaghetti loops."""
    base = 2 + int(5 * d.severity)
    n = int(base * d.extent)
    lines = []
    for i in range(n):  # one stream per strand: strands persist as more are added
        a = d.anchor(i)
        t0 = a.uniform(0, 2 * np.pi)
        p0 = np.array(ctx.material_point(t0, a.uniform(0.0, 0.5)))
        p2 = np.array(ctx.material_point(t0 + np.pi + a.normal(0, 0.8), a.uniform(0.0, 0.8)))
        if i >= base or (d.severity > 0.8 and i % 2):
            ang = float(np.arctan2(*(p2 - p0)[::-1]))
            lines.append(fx.random_walk(a, tuple(p0), ang, 60, 1.5, 0.35, 0.02))
        else:
            mid = (p0 + p2) / 2 + a.normal(0, 0.15, 2) * np.linalg.norm(p2 - p0)
            lines.append(fx.bezier(p0, mid, p2))
    thick = max(1.0, (0.8 + 0.8 * d.severity) * ctx.shape[0] / 256)
    cov = fx.curves(ctx.shape, lines, thick)
    height = cov * (1.5 + thick)
    gloss = Surface(0.35, 0.7, 0.5, 16)
    return fx.bumps(rad, height, ctx.color("material"), ctx, gloss, 0.45, 6 * thick)


def _contamination(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """Debris on the part: charred bits from the nozzle or foreign filament crumbs."""
    (cx, cy), _, a = _site(ctx, d, (0.2, 0.8))
    bead = ctx.extras["bead_px"]
    n = 2 + int(7 * d.severity)
    spread = ctx.radius_px * (0.08 + 0.12 * d.severity)
    cand = np.stack([cx + a.normal(0, spread, 4 * n), cy + a.normal(0, spread, 4 * n)], 1)
    h, w = ctx.shape
    ix = np.clip(cand.astype(int), 0, [w - 1, h - 1])
    on = cand[ctx.cov[ix[:, 1], ix[:, 0]] > 0.5][:n]  # debris that matters lies on the part
    pts = on if len(on) else np.array([[cx, cy]])
    n = len(pts)
    radii = bead * a.uniform(0.3, 0.8, n) * (0.6 + 0.8 * d.severity)
    h = fx.caps(ctx.shape, pts, radii, a, flatten=0.6)
    color = ctx.color("soot") if a.random() < 0.6 else ctx.color("foreign")
    return fx.bumps(rad, h, color, ctx, Surface(0.3, 0.8, 0.1, 8))


def _burn(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """Scorch: the hot nozzle dwelt here; plastic browns, texture stays."""
    (cx, cy), _, a = _site(ctx, d, (0.0, 0.15))
    r = (0.1 + 0.14 * d.severity) * ctx.radius_px
    w = fx.blob(ctx.shape, (cx, cy), r, a, rough=0.35, soft=0.8 * r) * ctx.cov
    tint = ctx.color("burn") / np.maximum(ctx.color("material"), 1e-3)
    strength = 0.55 + 0.45 * d.severity
    w = cv2.GaussianBlur(w, (0, 0), 1.0) * strength
    return rad * (1.0 + w[..., None] * (np.minimum(tint, 1.0) - 1.0))


SPECS: tuple[DefectSpec, ...] = (
    DefectSpec(
        "under_extrusion",
        "fdm",
        "beads thin and skip in a patch (partial clog)",
        override=_under_extrusion,
        growth=0.15,
    ),
    DefectSpec(
        "over_extrusion",
        "fdm",
        "beads widen and merge; glossy zits on the outline",
        override=_over_extrusion_width,
        paint=_over_extrusion_blobs,
        lifetime=3,
    ),
    DefectSpec("voids", "fdm", "cluster of small holes (porosity)", paint=_voids, growth=0.1),
    DefectSpec("crack", "fdm", "dark gap running in from the edge", paint=_crack, growth=0.25),
    DefectSpec(
        "layer_shift",
        "fdm",
        "all layers from the onset offset along X or Y",
        override=_layer_shift,
    ),
    DefectSpec(
        "warping",
        "fdm",
        "a corner lifts: magnified, tilted, gap below",
        paint=_warping,
        growth=0.15,
    ),
    DefectSpec(
        "stringing",
        "fdm",
        "thin strands across the part; grows into spaghetti",
        paint=_strings,
        growth=0.3,
        max_extent=3.0,
    ),
    DefectSpec(
        "contamination",
        "fdm",
        "charred or foreign debris on the part",
        paint=_contamination,
        lifetime=2,
    ),
    DefectSpec("burn", "fdm", "brown scorch mark (nozzle dwell)", paint=_burn, lifetime=2),
)
