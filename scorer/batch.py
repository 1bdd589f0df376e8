"""Batch scoring of image files: the CSV rows, ``.npy`` maps and PNG overlays of ``score``."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scorer.data import DEFAULT_MAX_PIXELS, ImageError, iter_batches, list_images, read_image
from scorer.methods import Method, ScoreResult

CSV_COLUMNS = (
    "path", "score", "anomalous", "f1", "f2", "defect_area", "largest_area", "bbox",
    "latency_ms", "model_version",
)  # fmt: skip


def map_name(image: Path, root: Path) -> str:
    """Relative path with ``/`` → ``__`` and no extension (``crack/003.png`` → ``crack__003``)."""
    rel = image.relative_to(root) if root.is_dir() else Path(image.name)
    return "__".join(rel.with_suffix("").parts)


def overlay(image: np.ndarray, amap: np.ndarray, threshold: float) -> np.ndarray:
    """BGR picture: the image with the map in colour, scaled so the pixel threshold is mid-range."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    scale = 2.0 * threshold if math.isfinite(threshold) and threshold > 0 else float(amap.max())
    heat = np.clip(amap / max(scale, 1e-12) * 255.0, 0, 255).astype(np.uint8)
    colour = cv2.applyColorMap(heat, cv2.COLORMAP_JET)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    out = cv2.addWeighted(base, 0.6, colour, 0.4, 0.0)
    if math.isfinite(threshold):
        mask = (amap > threshold).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out


def _row(path: str, r: ScoreResult, version: str) -> dict[str, object]:
    return {
        "path": path,
        "score": f"{r.score:.6f}",
        "anomalous": int(r.anomalous),
        "f1": f"{r.f1:.6f}",
        "f2": f"{r.f2:.6f}",
        "defect_area": f"{r.defect_area:.6f}",
        "largest_area": r.largest_area,
        "bbox": "" if r.bbox is None else " ".join(str(v) for v in r.bbox),
        "latency_ms": f"{r.latency_ms:.2f}",
        "model_version": version,
    }


@dataclass
class ScoreRun:
    """What ``score_paths`` did: images scored, and the files it could not read (with why)."""

    scored: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def _shown(p: Path, input_path: Path) -> str:
    """The path as given on input joined with the relative name."""
    return str(input_path / p.relative_to(input_path)) if input_path.is_dir() else str(input_path)


def score_paths(
    model: Method,
    input_path: Path,
    out_csv: Path,
    maps_dir: Path | None = None,
    batch_size: int = 8,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ScoreRun:
    """Score an image or a folder into a CSV (and maps), in sorted order.

    A file that is not a readable image within the size bound is skipped and reported, and the
    rest are scored; images of different sizes never share a network batch."""
    paths = list_images(input_path)
    if not paths:
        raise FileNotFoundError(f"{input_path}: no images")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    if maps_dir is not None:
        maps_dir.mkdir(parents=True, exist_ok=True)
    run = ScoreRun()
    with out_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for batch in iter_batches(paths, batch_size):
            loaded: list[tuple[Path, np.ndarray]] = []
            for p in batch:
                try:
                    loaded.append((p, read_image(p, model.channels, max_pixels)))
                except ImageError as exc:
                    run.failed.append((_shown(p, input_path), str(exc)))
            results: dict[Path, ScoreResult] = {}
            for shape in dict.fromkeys(img.shape for _, img in loaded):
                group = [(p, img) for p, img in loaded if img.shape == shape]
                scored = model.score_batch([img for _, img in group])
                results.update(zip((p for p, _ in group), scored, strict=True))
            for p, img in loaded:
                r = results[p]
                writer.writerow(_row(_shown(p, input_path), r, model.model_version))
                run.scored += 1
                if maps_dir is not None:
                    name = map_name(p, input_path)
                    np.save(maps_dir / f"{name}.npy", r.anomaly_map.astype(np.float32))
                    cv2.imwrite(
                        str(maps_dir / f"{name}.png"),
                        overlay(img, r.anomaly_map, model.pixel_threshold),
                    )
    return run
