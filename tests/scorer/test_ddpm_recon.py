"""ddpm-recon specifics: the DDIM schedule and the number of ε_θ passes it costs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scorer.ddpm_recon as ddpm_recon
from scorer.ddpm_recon import DdpmReconConfig, DdpmReconScorer
from scorer.device import pick_device
from scorer.unet import UNet, UNetConfig

CPU = pick_device("cpu")


def test_timesteps() -> None:
    assert DdpmReconConfig(t_recon=200, ddim_steps=10).timesteps == list(range(200, 0, -20))
    assert DdpmReconConfig(t_recon=200, ddim_steps=1).timesteps == [200]
    with pytest.raises(ValueError, match="ddim_steps"):
        DdpmReconConfig(ddim_steps=0)


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_one_network_pass_per_step(steps: int, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = UNetConfig(base_width=8, channel_mults=(1, 2), attention_resolutions=(), patch_size=16)
    s = DdpmReconScorer(UNet(cfg), DdpmReconConfig(patch=16, stride=8, ddim_steps=steps), CPU)
    seen: list[int] = []
    real = ddpm_recon.forward_chunks

    def counting(model: torch.nn.Module, device: object, x: torch.Tensor, t: int) -> torch.Tensor:
        seen.append(int(t))
        return real(model, device, x, t)  # type: ignore[arg-type]

    monkeypatch.setattr(ddpm_recon, "forward_chunks", counting)
    x0 = torch.rand(2, 1, 16, 16) * 2 - 1
    noise = torch.randn_like(x0)
    out = s.reconstruct(x0, noise)
    assert seen == s.config.timesteps and len(seen) == steps
    # ε̂ = 0 (untrained, zero output layer): DDIM collapses to x_tr / √ᾱ_tr.
    d, t = s.diffusion, s.config.t_recon
    torch.testing.assert_close(out, (d.q_sample(x0, t, noise) / d.sqrt_ab[t]).clamp(-1, 1))
    maps = s.anomaly_maps([np.full((20, 24), 128, np.uint8)])
    assert maps[0].shape == (20, 24) and (maps[0] >= 0).all()
