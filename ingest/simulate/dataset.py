"""Data sets in the MVTec-AD layout, one category per call.

``out`` is the data-set root (MVTec's convention: ROOT/CATEGORY/...), so several categories
can share it::

    out/CATEGORY/train/good/000.png
    out/CATEGORY/test/good/000.png
    out/CATEGORY/test/DEFECT/000.png
    out/CATEGORY/ground_truth/DEFECT/000_mask.png
    out/CATEGORY/simulation.json      # parameters and per-image truth (job seed, layer, ...)

With ``reference=True`` (issue 18) every image also gets what a layer-aware detector compares
it with, beside the MVTec folders so that MVTec tools still read the set::

    out/CATEGORY/reference/train/good/000_prev.png      # the same job's previous layer
    out/CATEGORY/reference/train/good/000_outline.png   # the layer's expected outline, 255 = part
    out/CATEGORY/reference/test/DEFECT/000_prev.png     # (same for test/good and every defect)

A normal image is a random layer of a random job of the category; a defect image is the same
kind of layer with one defect (random severity) starting on it. The previous layer is rendered
with the same defect events, so a defect that starts on the image's layer is not on it (and the
image and its mask are the same as without ``reference``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .categories import Category, resolve_category
from .defect_types import DefectEvent
from .defects import kinds_for
from .noise import derive_seed, rng_for
from .printjob import LayerFrame, expected_outline, make_renderer, render_layer

MANIFEST = "simulation.json"
SEVERITY = (0.35, 1.0)
MIN_MASK_FRACTION = 5e-4  # a defect image whose defect changed fewer pixels is redrawn
REFERENCE_DIR = "reference"
PREVIOUS_SUFFIX = "_prev.png"
OUTLINE_SUFFIX = "_outline.png"
PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1]


def save_png(path: Path, image: np.ndarray) -> None:
    """Write a grey or RGB uint8 image (RGB order) as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), img, PNG):
        raise OSError(f"could not write {path}")


@dataclass
class _Drawn:
    """One data-set image and, when asked for, its references."""

    frame: LayerFrame
    info: dict[str, Any]
    previous: np.ndarray | None = None
    outline: np.ndarray | None = None


def _frame(
    cat: Category, key: tuple[Any, ...], size: int, rgb: bool, kind: str | None, reference: bool
) -> _Drawn:
    """One data-set image (job drawn from ``key``): a random layer of a random job, with one
    defect starting on it if ``kind``; with ``reference`` also the job's previous layer (same
    events) and the layer's expected outline."""
    for attempt in range(8):
        job_seed = derive_seed(*key, attempt)
        rng = rng_for(job_seed, "dataset-pick")
        layers = int(rng.integers(60, 160))
        layer = int(rng.integers(4, layers))
        renderer = make_renderer(cat, job_seed, size, layers, rgb)
        events = []
        if kind is not None:
            events = [DefectEvent(kind, layer, round(float(rng.uniform(*SEVERITY)), 3))]
        frame = render_layer(renderer, layer, events)
        if kind is None or frame.mask_area >= MIN_MASK_FRACTION * size * size:
            info = {"job_seed": job_seed, "layers": layers, "layer": layer, "z_mm": frame.z_mm}
            if events:
                info |= {"kind": kind, "severity": events[0].severity}
                info["mask_area"] = frame.mask_area
            if not reference:
                return _Drawn(frame, info)
            previous = render_layer(renderer, layer - 1, events).image
            return _Drawn(frame, info, previous, expected_outline(renderer, layer))
    raise RuntimeError(f"could not draw a visible {kind} defect for {cat.name}")


def _prepare(root: Path) -> None:
    """Start from an empty category folder; replace only a folder this module wrote."""
    if root.exists() and any(root.iterdir()):
        if not (root / MANIFEST).exists():
            raise FileExistsError(f"{root} is not empty and was not written by the simulator")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).write_text(json.dumps({"status": "incomplete"}))


def write_dataset(
    out: Path | str,
    category: str,
    process: str = "fdm",
    size: int = 256,
    n_train: int = 200,
    n_test_good: int = 50,
    n_test_defect: int = 20,
    seed: int = 0,
    rgb: bool = False,
    on_image: Callable[[str], None] | None = None,
    reference: bool = False,
) -> dict[str, Any]:
    """Write one MVTec-AD category under ``out/category``; returns a summary.

    The category fixes the process; ``process`` is accepted for symmetry with
    :func:`simulate_print`.

    ``n_test_defect`` is per defect kind; ``on_image`` is called after each image is written
    (for progress bars). Rewriting a category replaces what an earlier run wrote there.
    ``reference`` also writes each image's previous layer and expected outline (module doc).
    """
    cat = resolve_category(category, process)
    root = Path(out) / cat.name
    _prepare(root)
    kinds = kinds_for(cat)
    width = max(3, len(str(max(n_train, n_test_good, n_test_defect, 1) - 1)))
    records: list[dict[str, Any]] = []
    plan: list[tuple[str, str | None, int]] = [("train", None, i) for i in range(n_train)]
    plan += [("test", None, i) for i in range(n_test_good)]
    plan += [("test", k, i) for k in kinds for i in range(n_test_defect)]
    for split, kind, i in plan:
        drawn = _frame(cat, (seed, cat.name, split, kind or "good", i), size, rgb, kind, reference)
        frame, info = drawn.frame, drawn.info
        stem = f"{i:0{width}d}"
        rel = Path(split) / (kind or "good") / f"{stem}.png"
        save_png(root / rel, frame.image)
        info["file"] = str(rel)
        if drawn.previous is not None and drawn.outline is not None:
            ref = Path(REFERENCE_DIR) / split / (kind or "good")
            save_png(root / ref / f"{stem}{PREVIOUS_SUFFIX}", drawn.previous)
            save_png(root / ref / f"{stem}{OUTLINE_SUFFIX}", drawn.outline * np.uint8(255))
            info["previous"] = str(ref / f"{stem}{PREVIOUS_SUFFIX}")
            info["outline"] = str(ref / f"{stem}{OUTLINE_SUFFIX}")
        if kind is not None:
            mrel = Path("ground_truth") / kind / f"{i:0{width}d}_mask.png"
            save_png(root / mrel, frame.mask)
            info["mask"] = str(mrel)
        records.append(info)
        if on_image is not None:
            on_image(str(rel))
    summary = {
        "root": str(root),
        "category": cat.name,
        "process": cat.process,
        "description": cat.description,
        "size": size,
        "rgb": rgb,
        "seed": seed,
        "reference": reference,
        "train_good": n_train,
        "test_good": n_test_good,
        "test_defect": {k: n_test_defect for k in kinds},
    }
    (root / MANIFEST).write_text(json.dumps(summary | {"images": records}, indent=1))
    return summary
