"""Image-space building blocks shared by the FDM and LPBF defects.

Irregular blobs, thin curves, raised bumps that catch the light and cast a shadow, pits, and
a lifted region (warping / distortion). They work on radiance (H×W×C float32) before the
camera, so the camera's blur, lighting and noise apply to a defect as to everything else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from .scene import LayerContext
from .shading import Surface, shade_heightfield

BUMP = Surface(0.25, 0.8, 0.35, 16)


def _bbox(shape: tuple[int, int], cx: float, cy: float, r: float) -> tuple[slice, slice]:
    h, w = shape
    x0, x1 = max(0, int(cx - r) - 2), min(w, int(cx + r) + 3)
    y0, y1 = max(0, int(cy - r) - 2), min(h, int(cy + r) + 3)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def blob(
    shape: tuple[int, int],
    center: tuple[float, float],
    radius: float,
    rng: np.random.Generator,
    rough: float = 0.3,
    soft: float = 1.0,
    elongation: float = 1.0,
    angle: float = 0.0,
    dome: bool = False,
) -> np.ndarray:
    """Weight in [0, 1] of an irregular blob: 1 inside, a ramp ``soft`` px wide at the edge.

    The outline is a circle perturbed by a few random harmonics, optionally stretched by
    ``elongation`` along ``angle``; a large ``soft`` gives a smooth falloff (stains, heat).
    With ``dome`` the weight is instead a spherical profile, 1 at the centre, 0 at the edge.
    """
    cx, cy = center
    out = np.zeros(shape, np.float32)
    reach = radius * max(elongation, 1.0) * (1 + rough) + soft
    ys, xs = _bbox(shape, cx, cy, reach)
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return out
    yy = np.arange(ys.start, ys.stop, dtype=np.float32)[:, None] - cy
    xx = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :] - cx
    c, s = math.cos(angle), math.sin(angle)
    u, v = (xx * c + yy * s) / elongation, yy * c - xx * s
    rho = np.sqrt(u * u + v * v)
    th = np.arctan2(v, u)
    k = np.arange(2, 7)
    amp = rng.normal(0, rough / np.sqrt(len(k)), len(k)) / k * 2
    ph = rng.uniform(0, 2 * np.pi, len(k))
    edge = radius * (1.0 + np.tensordot(amp, np.cos(k[:, None, None] * th + ph[:, None, None]), 1))
    if dome:
        f = np.clip(rho / edge, 0.0, 1.0)
        out[ys, xs] = np.sqrt(1.0 - f * f)
    else:
        out[ys, xs] = np.clip((edge - rho) / soft + 0.5, 0.0, 1.0)
    return out


def curves(shape: tuple[int, int], lines: Sequence[np.ndarray], thickness: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of polylines (points in pixels, sub-pixel precise)."""
    canvas = np.zeros(shape, np.uint8)
    pts = [np.round(np.asarray(p) * 16).astype(np.int32) for p in lines if len(p) > 1]
    t = max(1, round(thickness))
    cv2.polylines(canvas, pts, False, 255, t, cv2.LINE_AA, shift=4)
    cov = canvas.astype(np.float32) * (1.0 / 255)
    if thickness < 1.0:
        cov *= thickness
    return cov


def random_walk(
    rng: np.random.Generator,
    start: tuple[float, float],
    angle: float,
    steps: int,
    step: float,
    turn: float,
    pull: float = 0.0,
) -> np.ndarray:
    """Points of a walk turning by N(0, turn) per step, pulled back toward its first heading."""
    a = np.empty(steps)
    cur = angle
    for i in range(steps):
        cur += rng.normal(0, turn) + pull * (angle - cur)
        a[i] = cur
    p = np.cumsum(np.stack([np.cos(a), np.sin(a)], 1) * step, 0) + np.asarray(start)
    return np.vstack([np.asarray(start)[None], p])


def bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 32) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t * t * p2


