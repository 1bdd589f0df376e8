"""A model that costs nothing to make: PCA on 32² stripes, for runs about delivery, where
what the model says matters less than that every layer gets a score."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 32


def stripes(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """Diagonal stripes with a random phase plus sensor noise: a stand-in for a printed layer."""
    yy, xx = np.mgrid[:size, :size]
    img = 128 + 60 * np.sin(2 * np.pi * (xx + yy) / 8 + rng.uniform(0, 2 * np.pi))
    img += rng.normal(0, 6, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def defect(img: np.ndarray) -> np.ndarray:
    """A bright square over a quarter of the layer: far outside anything PCA saw."""
    out = img.copy()
    h, w = out.shape[:2]
    out[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 250
    return out


def make_quick_model(out: Path, size: int = SIZE) -> Path:
    """Fit (about 2 s) and save the PCA scorer; a model gets its version when saved."""
    from scorer.device import pick_device
    from scorer.methods import TrainData, TrainSettings, save_model
    from scorer.pca import PcaScorer

    rng = np.random.default_rng(0)
    data = TrainData(
        train=[stripes(rng, size) for _ in range(12)],
        calibration=[stripes(rng, size) for _ in range(8)],
        channels=1,
        source="synthetic",
    )
    model = PcaScorer.fit(data, TrainSettings(show_progress=False), pick_device("cpu"), 1e18)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out)
    return out


def make_layer_aware_model(
    out: Path,
    size: int = 128,
    category: str = "fdm_rectilinear",
    steps: int = 40,
    seed: int = 0,
    images: int = 120,
) -> Path:
    """A small radar-geometry model (a tiny RADAR beside the geometry channel), trained as the
    demo trains its model (normal layers of whole prints, bottom layers included, each with its
    previous layer and expected outline): for streams whose defects are geometric (layer
    shift, warping), which only the geometry channel sees. About a minute on 2 cores."""
    from layerwatch.demo import DemoOptions, write_normal_layers
    from scorer.methods import TrainSettings
    from scorer.train import train_model

    opts = DemoOptions(category=category, size=size, layers=40, train_images=images, seed=seed)
    write_normal_layers(out / "data", opts)
    # Patches side by side, no attention, a small texture bank: the texture channel is a
    # passenger in these streams, and a 256² layer costs 0.4 s rather than 1.5 s (2 cores).
    settings = TrainSettings(
        steps=steps, batch_size=16, width=8, channel_mults=(1, 2), attention_resolutions=(),
        patch=32, stride=32, t_candidates=(50,), show_progress=False, max_minutes=5.0, seed=seed,
        extra={"texture_bank": 2048},
    )  # fmt: skip
    train_model(out / "data", out / "model", "radar-geometry", settings, "cpu")
    return out / "model"
