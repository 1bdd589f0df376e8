"""DiffusionAD specifics: norm-guided reconstruction, synthetic anomalies, losses, settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scorer.calibration import top_k_mean
from scorer.device import pick_device
from scorer.diffusionad import DiffusionADConfig, DiffusionADScorer, SegmentationNet, focal_loss
from scorer.synthetic import perlin_2d, perlin_mask, shuffled_tiles, synthesize
from scorer.unet import UNet, UNetConfig

CPU = pick_device("cpu")


def _scorer(guidance: float) -> DiffusionADScorer:
    """Untrained networks: the zero-initialised output layer makes ε̂ = 0 exactly."""
    cfg = UNetConfig(base_width=8, channel_mults=(1, 2), attention_resolutions=(), patch_size=16)
    seg = SegmentationNet(UNetConfig(**{**cfg.to_dict(), "in_channels": 2}))
    config = DiffusionADConfig(patch=16, stride=8, guidance=guidance)
    return DiffusionADScorer(UNet(cfg), seg, config, CPU)


def test_norm_guided_reconstruction_matches_the_formula() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    eps_s, eps_b = torch.randn(2, 3, 1, 16, 16, generator=g)
    s = _scorer(1.0)
    d, ts, tb = s.diffusion, 200, 400
    x_ts, x_tb = d.q_sample(x0, ts, eps_s), d.q_sample(x0, tb, eps_b)
    x0_b = (x_tb / d.sqrt_ab[tb]).clamp(-1, 1)  # ε̂ = 0
    guided = -d.sqrt_1mab[ts] * (d.sqrt_ab[ts] * x0_b - x_ts)
    expected = ((x_ts - d.sqrt_1mab[ts] * guided) / d.sqrt_ab[ts]).clamp(-1, 1)
    torch.testing.assert_close(s.reconstruct(x0, eps_s, eps_b), expected)
    # Without guidance it is the plain one-step estimate from x_ts.
    plain = (x_ts / d.sqrt_ab[ts]).clamp(-1, 1)
    torch.testing.assert_close(_scorer(0.0).reconstruct(x0, eps_s, eps_b), plain)


def test_synthetic_anomalies_touch_only_the_mask() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 32, 32, generator=g) * 2 - 1
    src = torch.rand(16, 1, 32, 32, generator=g) * 2 - 1
    out, masks = synthesize(x, src, torch.Generator().manual_seed(2))
    again, masks2 = synthesize(x, src, torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, again)
    torch.testing.assert_close(masks, masks2)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    anomalous = masks.flatten(1).amax(1) > 0
    assert 0 < anomalous.sum() < 16  # about half the samples stay clean
    torch.testing.assert_close(out * (1 - masks), x * (1 - masks))
    assert (out[anomalous] != x[anomalous]).any()


def test_perlin_and_tiles() -> None:
    g = torch.Generator().manual_seed(3)
    n = perlin_2d(32, 4, g)
    assert n.shape == (32, 32) and n.abs().max() <= 1.5 and n.std() > 0.05
    assert perlin_mask(32, g).sum() >= 4
    with pytest.raises(ValueError, match="divide"):
        perlin_2d(30, 4, g)
    patch = torch.arange(64.0).reshape(1, 8, 8)
    tiles = shuffled_tiles(patch, 4, g)
    assert sorted(tiles.flatten().tolist()) == sorted(patch.flatten().tolist())


def test_losses_and_top_k() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., :2, :2] = 1
    good = focal_loss(target * 0.98 + 0.01, target, 0.5, 4.0)
    bad = focal_loss(1 - target, target, 0.5, 4.0)
    assert good < 1e-4 < bad
    m = np.zeros((20, 20), np.float32)
    m[0, :5] = 1.0
    assert top_k_mean(m, 5) == 1.0 and top_k_mean(m, 10) == 0.5 and top_k_mean(m, 10_000) > 0


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"t_small": 400}, "t_small"), ({"unet_share": 1.0}, "unet_share"), ({"top_k": 0}, "top_k")],
)
def test_config_validation(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DiffusionADConfig(**kw)
