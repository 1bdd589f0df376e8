"""ε-prediction U-Net (RADAR Fig. 5): residual GroupNorm blocks, time embedding, self-attention.

Attention sits where the feature map is small (the two lowest resolutions and the middle), which
keeps its quadratic cost negligible on 64×64 patches while giving every patch global context.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Architecture settings; stored verbatim in the model artifact."""

    in_channels: int = 1
    base_width: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (16, 8)
    num_heads: int = 4
    patch_size: int = 64
    groups: int = 8
    time_dim_mult: int = 4
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        levels = len(self.channel_mults)
        if self.patch_size % (2 ** (levels - 1)):
            raise ValueError(f"patch_size {self.patch_size} not divisible by 2^{levels - 1}")
        for mult in self.channel_mults:
            if (self.base_width * mult) % self.groups:
                raise ValueError(f"width {self.base_width * mult} not divisible by {self.groups}")

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> UNetConfig:
        d = dict(d)
        d["channel_mults"] = tuple(d["channel_mults"])  # type: ignore[arg-type]
        d["attention_resolutions"] = tuple(d["attention_resolutions"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Transformer / DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    """GroupNorm–SiLU–conv twice, time embedding added in between, 1×1 skip when widths differ."""

    def __init__(self, cin: int, cout: int, tdim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over spatial positions, residual."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c/heads)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class Level(nn.Module):
    """Residual blocks of one resolution, each optionally followed by attention."""

    def __init__(
        self, widths: list[tuple[int, int]], tdim: int, attn: bool, heads: int, groups: int
    ) -> None:
        super().__init__()
        self.res = nn.ModuleList(ResBlock(i, o, tdim, groups) for i, o in widths)
        self.attn = nn.ModuleList(
            SelfAttention(o, heads, groups) if attn else nn.Identity() for _, o in widths
        )


class UNet(nn.Module):
    """ε_θ(x_t, t) for square patches of ``config.patch_size``."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        tdim = c.base_width * c.time_dim_mult
        self.time_mlp = nn.Sequential(
            nn.Linear(c.base_width, tdim), nn.SiLU(), nn.Linear(tdim, tdim)
        )
        self.stem = nn.Conv2d(c.in_channels, c.base_width, 3, padding=1)
        widths = [c.base_width * m for m in c.channel_mults]
        res = c.patch_size
        skips = [c.base_width]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cur = c.base_width
        for i, w in enumerate(widths):
            pairs = []
            for _ in range(c.num_res_blocks):
                pairs.append((cur, w))
                cur = w
                skips.append(w)
            attn = res in c.attention_resolutions
            self.down.append(Level(pairs, tdim, attn, c.num_heads, c.groups))
            last = i == len(widths) - 1
            self.downsample.append(
                nn.Identity() if last else nn.Conv2d(cur, cur, 3, stride=2, padding=1)
            )
            if not last:
                skips.append(cur)
                res //= 2
        self.mid1 = ResBlock(cur, cur, tdim, c.groups)
        self.mid_attn = SelfAttention(cur, c.num_heads, c.groups)
        self.mid2 = ResBlock(cur, cur, tdim, c.groups)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            pairs = []
            for _ in range(c.num_res_blocks + 1):
                pairs.append((cur + skips.pop(), w))
                cur = w
            attn = res in c.attention_resolutions
            self.up.append(Level(pairs, tdim, attn, c.num_heads, c.groups))
            self.upsample.append(nn.Conv2d(cur, cur, 3, padding=1) if i else nn.Identity())
            if i:
                res *= 2
        self.out_norm = nn.GroupNorm(c.groups, cur)
        self.out = nn.Conv2d(cur, c.in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.config.base_width))
        h = self.stem(x)
        hs = [h]
        for level, down in zip(self.down, self.downsample, strict=True):
            for res, attn in zip(level.res, level.attn, strict=True):
                h = attn(res(h, temb))
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for level, up in zip(self.up, self.upsample, strict=True):
            for res, attn in zip(level.res, level.attn, strict=True):
                h = attn(res(torch.cat([h, hs.pop()], dim=1), temb))
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
