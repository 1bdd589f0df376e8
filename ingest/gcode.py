"""Expected part outlines rendered from a G-code file (issue 18, ``ingest ... --gcode``).

The file is tokenised by ``gcodeparser`` (PyPI; maintained, MIT, pure Python: it splits
lines into commands, parameters and comments and interprets nothing). The machine state is
ours and small: absolute/relative positioning (G90/G91), absolute/relative extrusion
(M82/M83), G92 resets, and G0/G1 moves. A move in X/Y whose E grows is an extrusion; the
extrusions at one Z are that layer (a Z with no extrusion is a travel hop, not a layer).

The outline of a layer is the region its extrusions cover, drawn into the camera frame
through a homography (bed mm → image px, ``gcode_homography`` in the settings): closed paths
that run counter-clockwise (a slicer's contours) are filled, clockwise ones (holes) cleared,
then every extrusion is stroked at its width (``;WIDTH:`` comments, as PrusaSlicer writes
them, or the default). That is the material the slicer planned on that layer.
"""

from __future__ import annotations

import contextlib
import math
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
from gcodeparser import parse_gcode_lines

MAX_GCODE_BYTES = 256 * 1024 * 1024  # a large print's file; anything bigger is refused
CLOSE_MM = 0.05  # a path whose end is this close to its start is closed
DEFAULT_WIDTH_MM = 0.45


class GcodeError(ValueError):
    """A G-code file or layer that cannot give an outline; says which and why."""


@dataclass
class Path2:
    """One continuous extrusion path in bed mm, and its width."""

    points: list[tuple[float, float]]
    width: float

    @property
    def closed(self) -> bool:
        (x0, y0), (x1, y1) = self.points[0], self.points[-1]
        return len(self.points) > 3 and math.hypot(x1 - x0, y1 - y0) <= CLOSE_MM

    def signed_area(self) -> float:
        p = np.asarray(self.points)
        return 0.5 * float(np.sum(p[:-1, 0] * p[1:, 1] - p[1:, 0] * p[:-1, 1]))


@dataclass
class GcodeLayer:
    z: float
    paths: list[Path2] = field(default_factory=list)


@dataclass
class _State:
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    e: float = 0.0
    absolute: bool = True
    absolute_e: bool = True
    width: float = DEFAULT_WIDTH_MM
    path: Path2 | None = None


def read_gcode(path: Path, default_width: float = DEFAULT_WIDTH_MM) -> list[GcodeLayer]:
    """The extrusion layers of a G-code file, in Z order; errors name the file."""
    try:
        size = path.stat().st_size
        if size > MAX_GCODE_BYTES:
            raise GcodeError(f"{path}: {size} bytes, over the {MAX_GCODE_BYTES}-byte limit")
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise GcodeError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    layers = parse_gcode(text, default_width)
    if not layers:
        raise GcodeError(f"{path}: no extrusion moves (G1 with a growing E) found")
    return layers


def parse_gcode(text: str, default_width: float = DEFAULT_WIDTH_MM) -> list[GcodeLayer]:
    """Extrusion paths per Z of G-code text (see the module docstring for what is read)."""
    st = _State(width=default_width)
    by_z: dict[float, GcodeLayer] = {}

    def end_path() -> None:
        if st.path is not None and len(st.path.points) > 1:
            by_z.setdefault(round(st.z, 4), GcodeLayer(round(st.z, 4))).paths.append(st.path)
        st.path = None

    for line in parse_gcode_lines(text, include_comments=True):
        cmd = line.command
        if cmd[0] == ";":
            if line.comment.upper().startswith("WIDTH:"):
                with contextlib.suppress(ValueError):  # a bad comment keeps the last width
                    st.width = float(line.comment.split(":", 1)[1])
            continue
        if cmd in (("G", 90),):
            st.absolute = st.absolute_e = True
        elif cmd == ("G", 91):
            st.absolute = st.absolute_e = False
        elif cmd == ("M", 82):
            st.absolute_e = True
        elif cmd == ("M", 83):
            st.absolute_e = False
        elif cmd == ("G", 92):
            if "E" in line.params:
                st.e = _num(line.params["E"])
            for axis in ("X", "Y", "Z"):
                if axis in line.params:
                    end_path()
                    setattr(st, axis.lower(), _num(line.params[axis]))
        elif cmd in (("G", 0), ("G", 1)):
            _move(st, line.params, end_path)
    end_path()
    return [by_z[z] for z in sorted(by_z)]


