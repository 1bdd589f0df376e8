"""Tiny synthetic textures and a tiny trained RADAR model shared by the scorer tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scorer.device import pick_device
from scorer.methods import TrainData, TrainSettings, save_model
from scorer.radar import RadarScorer

SIZE = 32


def texture(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """Diagonal stripes with a random phase plus sensor noise: a stand-in for a printed layer."""
    yy, xx = np.mgrid[:size, :size]
    img = 128 + 60 * np.sin(2 * np.pi * (xx + yy) / 8 + rng.uniform(0, 2 * np.pi))
    img += rng.normal(0, 6, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def plant_blob(
    img: np.ndarray, y: int = 10, x: int = 12, r: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc (a blob of over-extrusion) and its mask."""
    out = img.copy()
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(mask, (x, y), r, 1, -1)
    out[mask > 0] = 250
    return out, mask


def tiny_settings(**kw: object) -> TrainSettings:
    base = dict(
        steps=80, batch_size=16, width=8, channel_mults=(1, 2), attention_resolutions=(8,),
        patch=16, stride=8, t_candidates=(50, 100), show_progress=False, max_minutes=2.0,
    )  # fmt: skip
    base.update(kw)
    return TrainSettings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def make_texture() -> Callable[..., np.ndarray]:
    return texture


@pytest.fixture(scope="session")
def make_blob() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    return plant_blob


@pytest.fixture(scope="session")
def settings_factory() -> Callable[..., TrainSettings]:
    return tiny_settings


@pytest.fixture(scope="session")
def tiny_model() -> RadarScorer:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    data = TrainData(
        train=[texture(rng) for _ in range(16)],
        calibration=[texture(rng) for _ in range(8)],
        channels=1,
        source="synthetic",
    )
    # The deadline only guards against a hang: the 80 steps take seconds, but on a loaded
    # machine (a training alongside) they took over 2 minutes and the step-count test failed.
    return RadarScorer.fit(data, tiny_settings(), pick_device("cpu"), time.monotonic() + 900)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model: RadarScorer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    save_model(tiny_model, out)
    return out


def write_category(
    root: Path, seed: int = 0, n_train: int = 14, n_good: int = 4, n_defect: int = 4
) -> Path:
    """MVTec layout: train/good, test/good, test/blob, ground_truth/blob/NNN_mask.png."""
    rng = np.random.default_rng(seed)
    cat = root / "stripes"
    for sub in ("train/good", "test/good", "test/blob", "ground_truth/blob"):
        (cat / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        cv2.imwrite(str(cat / "train/good" / f"{i:03d}.png"), texture(rng))
    for i in range(n_good):
        cv2.imwrite(str(cat / "test/good" / f"{i:03d}.png"), texture(rng))
    for i in range(n_defect):
        img, mask = plant_blob(texture(rng), y=8 + 2 * i, x=10 + 3 * i)
        cv2.imwrite(str(cat / "test/blob" / f"{i:03d}.png"), img)
        cv2.imwrite(str(cat / "ground_truth/blob" / f"{i:03d}_mask.png"), mask * 255)
    return cat


@pytest.fixture()
def category(tmp_path: Path) -> Path:
    return write_category(tmp_path)
