"""A slicer-like G-code writer for simulated FDM jobs: the print file a job would come from.

Per layer, at the job's layer Z, the perimeter loops of the job's designed section as G1
extrusion moves with E (relative extrusion, 1.75 mm filament), in bed mm: the outermost loop
half a bead inside the part's edge, each further loop one bead further in, contours
counter-clockwise and holes clockwise (as slicers orient them), with PrusaSlicer's
``;LAYER_CHANGE``, ``;Z:``, ``;TYPE:`` and ``;WIDTH:`` comments. The part sits at
``bed_center`` on the bed; :func:`camera_homography` is the matching bed mm → camera px map.
Sparse infill is not written: the outline is what the perimeters bound.
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np

from .fdm import FdmRenderer

FILAMENT_MM = 1.75
GRID_MM = 0.025  # resolution of the contour tracing
BED_CENTER = (110.0, 110.0)  # a 220 mm bed


def camera_homography(renderer: FdmRenderer, bed_center=BED_CENTER) -> np.ndarray:
    """3×3 map from bed mm to the job's camera pixels (column, row): the camera looks straight
    down at the part's centre of the bed; pixel i's centre is (i + 0.5 - size/2) · px_mm."""
    j = renderer.job
    s, k = j.size, 1.0 / j.px_mm
    return np.array(
        [[k, 0.0, s / 2 - 0.5 - k * bed_center[0]], [0.0, k, s / 2 - 0.5 - k * bed_center[1]],
         [0.0, 0.0, 1.0]]
    )  # fmt: skip


def layer_loops(renderer: FdmRenderer, layer: int) -> list[tuple[str, np.ndarray]]:
    """(type, closed polygon in the camera-centred mm frame) of a layer's perimeters."""
    j = renderer.job
    half = j.size * j.px_mm / 2
    xs = (np.arange(-half, half, GRID_MM) + GRID_MM / 2).astype(np.float32)
    sdf = renderer._section(xs, xs, j.z_mm(layer), (0.0, 0.0))  # same package
    loops = []
    for k in range(j.perimeters):
        inside = (sdf < -(k + 0.5) * j.bead_w).astype(np.uint8)
        contours, hier = cv2.findContours(inside, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        kind = "External perimeter" if k == 0 else "Perimeter"
        for c, h in zip(contours, hier[0] if hier is not None else [], strict=False):
            if len(c) < 8:
                continue
            c = cv2.approxPolyDP(c, 1.5, True)[:, 0, :].astype(np.float64)
            pts = xs[0] + c * GRID_MM
            area = 0.5 * np.sum(pts[:-1, 0] * pts[1:, 1] - pts[1:, 0] * pts[:-1, 1])
            hole = h[3] >= 0  # has a parent: a hole's boundary
            if (area > 0) == hole:
                pts = pts[::-1]
            loops.append((kind, pts))
    return loops


def write_gcode(
    renderer: FdmRenderer, path: Path, layers: range | None = None, bed_center=BED_CENTER
) -> Path:
    """Write the job's perimeters (``layers``, default all) as G-code to ``path``."""
    j = renderer.job
    e_per_mm = j.bead_w * j.layer_h / (math.pi * (FILAMENT_MM / 2) ** 2)
    out = [
        f"; LayerWatch simulated job: category {j.category.name}, seed {j.seed}",
        f"; layer height {j.layer_h} mm, bead {j.bead_w:.3f} mm, perimeters {j.perimeters}",
        "G21 ; millimetres", "G90 ; absolute positions", "M83 ; relative extrusion",
    ]  # fmt: skip
    for layer in layers if layers is not None else range(j.layers):
        z = j.z_mm(layer)
        out += [";LAYER_CHANGE", f";Z:{z:g}", f"G1 Z{z:.3f} F600"]
        for kind, pts in layer_loops(renderer, layer):
            bx, by = pts[:, 0] + bed_center[0], pts[:, 1] + bed_center[1]
            out += [f";TYPE:{kind}", f";WIDTH:{j.bead_w:.3f}", f"G0 X{bx[0]:.3f} Y{by[0]:.3f}"]
            ring = [*zip(bx, by, strict=True), (bx[0], by[0])]
            for (x0, y0), (x1, y1) in pairwise(ring):
                e = math.hypot(x1 - x0, y1 - y0) * e_per_mm
                out.append(f"G1 X{x1:.3f} Y{y1:.3f} E{e:.5f}")
    out.append("M84 ; motors off")
    path.write_text("\n".join(out) + "\n")
    return path
