"""LPBF defects: recoating faults seen in the powder, melting faults seen in the fused area.

The recoater moves along +x, so its streaks run along x and a short feed leaves the far (+x)
end of the bed under-dosed. Sizes scale with the part radius and the image size.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import effects as fx
from .defect_types import DefectInstance, DefectSpec
from .noise import smooth_noise
from .scene import LayerContext
from .shading import Surface, shade_heightfield

SHINY = Surface(0.25, 0.6, 1.2, 16)
DULL = Surface(0.2, 0.7, 0.1, 8)


def _px(ctx: LayerContext) -> float:
    """Pixels per 'reference pixel' (the sizes below are tuned at 256 px)."""
    return ctx.shape[0] / 256


def _relief(rad: np.ndarray, height: np.ndarray, ctx: LayerContext) -> np.ndarray:
    """Re-light ``rad`` for a surface deformed by ``height`` (px): grooves, dents, ridges."""
    shade, _ = shade_heightfield(height, ctx.light, Surface(0.3, 0.7, 0.0))
    return rad * (shade / (0.3 + 0.7 * ctx.light.sin_e))[..., None]


def _recoater_streak(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """A nicked blade or dragged particle ploughs grooves along the recoat direction."""
    h, w = ctx.shape
    xx = np.arange(w, dtype=np.float32)[None, :]
    yy = np.arange(h, dtype=np.float32)[:, None]
    width = (1.2 + 2.5 * d.severity) * min(d.extent, 1.6) * _px(ctx)
    groove = np.zeros((h, w), np.float32)
    for i in range(1 + int(2.5 * d.severity)):
        a = d.anchor(i)
        y0 = a.uniform(0.08, 0.92) * h
        wob = (
            0.8
            * _px(ctx)
            * np.sin(2 * np.pi * xx / (a.uniform(40, 120) * _px(ctx)) + a.uniform(0, 6))
        )
        depth = (1.0 + 1.5 * d.severity) * a.uniform(0.7, 1.0) * _px(ctx)
        groove += depth * np.exp(-(((yy - y0 - wob) / width) ** 2))
    groove *= 1.0 - 0.6 * ctx.cov * (ctx.stage == "fused")
    out = _relief(rad, -groove, ctx)
    return out * (1.0 - 0.12 * np.clip(groove, 0, 2))[..., None]


def _short_feed(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """Too little powder dosed: the far end of the stroke stays bare or thinly covered."""
    h, w = ctx.shape
    a = d.anchor()
    frac = (0.15 + 0.3 * d.severity) * min(d.extent, 1.5)
    wavy = smooth_noise(a, (h, 1), 4)[:, 0][:, None] * 6 * _px(ctx)
    xx = np.arange(w, dtype=np.float32)[None, :]
    edge = w * (1 - frac) + wavy
    band = np.clip((xx - edge) / 3.0 + 0.5, 0, 1)
    streaks = cv2.resize(smooth_noise(d.fresh(), (h, max(4, w // 16)), 6), (w, h))
    bare = np.clip(0.4 + 0.6 * streaks + d.severity * band, 0, 1)
    old = ctx.extras["previous_surface"]()
    if ctx.stage == "fused":  # the laser remelted the bare part surface: smoother, darker
        old = old * (1 - ctx.cov[..., None]) + rad * (0.8 * ctx.cov[..., None])
    thin = rad * 0.78
    content = thin + bare[..., None] * (old - thin)
    out = rad + band[..., None] * (content - rad)
    pile = np.exp(-(((xx - edge + 3 * _px(ctx)) / (2.5 * _px(ctx))) ** 2)) * 2.0 * _px(ctx)
    return _relief(out, pile.astype(np.float32), ctx)


def _super_elevation(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """Part edges curl above the powder line: a shiny raised rim, shadowed, plough wake."""
    h, w = ctx.shape
    a = d.anchor()
    theta = a.uniform(0, 2 * np.pi)
    half = (0.5 + 1.3 * d.severity) * d.extent
    xx = np.arange(w, dtype=np.float32)[None, :] - ctx.center[0]
    yy = np.arange(h, dtype=np.float32)[:, None] - ctx.center[1]
    dth = np.angle(np.exp(1j * (np.arctan2(yy, xx) - theta)))
    sector = np.clip((half - np.abs(dth)) / 0.3, 0, 1).astype(np.float32)
    t_px = -ctx.sdf / ctx.px_mm
    rim = np.exp(-(((t_px - 1.2 * _px(ctx)) / ((1.0 + d.severity) * _px(ctx))) ** 2))
    height = (rim * sector * (1.5 + 2.5 * d.severity) * _px(ctx)).astype(np.float32)
    out = fx.bumps(rad, height, ctx.color("metal"), ctx, SHINY, 0.6)
    if ctx.stage == "powder":  # the blade drags powder off behind the raised rim
        wake = cv2.blur(fx.shift(height, int(6 * _px(ctx)), 0), (int(12 * _px(ctx)) | 1, 3))
        out *= (1.0 - 0.25 * np.clip(wake, 0, 1) * (height < 0.3))[..., None]
    return out


def _spatter(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """Ejected melt droplets land around and on the part: bright beads, some oxidised."""
    f = d.fresh()
    n = 6 + int(24 * d.severity)
    pts = []
    for _ in range(n):
        x, y, nx, ny = ctx.edge_point(f.uniform(0, 2 * np.pi))
        out = f.exponential(0.25 * ctx.radius_px) if f.random() < 0.7 else -f.uniform(2, 30)
        pts.append((x + nx * out, y + ny * out))
    radii = (1.0 + 2.0 * f.random(n) ** 2) * (0.7 + 0.6 * d.severity) * _px(ctx)
    oxid = f.random(n) < 0.4
    out = rad
    for sel, color, surf in ((~oxid, "metal", SHINY), (oxid, "oxide", DULL)):
        if sel.any():
            hgt = fx.caps(ctx.shape, np.array(pts)[sel], radii[sel], f)
            out = fx.bumps(out, hgt, ctx.color(color), ctx, surf, 0.6)
    return out


def _porosity(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """Lack of fusion: pores between tracks and patches of unmelted powder in the melt."""
    a = d.anchor()
    c = ctx.material_point(a.uniform(0, 2 * np.pi), a.uniform(0.2, 0.7))
    f = d.fresh()
    spread = (0.12 + 0.15 * d.severity) * ctx.radius_px * min(d.extent, 2.0)
    hatch = ctx.extras.get("hatch_angle", 0.0)
    pores = np.zeros(ctx.shape, np.float32)
    for _ in range(4 + int(14 * d.severity)):
        p = (c[0] + f.normal(0, spread / 2), c[1] + f.normal(0, spread / 2))
        r = f.uniform(0.6, 1.8) * (0.6 + 0.8 * d.severity) * _px(ctx)
        w = fx.blob(ctx.shape, p, r, f, 0.4, 0.8, f.uniform(1.0, 3.0), hatch)
        np.maximum(pores, w, out=pores)
    patches = np.zeros(ctx.shape, np.float32)
    for _ in range(1 + int(2 * d.severity)):
        p = (c[0] + f.normal(0, spread / 3), c[1] + f.normal(0, spread / 3))
        r = f.uniform(2.0, 4.0) * (0.6 + 0.8 * d.severity) * _px(ctx)
        np.maximum(patches, fx.blob(ctx.shape, p, r, f, 0.5, 1.0, 2.0, hatch), out=patches)
    pores *= ctx.cov
    patches *= ctx.cov
    powder = ctx.extras["powder"][..., None] * ctx.color("material") * 0.8
    out = rad + patches[..., None] * (powder - rad)
    return fx.pits(out, pores, ctx, depth=2.5 * _px(ctx))


def _hot_spot(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """Local overheating (thin wall, corner, overhang): tracks melt together, heat tint."""
    a = d.anchor()
    c = ctx.material_point(a.uniform(0, 2 * np.pi), a.uniform(0.0, 0.3))
    r = (0.12 + 0.18 * d.severity) * ctx.radius_px * min(d.extent, 2.0)
    w = fx.blob(ctx.shape, c, r, a, 0.3, soft=0.6 * r) * ctx.cov
    smooth = cv2.GaussianBlur(rad, (0, 0), 1.8 * _px(ctx)).reshape(rad.shape)
    tint = np.minimum(ctx.color("heat") / np.maximum(ctx.color("metal"), 1e-3), 1.3)
    hot = smooth * tint * (0.75 - 0.25 * d.severity)
    out = rad + (w * (0.6 + 0.4 * d.severity))[..., None] * (hot - rad)
    return _relief(out, w * (1.5 + 2.0 * d.severity) * _px(ctx), ctx)


def _distortion(ctx: LayerContext, rad: np.ndarray, d: DefectInstance) -> np.ndarray:
    """Residual stress curls a corner up; through fresh powder the raised edge shows bare."""
    corner = ctx.corner_point(d.anchor().uniform(0, 2 * np.pi))
    radius = ctx.radius_px * (0.45 + 0.3 * d.severity)
    amount = (2.5 + 5.0 * d.severity) * d.extent * _px(ctx)
    out, wgt = fx.lift(rad, ctx, corner, radius, amount)
    if ctx.stage == "powder":
        t_px = -ctx.sdf / ctx.px_mm
        edge = np.exp(-(((t_px - 1.5 * _px(ctx)) / (2.0 * _px(ctx))) ** 2)) * wgt
        out = fx.bumps(out, edge * amount, ctx.color("metal"), ctx, SHINY, 0.6)
    return out


SPECS: tuple[DefectSpec, ...] = (
    DefectSpec(
        "recoater_streak",
        "lpbf",
        "grooves along the recoat direction (damaged blade)",
        paint=_recoater_streak,
        stages=("powder", "fused"),
        growth=0.05,
    ),
    DefectSpec(
        "short_feed",
        "lpbf",
        "far end of the stroke under-dosed: bare or thin powder",
        paint=_short_feed,
        stages=("powder", "fused"),
        lifetime=2,
    ),
    DefectSpec(
        "super_elevation",
        "lpbf",
        "part edges raised above the powder: shiny rim",
        paint=_super_elevation,
        stages=("powder", "fused"),
        growth=0.2,
    ),
    DefectSpec(
        "spatter",
        "lpbf",
        "ejected droplets around and on the part",
        paint=_spatter,
        stages=("powder", "fused"),
        lifetime=1,
    ),
    DefectSpec(
        "porosity",
        "lpbf",
        "lack-of-fusion pores and unmelted powder in the melt",
        paint=_porosity,
        stages=("fused",),
        growth=0.1,
    ),
    DefectSpec(
        "hot_spot",
        "lpbf",
        "overheated region: tracks merge, heat tint, bulge",
        paint=_hot_spot,
        stages=("fused",),
        growth=0.1,
    ),
    DefectSpec(
        "distortion",
        "lpbf",
        "a corner curls up; bare metal through the powder",
        paint=_distortion,
        stages=("powder", "fused"),
        growth=0.15,
    ),
)
