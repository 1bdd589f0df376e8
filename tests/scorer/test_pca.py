"""PCA baseline specifics: the basis, T² and Q, and limits from held-out normal patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scorer.pca import PcaConfig, fit_pca, flat_patches


def test_basis_t2_and_q_separate_in_and_out_of_model_changes() -> None:
    g = torch.Generator().manual_seed(0)
    axes = torch.linalg.qr(torch.randn(20, 3, generator=g, dtype=torch.float64))[0]
    x = (
        torch.randn(2000, 3, generator=g, dtype=torch.float64) * torch.tensor([5.0, 3.0, 2.0])
    ) @ axes.T
    x = x + 0.01 * torch.randn(2000, 20, generator=g, dtype=torch.float64)
    model = fit_pca(x, variance=0.99, max_components=10)
    assert model.basis.shape == (20, 3)
    assert (model.variances.diff() <= 0).all()
    along = model.mean + 30 * axes[:, 0]  # far inside the model plane: T², not Q
    ortho = torch.randn(20, generator=g, dtype=torch.float64)
    ortho = ortho - axes @ (axes.T @ ortho)
    across = model.mean + ortho / ortho.norm()  # small but outside the plane: Q
    t2, q = model.statistics(torch.stack([along, across]))
    assert t2[0] > 20 and q[0] < 0.01
    assert q[1] > 0.5 and t2[1] < 1


def test_limits_and_patches() -> None:
    rng = np.random.default_rng(1)
    images = [np.clip(128 + rng.normal(0, 6, (32, 32)), 0, 255).astype(np.uint8) for _ in range(6)]
    cfg = PcaConfig(patch=8, stride=4)
    patches = flat_patches(images, 1, cfg)
    assert patches.shape == (6 * 7 * 7, 64)
    model = fit_pca(patches, cfg.variance, cfg.max_components)
    t2, q = model.statistics(patches)
    model.t2_limit, model.q_limit = float(t2.quantile(0.99)), float(q.quantile(0.99))
    stat = model.patch_statistic(patches)
    # Each statistic exceeds its own 99 % limit on ~1 % of patches; their max on ≤ ~2 %.
    assert 0.0 < float((stat > 1).double().mean()) <= 0.03


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"stride": 0}, "stride"), ({"variance": 0.0}, "variance"), ({"top_k": 0}, "top_k")],
)
def test_config_validation(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PcaConfig(**kw)
