"""Training a model end to end (`layerwatch train`): the normal-image hold-out split, the
method's own fit (its network through scorer.training_loop, then its calibration) within the
wall-clock budget, and the artifact."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from scorer.data import (
    DEFAULT_MAX_PIXELS,
    infer_channels,
    list_images,
    load_reference,
    normal_image_folder,
    read_image,
)
from scorer.device import pick_device
from scorer.methods import (
    LayerReference,
    Method,
    TrainData,
    TrainSettings,
    get_method,
    load_model,
    save_model,
)


def split_holdout(
    paths: list[Path], fraction: float, seed: int, min_calibration: int = 2
) -> tuple[list[Path], list[Path]]:
    """Deterministic random split; the calibration share never trains weights."""
    if len(paths) < min_calibration + 1:
        raise ValueError(f"need at least {min_calibration + 1} normal images, got {len(paths)}")
    n_cal = min(len(paths) - 1, max(min_calibration, round(len(paths) * fraction)))
    order = np.random.default_rng(seed).permutation(len(paths))
    cal = sorted(paths[i] for i in order[:n_cal])
    train = sorted(paths[i] for i in order[n_cal:])
    return train, cal


def load_train_data(
    data: Path | str, settings: TrainSettings, max_pixels: int = DEFAULT_MAX_PIXELS
) -> TrainData:
    folder = normal_image_folder(data)
    paths = list_images(folder)
    if not paths:
        raise FileNotFoundError(f"{folder}: no images")
    channels = infer_channels(paths, max_pixels)
    # A category with its own calibration/good (the photograph data sets: a region of the
    # photograph no training crop overlaps) calibrates on it; otherwise a random holdout.
    own_cal = Path(data) / "calibration" / "good"
    if folder != Path(data) and own_cal.is_dir() and list_images(own_cal):
        train, cal = sorted(paths), list_images(own_cal)
        cal_root = own_cal
    else:
        train, cal = split_holdout(paths, settings.holdout, settings.seed)
        cal_root = folder
    train_images = [read_image(p, channels, max_pixels) for p in train]
    cal_images = [read_image(p, channels, max_pixels) for p in cal]

    def references(paths: list[Path], images: list[np.ndarray]) -> list[LayerReference | None]:
        refs = [
            load_reference(p, img.shape[:2], channels, max_pixels)
            for p, img in zip(paths, images, strict=True)
        ]
        return refs if any(r is not None for r in refs) else []

    return TrainData(
        train=train_images,
        calibration=cal_images,
        channels=channels,
        source=str(folder),
        train_names=[str(p.relative_to(folder)) for p in train],
        calibration_names=[str(p.relative_to(cal_root)) for p in cal],
        train_references=references(train, train_images),
        calibration_references=references(cal, cal_images),
    )


@dataclass
class TrainResult:
    method: Method
    model_dir: Path
    model_version: str
    seconds: float


def train_model(
    data: Path | str,
    out: Path | str,
    method: str = "radar",
    settings: TrainSettings | None = None,
    device: str = "auto",
    console: Console | None = None,
) -> TrainResult:
    """Load normal images, fit the method within ``settings.max_minutes`` in total, save it."""
    settings = settings or TrainSettings()
    start = time.monotonic()
    deadline = start + settings.max_minutes * 60.0
    torch.manual_seed(settings.seed)
    dev = pick_device(device)
    train_data = load_train_data(data, settings)
    model = get_method(method).fit(train_data, settings, dev, deadline, console)
    version = save_model(model, out)
    # Serve what was written: the reloaded model carries its version (a hash of the files),
    # which the scorer stamps on every score and the monitor uses to find its Phase I.
    saved = load_model(out, dev)
    return TrainResult(saved, Path(out), version, time.monotonic() - start)
