"""Building blocks: tiling/stitching, the noise schedule and the U-Net."""

from __future__ import annotations

import pytest
import torch

from scorer.diffusion import GaussianDiffusion
from scorer.patches import PatchGrid, axis_positions, pad_to_patch, position_noise, window_2d
from scorer.unet import UNet, UNetConfig, count_parameters


def test_axis_positions_cover_the_edge() -> None:
    assert axis_positions(256, 64, 48) == [0, 48, 96, 144, 192]
    assert axis_positions(100, 32, 24) == [0, 24, 48, 68]
    assert axis_positions(32, 32, 16) == [0]
    with pytest.raises(ValueError):
        axis_positions(16, 32, 16)


def test_stitch_inverts_extract_on_irregular_grid() -> None:
    grid = PatchGrid(50, 37, 16, 12)
    x = torch.randn(2, 3, 50, 37)
    patches = grid.extract(x)
    assert patches.shape == (2, grid.count, 3, 16, 16)
    y0, x0 = grid.origins[3]
    assert torch.equal(patches[1, 3], x[1, :, y0 : y0 + 16, x0 : x0 + 16])
    assert torch.allclose(grid.stitch(patches), x, atol=1e-5)


def test_window_is_smooth_and_positive() -> None:
    w = window_2d(16)
    assert w.min() > 0 and w.max() <= 1
    assert w[8, 8] > w[0, 0]


def test_pad_to_patch_and_position_noise_are_deterministic() -> None:
    x, shape = pad_to_patch(torch.zeros(1, 1, 10, 20), 16)
    assert x.shape[-2:] == (16, 20) and shape == (10, 20)
    grid = PatchGrid(32, 32, 16, 8)
    a = position_noise(grid, 1, 2, seed=3)
    position_noise.cache_clear()
    b = position_noise(grid, 1, 2, seed=3)
    assert a.shape == (2, 9, 1, 16, 16) and torch.equal(a, b)
    assert not torch.equal(a[0, 0], a[0, 1]) and not torch.equal(a[0], a[1])


def test_diffusion_forward_and_one_step_inverse() -> None:
    d = GaussianDiffusion()
    assert d.alphas_cumprod[0] == pytest.approx(1 - 1e-4)
    assert torch.all(d.alphas_cumprod[1:] < d.alphas_cumprod[:-1])
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    eps = torch.randn_like(x0)
    t = torch.tensor([10, 100, 300, 900])
    xt = d.q_sample(x0, t, eps)
    assert torch.allclose(d.predict_x0(xt, t, eps, clip=False), x0, atol=1e-4)
    assert torch.allclose(d.ddim_step(xt[1:2], 100, -1, eps[1:2]), x0[1:2], atol=1e-4)
    xs = d.ddim_step(xt[1:2], 100, 50, eps[1:2])
    assert torch.allclose(xs, d.q_sample(x0[1:2], 50, eps[1:2]), atol=1e-4)
    loss = d.training_loss(
        UNet(
            UNetConfig(base_width=8, channel_mults=(1, 2), attention_resolutions=(4,), patch_size=8)
        ),
        x0,
    )
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_unet_shapes_and_attention_placement() -> None:
    cfg = UNetConfig(
        in_channels=3,
        base_width=8,
        channel_mults=(1, 2, 2),
        attention_resolutions=(8, 4),
        patch_size=16,
    )
    net = UNet(cfg)
    out = net(torch.randn(5, 3, 16, 16), torch.randint(0, 1000, (5,)))
    assert out.shape == (5, 3, 16, 16)
    attn = [n for n, m in net.named_modules() if type(m).__name__ == "SelfAttention"]
    assert "mid_attn" in attn
    assert any(n.startswith("down.1.") for n in attn) and any(n.startswith("down.2.") for n in attn)
    assert not any(n.startswith("down.0.") for n in attn)
    assert count_parameters(net) > 0
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        UNetConfig(patch_size=30, channel_mults=(1, 2, 2))