def shift(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``a`` (H×W) moved by whole pixels, zero-filled."""
    h, w = a.shape[:2]
    out = np.zeros_like(a)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def cast_shadow(cov: np.ndarray, ctx: LayerContext, length: float, soft: int = 3) -> np.ndarray:
    """Where an object of coverage ``cov`` raised by ``length`` px darkens what is below."""
    ox, oy = ctx.light.shadow_offset(length)
    s = shift(cov, ox, oy)
    if soft > 1:
        s = cv2.blur(s, (soft, soft))
    return np.clip(s - cov, 0.0, 1.0)


def bumps(
    rad: np.ndarray,
    height: np.ndarray,
    color: np.ndarray,
    ctx: LayerContext,
    surface: Surface = BUMP,
    shadow: float = 0.55,
    shadow_len: float | None = None,
) -> np.ndarray:
    """Raised objects (blobs, grains, strands) of ``height`` px: shaded, opaque, shadowing."""
    cov = np.clip(height * 2.0, 0.0, 1.0)
    shade, spec = shade_heightfield(height, ctx.light, surface)
    length = float(height.max()) / max(math.tan(ctx.light.elevation), 0.2)
    sh = cast_shadow(cov, ctx, shadow_len if shadow_len is not None else length)
    base = rad * (1.0 - shadow * sh)[..., None]
    obj = shade[..., None] * color + spec[..., None]
    return base + cov[..., None] * (obj - base)


def caps(
    shape: tuple[int, int],
    centers: np.ndarray,
    radii: np.ndarray,
    rng: np.random.Generator,
    flatten: float = 1.0,
) -> np.ndarray:
    """Height field (px) of roughly spherical lumps at ``centers`` (N×2, x y)."""
    out = np.zeros(shape, np.float32)
    for (cx, cy), r in zip(centers, radii, strict=True):
        np.maximum(out, flatten * r * blob(shape, (cx, cy), r, rng, 0.25, dome=True), out=out)
    return out


def pits(rad: np.ndarray, weight: np.ndarray, ctx: LayerContext, depth: float) -> np.ndarray:
    """Holes of ``weight`` (0..1): dark bottoms, the wall facing the light lit, rims shaded."""
    depth_px = depth * weight
    shade, _ = shade_heightfield(-depth_px, ctx.light, Surface(0.3, 0.7, 0.0))
    flat = 0.3 + 0.7 * ctx.light.sin_e
    factor = (shade / flat) * (1.0 - 0.7 * weight)
    return rad * factor[..., None]


def lift(
    rad: np.ndarray,
    ctx: LayerContext,
    corner: tuple[float, float],
    radius: float,
    amount: float,
    blur: float = 1.6,
) -> tuple[np.ndarray, np.ndarray]:
    """A region around ``corner`` raised off the layer below (warping, distortion).

    Raised material comes closer to the camera: it is magnified outward, slightly out of
    focus, tilted (brighter or darker depending on the light) and leaves a dark gap under
    its edge. Returns (radiance, lift weight).
    """
    h, w = ctx.shape
    cx, cy = corner
    ux, uy = cx - ctx.center[0], cy - ctx.center[1]
    n = math.hypot(ux, uy) or 1.0
    ux, uy = ux / n, uy / n
    jj = np.arange(w, dtype=np.float32)[None, :]
    ii = np.arange(h, dtype=np.float32)[:, None]
    dist = np.sqrt((jj - cx) ** 2 + (ii - cy) ** 2)
    wgt = np.clip(1.0 - dist / radius, 0.0, 1.0) ** 2
    disp = wgt * amount
    mx = (jj - disp * ux).astype(np.float32)
    my = (ii - disp * uy).astype(np.float32)
    warped = cv2.remap(rad, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    warped = warped.reshape(rad.shape)
    cov = cv2.remap(ctx.cov, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    soft = cv2.GaussianBlur(warped, (0, 0), blur).reshape(rad.shape)
    warped += (wgt * cov)[..., None] * (soft - warped)
    # the raised surface tilts down toward the part centre
    slope = amount / radius
    facing = -(ux * ctx.light.lx + uy * ctx.light.ly)
    facing = np.sign(facing or 1.0) * max(abs(facing), 0.4)
    tilt = facing * ctx.light.cos_e * slope * 5.0
    warped *= (1.0 + np.clip(tilt, -0.5, 0.5) * wgt * cov)[..., None]
    # only the part moves: elsewhere keep the bed, darkened in the gap and shadow under it
    out = rad + cov[..., None] * (warped - rad)
    gap = cast_shadow(cov, ctx, 0.8 * amount, soft=3) * np.sqrt(wgt)
    gap += np.clip(cv2.dilate(cov, np.ones((3, 3), np.uint8)) - cov, 0, 1) * (wgt > 0.05)
    out *= (1.0 - 0.6 * np.clip(gap, 0, 1) * (1.0 - cov))[..., None]
    return out, wgt
