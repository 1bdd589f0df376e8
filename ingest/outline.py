"""Expected-outline masks (issue 18): the part section a slicer expects on a layer, in the
camera frame, uint8 H×W with 1 = material.

On the wire and on disk an outline is a grayscale PNG of the same size as its layer image;
0 is bed, and material is 1 (what the project writes) or 255 (what an image editor or a
slicer plug-in writes, visible when opened). Anything else is refused with the reason, so a
wrong file is never mistaken for a part.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ingest.images import ImageError, decode_image, encode_png, image_size

OUTLINE_SUFFIX = ".outline.png"


class OutlineError(ValueError):
    """An outline that cannot be used; the message says what is wrong."""


def encode_outline(mask: np.ndarray) -> bytes:
    """A 0/1 mask as a grayscale PNG of 0/1 (a few hundred bytes to a few KB at 256²)."""
    if mask.ndim != 2:
        raise OutlineError(f"an outline is a 2-D mask, got shape {mask.shape}")
    return encode_png((np.asarray(mask) > 0).astype(np.uint8), compression=6)


def decode_outline(data: bytes, width: int, height: int, max_pixels: int) -> np.ndarray:
    """PNG bytes → uint8 0/1 mask of ``height`` × ``width``, decoding bounded by ``max_pixels``."""
    if not data:
        raise OutlineError("empty outline")
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise OutlineError("not a PNG (an outline must be a lossless PNG mask)")
    try:
        if image_size(data) != (width, height):
            raise OutlineError(
                f"outline is {image_size(data)[0]}x{image_size(data)[1]}, the layer image is "
                f"{width}x{height}"
            )
        arr = decode_image(data, max_pixels, grayscale=True)
    except ImageError as exc:
        raise OutlineError(str(exc)) from exc
    values = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))  # faster than unique
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        shown = ", ".join(str(v) for v in values[:6]) + (", …" if len(values) > 6 else "")
        raise OutlineError(
            f"not a binary mask: pixel values {shown} (expected 0 and 1, or 0 and 255)"
        )
    return (arr > 0).astype(np.uint8)


def outline_path(image_path: Path) -> Path:
    """``layer_0042.png`` → ``layer_0042.outline.png`` (same folder)."""
    name = image_path.name
    stem = name[: -len(image_path.suffix)] if image_path.suffix else name
    return image_path.with_name(stem + OUTLINE_SUFFIX)


def is_outline_file(path: Path) -> bool:
    return path.name.lower().endswith(OUTLINE_SUFFIX)


def read_outline_file(path: Path, width: int, height: int, max_pixels: int) -> np.ndarray:
    """Read and check an outline file; errors name the file and what is wrong with it."""
    try:
        return decode_outline(path.read_bytes(), width, height, max_pixels)
    except OSError as exc:
        raise OutlineError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except OutlineError as exc:
        raise OutlineError(f"{path}: {exc}") from exc
