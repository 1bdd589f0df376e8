"""ddpm-recon specifics: the DDIM schedule, the number of ε_θ passes it costs, its engine."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

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
    engine = s.backend
    real = engine.forward

    def counting(x: torch.Tensor, t: int) -> torch.Tensor:
        seen.append(int(t))
        return real(x, t)

    monkeypatch.setattr(engine, "forward", counting)
    x0 = torch.rand(2, 1, 16, 16) * 2 - 1
    noise = torch.randn_like(x0)
    out = s.reconstruct(x0, noise)
    assert seen == s.config.timesteps and len(seen) == steps
    # ε̂ = 0 (untrained, zero output layer): DDIM collapses to x_tr / √ᾱ_tr.
    d, t = s.diffusion, s.config.t_recon
    torch.testing.assert_close(out, (d.q_sample(x0, t, noise) / d.sqrt_ab[t]).clamp(-1, 1))
    maps = s.anomaly_maps([np.full((20, 24), 128, np.uint8)])
    assert maps[0].shape == (20, 24) and (maps[0] >= 0).all()


def test_runs_on_the_scorers_engine() -> None:
    """The baseline runs its network on ``device.backend`` as RADAR does (a speed ratio in
    ``bench compare`` compares methods, not engines), with eager's result to float32 tolerance;
    a new ``model`` or ``device`` gets a new engine."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(3)
    cfg = UNetConfig(base_width=8, channel_mults=(1, 2), attention_resolutions=(), patch_size=16)
    net = UNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)  # an untrained ε_θ outputs 0 everywhere: nothing to compare
    config = DdpmReconConfig(patch=16, stride=8, ddim_steps=3)
    eager = DdpmReconScorer(net, config, CPU)
    onnx = DdpmReconScorer(net, config, replace(CPU, backend="onnxruntime"))
    x0 = torch.rand(3, 1, 16, 16) * 2 - 1
    noise = torch.randn_like(x0)
    want = eager.reconstruct(x0, noise)
    got = onnx.reconstruct(x0, noise)
    assert eager.engine == "eager" and onnx.engine == "onnxruntime"
    assert float((want - x0).abs().max()) > 0.01  # the network moved the reconstruction
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    first = onnx.backend
    onnx.model = UNet(cfg).eval()
    assert onnx.backend is not first
    onnx.device = replace(CPU, backend="eager")  # another engine for the same weights
    assert onnx.engine == "eager"
