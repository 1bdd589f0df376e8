"""DDPM noise schedule and the one-step helpers every diffusion method here shares."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ScheduleConfig:
    """Linear β schedule as in DDPM / DiffusionAD."""

    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class GaussianDiffusion:
    """Closed-form forward process q(x_t | x_0) and ε-parameterised estimates."""

    def __init__(self, config: ScheduleConfig | None = None) -> None:
        self.config = config or ScheduleConfig()
        c = self.config
        betas = torch.linspace(c.beta_start, c.beta_end, c.timesteps, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.betas = betas.float()
        self.alphas_cumprod = alphas_cumprod.float()
        self.sqrt_ab = alphas_cumprod.sqrt().float()
        self.sqrt_1mab = (1.0 - alphas_cumprod).sqrt().float()

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    def _coef(self, table: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """Gather a per-sample coefficient shaped to broadcast against ``like``."""
        t_idx = torch.as_tensor(t, device=table.device).long().reshape(-1)
        out = table[t_idx].to(device=like.device, dtype=like.dtype)
        return out.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(
        self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor
    ) -> torch.Tensor:
        """x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε."""
        return self._coef(self.sqrt_ab, t, x0) * x0 + self._coef(self.sqrt_1mab, t, x0) * noise

    def predict_x0(
        self, xt: torch.Tensor, t: torch.Tensor | int, eps: torch.Tensor, clip: bool = True
    ) -> torch.Tensor:
        """One-step estimate x̂_0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t, optionally clamped to the data range."""
        x0 = (xt - self._coef(self.sqrt_1mab, t, xt) * eps) / self._coef(self.sqrt_ab, t, xt)
        return x0.clamp(-1.0, 1.0) if clip else x0

    def ddim_step(
        self,
        xt: torch.Tensor,
        t: int,
        t_prev: int,
        eps: torch.Tensor,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One DDIM update t → t_prev (t_prev < 0 means the clean image)."""
        x0 = self.predict_x0(xt, t, eps)
        if t_prev < 0:
            return x0
        ab_t = self.alphas_cumprod[t]
        ab_prev = self.alphas_cumprod[t_prev]
        sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
        direction = (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
        out = ab_prev.sqrt() * x0 + direction
        if eta > 0:
            if noise is None:
                noise = torch.randn_like(xt)
            out = out + sigma * noise
        return out

    def training_loss(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        t_max: int | None = None,
    ) -> torch.Tensor:
        """‖ε_θ(x_t, t) − ε‖² with t uniform over [0, t_max) (default: the whole schedule).

        One-step scoring only ever queries a few small t, so a compute-limited training run can
        spend all its steps on the noise levels it will be asked about.
        """
        b = x0.shape[0]
        high = self.timesteps if t_max is None else max(1, min(t_max, self.timesteps))
        t = torch.randint(0, high, (b,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
        xt = self.q_sample(x0, t, noise)
        return torch.mean((model(xt, t) - noise) ** 2)
