"""Anomaly maps as compact 16-bit PNGs for the database (map ≈ png / 65535 · scale)."""

from __future__ import annotations

import cv2
import numpy as np


def compress_map(anomaly_map: np.ndarray) -> tuple[bytes, float]:
    """float map → (16-bit PNG bytes, scale). Relative precision 1/65535 of the map's maximum."""
    m = np.nan_to_num(np.asarray(anomaly_map, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    m = np.maximum(m, 0.0)
    scale = float(m.max()) or 1.0
    q = np.round(m / scale * 65535.0).astype(np.uint16)
    # Level 1: the low bits of a 16-bit map are noise, so level 6 takes 2× as long for the
    # same size (5.5 vs 3.0 ms at 256², measured).
    ok, buf = cv2.imencode(".png", q, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("could not encode the anomaly map")
    return buf.tobytes(), scale


def decompress_map(png: bytes, scale: float) -> np.ndarray:
    q = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if q is None:
        raise ValueError("corrupt anomaly map PNG")
    return q.astype(np.float32) / 65535.0 * np.float32(scale)
