"""Seeded random streams and cheap noise fields.

Every random draw in the simulator comes from a Generator seeded by (seed, *keys), so that
any layer of any job can be rendered on its own, in any order, with identical bytes.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

_MASK64 = (1 << 64) - 1


def _key(k: object) -> int:
    if isinstance(k, bool | int | np.integer):
        return int(k) & _MASK64
    if isinstance(k, float):
        return round(k * 1e6) & _MASK64
    return zlib.crc32(str(k).encode())


def rng_for(seed: int, *keys: object) -> np.random.Generator:
    """A Generator for one purpose: same (seed, keys) → same stream, never global state."""
    return np.random.default_rng(np.random.SeedSequence([_key(seed), *map(_key, keys)]))


def derive_seed(seed: int, *keys: object) -> int:
    """A child seed (31 bits) for a sub-job, e.g. one image of a data set."""
    return int(rng_for(seed, "derive", *keys).integers(0, 2**31 - 1))


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Approximately standard-normal float32 noise (Irwin-Hall sum of 4 uniforms).

    Five times faster than ``standard_normal``; sensor noise needs the scale, not the tails.
    """
    n = int(np.prod(shape))
    raw = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    u = raw.view(np.uint16).reshape(4, n)
    s = u[0].astype(np.float32)
    s += u[1]
    s += u[2]
    s += u[3]
    s -= 4 * 32767.5
    s *= 1.0 / 37837.2
    return s.reshape(shape)


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], cells: float, octaves: int = 1
) -> np.ndarray:
    """Smooth zero-mean noise (std ≈ 1) with about ``cells`` bumps across the larger side.

    A coarse random grid upsampled with bicubic interpolation; octaves add finer detail
    (each half the amplitude, twice the frequency).
    """
    h, w = shape
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = max(2.0, cells * 2**o)
        gh = max(2, round(c * h / max(h, w))) + 3
        gw = max(2, round(c * w / max(h, w))) + 3
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        big = cv2.resize(grid, (w + 2 * (w // gw + 1), h + 2 * (h // gh + 1)), cv2.INTER_CUBIC)
        oy, ox = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
        out += amp * big[oy : oy + h, ox : ox + w]
        total += amp * amp
        amp *= 0.5
    out *= 1.0 / (0.85 * np.sqrt(total))
    return out


def hash01(k: np.ndarray, salt: float = 0.0) -> np.ndarray:
    """A cheap deterministic per-integer pseudo-random value in [0, 1) (e.g. per infill line)."""
    v = np.sin(k * 12.9898 + salt * 78.233) * 43758.5453
    return v - np.floor(v)
