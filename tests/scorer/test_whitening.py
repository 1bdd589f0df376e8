"""Residual whitening: normal maps become flat, an anomaly on a quiet area stands out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scorer.whitening import ResidualWhitening, WhiteningConfig, content


def _scene(rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """A bright square on a dark bed, and a residual energy up to 9× larger on the square's
    edges, growing with the edge strength (what a small network leaves on normal images)."""
    img = -0.6 * torch.ones(1, 1, 64, 64)
    img[..., 16:48, 16:48] = 0.6
    edge, _ = content(img, WhiteningConfig())
    energy = rng.chisquare(1, size=(64, 64)) * (1.0 + 8.0 * edge[0] / edge.max())
    return img, energy.astype(np.float32)


def test_normal_energy_is_flat_after_whitening() -> None:
    rng = np.random.default_rng(0)
    cfg = WhiteningConfig(edge_bins=16, level_bins=2)
    scenes = [_scene(rng) for _ in range(6)]
    ctx = [content(img, cfg) for img, _ in scenes]
    fit = ResidualWhitening.fit(
        np.concatenate([c[0].ravel() for c in ctx]),
        np.concatenate([c[1].ravel() for c in ctx]),
        np.concatenate([e.ravel() for _, e in scenes]),
        cfg,
    )
    img, energy = _scene(rng)
    edge, level = content(img, cfg)
    edges = edge[0] > 0.5
    assert energy[edges].mean() > 5 * energy[~edges].mean()
    white = energy / fit.expected(edge[0], level[0])
    # ≈ χ²₁ (mean 1) both on and off the edges
    assert white[edges].mean() == pytest.approx(1.0, rel=0.35)
    assert white[~edges].mean() == pytest.approx(1.0, rel=0.35)
    # a blob of 4× energy on the flat bed: weaker than the edges before, stronger after
    energy[2:8, 2:8] *= 4.0
    white = energy / fit.expected(edge[0], level[0])
    assert energy[2:8, 2:8].mean() < energy[edges].mean()
    assert white[2:8, 2:8].mean() > 2.0 * white[edges].mean()


def test_table_round_trip_and_validation() -> None:
    fit = ResidualWhitening((0.1, 0.2), (0.0,), (1.0, 2.0, 3.0, 4.0, 5.0, 6.0))
    assert ResidualWhitening.from_dict(fit.to_dict()) == fit
    with pytest.raises(ValueError, match="6 positive finite"):
        ResidualWhitening.from_dict({**fit.to_dict(), "energy": [1.0, 2.0]})
    with pytest.raises(ValueError, match="positive finite"):
        ResidualWhitening.from_dict({**fit.to_dict(), "energy": [1, 2, 3, 4, 5, float("nan")]})
