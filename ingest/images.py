"""Bounded image encoding and decoding.

The pixel count is read from the PNG/JPEG header *before* decoding, so a small compressed
file that claims to be 60000×60000 is refused instead of allocating gigabytes.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from layerwatch.core.settings import DEFAULT_MAX_PIXELS

__all__ = ["DEFAULT_MAX_PIXELS", "ImageError", "decode_image", "encode_png", "read_image_file"]

PNG_SIG = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageError(ValueError):
    """The bytes are not an image we accept (format, size, corruption)."""


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG or JPEG header without decoding the pixels."""
    if data[:8] == PNG_SIG:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("truncated PNG header")
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] == JPEG_SOI:
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                raise ImageError("corrupt JPEG marker stream")
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (seglen,) = struct.unpack(">H", data[i + 2 : i + 4])
            if seglen < 2:
                raise ImageError("corrupt JPEG segment length")
            if marker in _SOF_MARKERS:
                if i + 9 > len(data):
                    break
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(w), int(h)
            i += 2 + seglen
        raise ImageError("JPEG without a frame header")
    raise ImageError("not a PNG or JPEG image")


def check_png_chunks(data: bytes) -> None:
    """Every chunk's CRC, and IEND last: libpng only warns about a bad CRC in some chunks
    and decodes the rest, so a flipped bit there passed as a good image (found by fuzzing).
    A C-speed CRC over the file, microseconds for a layer image."""
    i = len(PNG_SIG)
    while i + 12 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind = data[i + 4 : i + 8]
        end = i + 12 + length
        if end > len(data):
            raise ImageError(f"truncated PNG: chunk {kind!r} runs past the end")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[i + 4 : end - 4]) != crc:
            raise ImageError(f"corrupt PNG: chunk {kind.decode('latin-1')!r} fails its CRC")
        if kind == b"IEND":
            if end != len(data):
                raise ImageError(f"corrupt PNG: {len(data) - end} bytes after IEND")
            return
        i = end
    raise ImageError("truncated PNG: no IEND chunk")


def decode_image(data: bytes, max_pixels: int, grayscale: bool | None = None) -> np.ndarray:
    """Decode PNG/JPEG bytes to uint8 HxW (gray) or HxWx3 (RGB), refusing oversize images.

    ``grayscale=None`` keeps the file's own channel count (gray stays gray, colour becomes RGB).
    """
    w, h = image_size(data)
    if w <= 0 or h <= 0:
        raise ImageError(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(f"image {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
    if data[:8] == PNG_SIG:
        check_png_chunks(data)
    flag = {
        True: cv2.IMREAD_GRAYSCALE,
        False: cv2.IMREAD_COLOR,
        None: cv2.IMREAD_UNCHANGED,
    }[grayscale]
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if img is None:
        raise ImageError("corrupt or truncated image data")
    if img.dtype != np.uint8:
        img = (img / 257).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        elif img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        else:
            raise ImageError(f"unsupported channel count {img.shape[2]}")
    if img.shape[:2] != (h, w):
        raise ImageError(f"decoded size {img.shape[1]}x{img.shape[0]} differs from header {w}x{h}")
    return img


def encode_png(img: np.ndarray, compression: int = 3) -> bytes:
    """uint8 gray or RGB array → PNG bytes (compression 3: fast, layers are noisy anyway)."""
    if img.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {img.dtype}")
    arr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ImageError("PNG encoding failed")
    return buf.tobytes()


def read_image_file(
    path: str | os.PathLike[str], max_pixels: int, grayscale: bool | None = None
) -> np.ndarray:
    """Decode an image file with the same bounds as a Kafka message; errors name the file."""
    p = Path(path)
    try:
        return decode_image(p.read_bytes(), max_pixels, grayscale)
    except ImageError as exc:
        raise ImageError(f"{p}: {exc}") from exc
