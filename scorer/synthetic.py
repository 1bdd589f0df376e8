"""Synthetic anomalies for DiffusionAD's segmentation training (DRAEM-style, no texture set).

Perlin-noise masks give irregular blob shapes; the anomaly source is either another normal
patch cut into shuffled tiles (plausible material, wrong structure) or a procedural Perlin
texture (foreign material), blended as S = x(1 − M) + (1 − β)·A·M + β·x·M.
"""

from __future__ import annotations

import math

import torch


def _fade(t: torch.Tensor) -> torch.Tensor:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_2d(size: int, res: int, generator: torch.Generator) -> torch.Tensor:
    """Gradient noise on a size×size grid with ``res`` cells per side (res divides size)."""
    if size % res:
        raise ValueError(f"res {res} must divide size {size}")
    d = size // res
    angles = 2 * math.pi * torch.rand(res + 1, res + 1, generator=generator)
    grads = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)  # (res+1, res+1, 2)
    lin = torch.arange(size, dtype=torch.float32) / d
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    frac = torch.stack([gy % 1, gx % 1], dim=-1)  # (size, size, 2)

    def corner(dy: int, dx: int) -> torch.Tensor:
        g = grads[dy : dy + res, dx : dx + res]
        g = g.repeat_interleave(d, 0).repeat_interleave(d, 1)
        shift = frac - torch.tensor([dy, dx], dtype=torch.float32)
        return (shift * g).sum(-1)

    t = _fade(frac)
    top = torch.lerp(corner(0, 0), corner(0, 1), t[..., 1])
    bottom = torch.lerp(corner(1, 0), corner(1, 1), t[..., 1])
    return math.sqrt(2) * torch.lerp(top, bottom, t[..., 0])


def _random_res(size: int, generator: torch.Generator) -> int:
    """A power of two between 1 and size/4 cells per side (coarse blobs to fine speckle)."""
    top = max(0, int(math.log2(max(size // 4, 1))))
    return 2 ** int(torch.randint(0, top + 1, (1,), generator=generator))


def perlin_mask(size: int, generator: torch.Generator, threshold: float = 0.5) -> torch.Tensor:
    """Binary (size, size) float mask from thresholded Perlin noise; never empty."""
    for _ in range(8):
        m = (perlin_2d(size, _random_res(size, generator), generator) > threshold).float()
        if m.sum() >= 4:
            return m
    c, r = size // 2, max(1, size // 8)
    m = torch.zeros(size, size)
    m[c - r : c + r, c - r : c + r] = 1.0
    return m


def shuffled_tiles(patch: torch.Tensor, tiles: int, generator: torch.Generator) -> torch.Tensor:
    """(C, p, p) patch cut into tiles×tiles blocks placed in random order."""
    c, p, _ = patch.shape
    s = p // tiles
    if s == 0:
        return patch
    blocks = patch[:, : s * tiles, : s * tiles].reshape(c, tiles, s, tiles, s)
    blocks = blocks.permute(1, 3, 0, 2, 4).reshape(tiles * tiles, c, s, s)
    blocks = blocks[torch.randperm(tiles * tiles, generator=generator)]
    out = patch.clone()
    grid = blocks.reshape(tiles, tiles, c, s, s).permute(2, 0, 3, 1, 4).reshape(c, s * tiles, -1)
    out[:, : s * tiles, : s * tiles] = grid
    return out


def procedural_texture(channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """A Perlin texture in [−1, 1] with a random level and contrast: foreign material."""
    noise = perlin_2d(size, _random_res(size, generator), generator)
    level, contrast = (torch.rand(2, generator=generator) * 2 - 1).tolist()
    tex = (level + (0.5 + abs(contrast)) * noise).clamp(-1, 1)
    return tex[None].expand(channels, size, size).clone()


def synthesize(
    x: torch.Tensor,
    sources: torch.Tensor,
    generator: torch.Generator,
    anomalous_share: float = 0.5,
    beta_range: tuple[float, float] = (0.2, 0.8),
    tiles: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, p, p) normal patches → (augmented patches, (B, 1, p, p) masks).

    ``sources`` are other normal patches for the shuffled-tile anomaly source; each anomalous
    sample uses tiles or a procedural texture with equal probability.
    """
    b, c, p, _ = x.shape
    out, masks = x.clone(), torch.zeros(b, 1, p, p)
    for i in range(b):
        if float(torch.rand(1, generator=generator)) >= anomalous_share:
            continue
        m = perlin_mask(p, generator)
        if float(torch.rand(1, generator=generator)) < 0.5:
            a = shuffled_tiles(sources[i], tiles, generator)
        else:
            a = procedural_texture(c, p, generator)
        beta = float(torch.empty(1).uniform_(*beta_range, generator=generator))
        out[i] = x[i] * (1 - m) + (1 - beta) * a * m + beta * x[i] * m
        masks[i, 0] = m
    return out, masks
