"""The camera: optics blur, uneven lighting, exposure, sensor noise, quantisation.

It also turns a (clean, defective) pair of radiance images into the two uint8 frames and the
pixel-exact ground-truth mask: both frames share the same noise draw, so the mask is exactly
where the defect changed the picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .noise import gaussian_noise

_CLOSE = np.ones((3, 3), np.uint8)
# a change below this many grey levels (before noise) is dropped, so masks have no faint tails
MIN_CHANGE = 0.5


@dataclass(frozen=True)
class Camera:
    """Per-job camera: ``gain`` is illumination × exposure × 255 (H×W×1, fixed to the camera)."""

    gain: np.ndarray
    blur_sigma: float
    read_noise: float  # grey levels
    shot_noise: float  # variance per grey level of signal

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        size: int,
        exposure: tuple[float, float],
        gradient: tuple[float, float],
        vignette: tuple[float, float],
        blur: tuple[float, float] = (0.45, 0.75),
    ) -> Camera:
        """A random camera set-up: exposure, a linear light fall-off, vignetting, noise."""
        c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
        phi = rng.uniform(0, 2 * np.pi)
        g = rng.uniform(*gradient)
        lin = 1.0 + g * (np.cos(phi) * c[None, :] + np.sin(phi) * c[:, None])
        r2 = c[None, :] ** 2 + c[:, None] ** 2
        vig = 1.0 - rng.uniform(*vignette) * r2 / 2.0
        gain = 255.0 * rng.uniform(*exposure) * lin * vig
        return cls(
            gain=gain.astype(np.float32)[..., None],
            blur_sigma=rng.uniform(*blur) * size / 256.0,
            read_noise=rng.uniform(1.2, 2.8),
            shot_noise=rng.uniform(0.02, 0.08),
        )

    def expose(self, radiance: np.ndarray, flicker: float) -> np.ndarray:
        """Lens blur then illumination: grey levels before noise (H×W×C float32)."""
        h, w, c = radiance.shape
        out = cv2.GaussianBlur(radiance, (0, 0), self.blur_sigma, borderType=cv2.BORDER_REFLECT)
        out = out.reshape(h, w, c)
        out *= self.gain * np.float32(flicker)
        return out

    def _quantise(self, signal: np.ndarray, z: np.ndarray) -> np.ndarray:
        sigma = np.sqrt(self.read_noise**2 + self.shot_noise * np.maximum(signal, 0.0))
        return np.clip(signal + sigma * z + 0.5, 0, 255).astype(np.uint8)

    def develop(
        self,
        clean: np.ndarray,
        defective: np.ndarray | None,
        rng: np.random.Generator,
        flicker: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(clean frame, defective frame, mask) from radiance images (H×W×C).

        The mask is the set of pixels where the defect changes the exposed signal by at least
        ``MIN_CHANGE`` grey levels, closed over pinholes; the defective frame equals the clean
        one elsewhere, and inside the mask any pixel that happens to quantise to the clean
        value is moved by one grey level, so ``mask > 0`` is exactly ``clean != defective``.
        """
        sc = self.expose(clean, flicker)
        z = gaussian_noise(rng, sc.shape)
        img_c = self._quantise(sc, z)
        h, w, _ = sc.shape
        if defective is None:
            return img_c, img_c, np.zeros((h, w), np.uint8)
        sd = self.expose(defective, flicker)
        delta = sd - sc
        region = (np.abs(delta).max(axis=2) >= MIN_CHANGE).astype(np.uint8)
        region = cv2.morphologyEx(region, cv2.MORPH_CLOSE, _CLOSE)
        inside = region.astype(bool)
        sd = np.where(inside[..., None], sd, sc)
        img_d = self._quantise(sd, z)
        same = inside & (img_c == img_d).all(axis=2)
        if same.any():
            step = np.where(delta[same] >= 0, 1, -1)
            v = img_c[same].astype(np.int16)
            step = np.where(v + step > 255, -1, np.where(v + step < 0, 1, step))
            img_d[same] = (v + step).astype(np.uint8)
        return img_c, img_d, region * np.uint8(255)
