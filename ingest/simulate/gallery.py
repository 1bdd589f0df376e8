"""One picture of every defect kind beside its mask, for eyes (docs, reviews).

Per process: the normal layer first, then each defect kind on the same layer of the same job
(so differences are the defect's), each cell ``image | mask`` under its label.
"""

from __future__ import annotations

import cv2
import numpy as np

from .categories import CATEGORIES, DEFAULT_CATEGORY, Category
from .defect_types import DefectEvent
from .defects import kinds_for
from .printjob import LayerFrame, make_renderer, render_layer

LABEL_H = 22
GAP = 6
COLUMNS = 3


def _bgr(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img[..., ::-1]


def _cell(frame: LayerFrame, label: str) -> np.ndarray:
    h, w = frame.mask.shape
    cell = np.full((LABEL_H + h, 2 * w + GAP, 3), 24, np.uint8)
    cell[LABEL_H:, :w] = _bgr(frame.image)
    cell[LABEL_H:, w + GAP :] = _bgr(frame.mask)
    cv2.putText(
        cell,
        label,
        (4, LABEL_H - 7),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.45,
        (235, 235, 235),
        1,
        cv2.LINE_AA,
    )
    return cell


def _grid(cells: list[np.ndarray], title: str) -> np.ndarray:
    ch, cw = cells[0].shape[:2]
    rows = -(-len(cells) // COLUMNS)
    out = np.full((30 + rows * (ch + GAP), COLUMNS * (cw + GAP) - GAP, 3), 12, np.uint8)
    cv2.putText(out, title, (4, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (120, 220, 255), 1, cv2.LINE_AA)
    for i, c in enumerate(cells):
        y, x = 30 + (i // COLUMNS) * (ch + GAP), (i % COLUMNS) * (cw + GAP)
        out[y : y + ch, x : x + cw] = c
    return out


def _section(
    category: Category,
    extra: tuple[Category, ...],
    size: int,
    seed: int,
    layer: int,
    severity: float,
    rgb: bool,
) -> np.ndarray:
    renderer = make_renderer(category, seed, size, layers=2 * layer, rgb=rgb)
    cells = [_cell(render_layer(renderer, layer), f"normal ({category.name})")]
    for other in extra:
        r = make_renderer(other, seed, size, layers=2 * layer, rgb=rgb)
        cells.append(_cell(render_layer(r, layer), f"normal ({other.name})"))
    for kind in kinds_for(category):  # the default categories show every kind
        frame = render_layer(renderer, layer, [DefectEvent(kind, layer, severity)])
        cells.append(_cell(frame, f"{kind} ({severity:g})  | mask"))
    return _grid(cells, f"{category.process.upper()}: {category.description}")


def make_gallery(
    process: str = "all",
    size: int = 256,
    seed: int = 6,
    layer: int = 40,
    severity: float = 0.6,
    rgb: bool = False,
) -> np.ndarray:
    """The gallery as a BGR uint8 image (ready for ``cv2.imwrite``)."""
    processes = ("fdm", "lpbf") if process == "all" else (process,)
    sections = []
    for p in processes:
        if p not in DEFAULT_CATEGORY:
            raise ValueError(f"unknown process {p!r}; choose fdm, lpbf or all")
        main = CATEGORIES[DEFAULT_CATEGORY[p]]
        extra = tuple(c for c in CATEGORIES.values() if c.process == p and c is not main)
        sections.append(_section(main, extra, size, seed, layer, severity, rgb))
    width = max(s.shape[1] for s in sections)
    padded = [np.pad(s, ((0, GAP), (0, width - s.shape[1]), (0, 0))) for s in sections]
    return np.vstack(padded)
