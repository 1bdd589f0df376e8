"""Overlapping patch tiling and seam-free stitching, vectorised over images and patches."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F


def axis_positions(size: int, patch: int, stride: int) -> list[int]:
    """Patch origins covering ``[0, size)``; the last patch is flush with the edge."""
    if size < patch:
        raise ValueError(f"size {size} smaller than patch {patch}")
    if stride <= 0 or stride > patch:
        raise ValueError(f"stride must be in 1..patch, got {stride}")
    pos = list(range(0, size - patch + 1, stride))
    if pos[-1] != size - patch:
        pos.append(size - patch)
    return pos


@lru_cache(maxsize=32)
def window_2d(patch: int, floor: float = 0.05) -> torch.Tensor:
    """Raised-cosine (Hann) weights floored above zero so every pixel keeps some weight."""
    n = torch.arange(patch, dtype=torch.float64)
    w = 0.5 - 0.5 * torch.cos(2 * torch.pi * (n + 0.5) / patch)
    w = w.clamp(min=floor)
    return (w[:, None] * w[None, :]).float()


@dataclass(frozen=True)
class PatchGrid:
    """Where the patches of an H×W image sit, plus the index tables used to cut and stitch."""

    height: int
    width: int
    patch: int
    stride: int

    @property
    def ys(self) -> list[int]:
        return axis_positions(self.height, self.patch, self.stride)

    @property
    def xs(self) -> list[int]:
        return axis_positions(self.width, self.patch, self.stride)

    @property
    def origins(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.ys for x in self.xs]

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)

    def _rows_cols(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        r = torch.arange(self.patch, device=device)
        ys = torch.tensor(self.ys, device=device)[:, None] + r  # (ny, p)
        xs = torch.tensor(self.xs, device=device)[:, None] + r  # (nx, p)
        ny, nx = len(self.ys), len(self.xs)
        rows = ys[:, None, :].expand(ny, nx, self.patch).reshape(-1, self.patch)  # (N, p)
        cols = xs[None, :, :].expand(ny, nx, self.patch).reshape(-1, self.patch)  # (N, p)
        return rows, cols

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, N, C, p, p)."""
        rows, cols = self._rows_cols(images.device)
        out = images[:, :, rows[:, :, None], cols[:, None, :]]  # (B, C, N, p, p)
        return out.permute(0, 2, 1, 3, 4)

    def stitch(self, patches: torch.Tensor, floor: float = 0.05) -> torch.Tensor:
        """(B, N, C, p, p) → (B, C, H, W): window-weighted mean of the overlapping patches."""
        b, n, c, p, _ = patches.shape
        rows, cols = self._rows_cols(patches.device)
        flat = (rows[:, :, None] * self.width + cols[:, None, :]).reshape(-1)  # (N·p·p,)
        w = window_2d(p, floor).to(patches.device, patches.dtype)
        src = (patches * w).permute(0, 2, 1, 3, 4).reshape(b * c, -1)
        acc = torch.zeros(b * c, self.height * self.width, device=patches.device, dtype=src.dtype)
        acc.index_add_(1, flat, src)
        norm = torch.zeros(self.height * self.width, device=patches.device, dtype=src.dtype)
        norm.index_add_(0, flat, w.expand(n, p, p).reshape(-1))
        return (acc / norm).reshape(b, c, self.height, self.width)


def pad_to_patch(images: torch.Tensor, patch: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad images smaller than one patch; returns the original (H, W) to crop back."""
    h, w = images.shape[-2:]
    ph, pw = max(0, patch - h), max(0, patch - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        images = F.pad(images, (0, pw, 0, ph), mode=mode)
    return images, (h, w)


@lru_cache(maxsize=16)
def position_noise(grid: PatchGrid, channels: int, draws: int, seed: int) -> torch.Tensor:
    """ε per (draw, patch position), seeded by position so an image's score is reproducible.

    Shape (draws, N, C, p, p). Cached: every image of one size shares the same draws.
    """
    out = torch.empty(draws, grid.count, channels, grid.patch, grid.patch)
    g = torch.Generator()
    for k in range(draws):
        for i, (y, x) in enumerate(grid.origins):
            g.manual_seed((seed * 1_000_003 + k * 7_919 + y * 65_537 + x) % (2**63 - 1))
            out[k, i] = torch.randn(channels, grid.patch, grid.patch, generator=g)
    return out