def _num(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise GcodeError(f"not a number: {v!r:.40}")
    return float(v)


def _move(st: _State, params: dict, end_path) -> None:
    def target(axis: str, now: float, absolute: bool) -> float:
        if axis not in params or params[axis] is True:
            return now
        v = _num(params[axis])
        return v if absolute else now + v

    x, y = target("X", st.x, st.absolute), target("Y", st.y, st.absolute)
    z = target("Z", st.z, st.absolute)
    e = target("E", st.e, st.absolute_e)
    extruding = e > st.e + 1e-9 and (x, y) != (st.x, st.y) and z == st.z
    if z != st.z or not extruding:
        end_path()
    if extruding:
        if st.path is None or st.path.width != st.width:
            end_path()
            st.path = Path2([(st.x, st.y)], st.width)
        st.path.points.append((x, y))
    st.x, st.y, st.z, st.e = x, y, z, e


@dataclass
class GcodeOutlines:
    """The layers of one G-code file, rendered to masks of one camera."""

    layers: list[GcodeLayer]
    homography: np.ndarray  # 3×3, bed mm (x, y, 1) → image (column, row, 1)
    source: str = "G-code"

    @classmethod
    def load(cls, path: Path, homography, default_width: float = DEFAULT_WIDTH_MM):
        h = np.asarray(homography, dtype=np.float64)
        if h.shape != (3, 3) or not np.all(np.isfinite(h)) or abs(np.linalg.det(h)) < 1e-12:
            raise GcodeError(f"the homography must be an invertible 3x3 matrix, got {h.tolist()}")
        return cls(read_gcode(path, default_width), h, str(path))

    def find(self, layer: int | None = None, z: float | None = None) -> GcodeLayer:
        """The G-code layer at height ``z`` (within half a layer) or, without ``z``, the
        ``layer``-th extrusion layer (0 = the first)."""
        if z is not None:
            zs = [g.z for g in self.layers]
            i = bisect_left(zs, z)
            near = min((j for j in (i - 1, i) if 0 <= j < len(zs)), key=lambda j: abs(zs[j] - z))
            gap = min((b - a for a, b in pairwise(zs)), default=1.0)
            if abs(zs[near] - z) > gap / 2 + 1e-6:
                raise GcodeError(
                    f"{self.source}: no layer at z = {z:.3f} mm (nearest {zs[near]:.3f} mm)"
                )
            return self.layers[near]
        if layer is None or not 0 <= layer < len(self.layers):
            raise GcodeError(f"{self.source}: no layer {layer} (the file has {len(self.layers)})")
        return self.layers[layer]

    def render(self, g: GcodeLayer, width: int, height: int) -> np.ndarray:
        """The layer's planned material as a uint8 0/1 mask of ``height`` × ``width``."""
        sub = 4  # sub-pixel precision of the polygon drawing (cv2's fractional bits: 2)
        mask = np.zeros((height, width), np.uint8)
        closed = [p for p in g.paths if p.closed]
        for fill in (1, 0):  # contours (CCW) first, then holes (CW) cleared
            for p in closed:
                if (p.signed_area() > 0) == bool(fill):  # one at a time: fillPoly is even-odd
                    cv2.fillPoly(mask, [self._px(p.points, sub)], fill, cv2.LINE_8, shift=2)
        for p in g.paths:
            thick = max(1, round(p.width * self._scale(p.points[0])))
            cv2.polylines(mask, [self._px(p.points, sub)], False, 1, thick, cv2.LINE_8, shift=2)
        return mask

    def outline(self, width: int, height: int, layer: int | None = None, z: float | None = None):
        return self.render(self.find(layer, z), width, height)

    def _px(self, points: list[tuple[float, float]], sub: int) -> np.ndarray:
        p = np.c_[np.asarray(points, np.float64), np.ones(len(points))] @ self.homography.T
        return np.round(p[:, :2] / p[:, 2:3] * sub).astype(np.int32)

    def _scale(self, at: tuple[float, float]) -> float:
        """Pixels per mm near a point (the homography's local scale)."""
        a = self._px([at, (at[0] + 1.0, at[1]), (at[0], at[1] + 1.0)], 1 << 10) / (1 << 10)
        (ux, uy), (vx, vy) = a[1] - a[0], a[2] - a[0]
        return math.sqrt(abs(ux * vy - uy * vx))
