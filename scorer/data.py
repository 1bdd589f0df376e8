"""Image loading with bounded decoding, normal-image sets and MVTec-style test sets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ingest.images import DEFAULT_MAX_PIXELS, ImageError, read_image_file
from scorer.methods import LayerReference

# Formats whose size the bounded decoder reads from the header before decoding.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

__all__ = ["DEFAULT_MAX_PIXELS", "ImageError", "read_image"]


def read_image(
    path: Path | str, channels: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A file as uint8 H×W (channels=1) or H×W×3 RGB (channels=3), with the wire's size bound."""
    img = read_image_file(path, max_pixels, grayscale=channels == 1)
    if channels == 3 and img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img


def list_images(path: Path | str) -> list[Path]:
    """One image, or every image below a folder (recursive, sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def normal_image_folder(path: Path | str) -> Path:
    """An MVTec category folder trains on ``train/good``; any other folder is used as is."""
    path = Path(path)
    good = path / "train" / "good"
    return good if good.is_dir() else path


def to_model_tensor(images: list[np.ndarray], channels: int) -> torch.Tensor:
    """Same-size uint8 images → (B, C, H, W) float32 in [−1, 1], converting gray↔RGB as needed."""
    out = []
    for img in images:
        a = np.asarray(img)
        if a.dtype != np.uint8:
            if np.issubdtype(a.dtype, np.floating):
                a = np.clip(a * 255.0, 0, 255).round().astype(np.uint8)
            else:
                a = (a.astype(np.float32) * (255.0 / np.iinfo(a.dtype).max)).astype(np.uint8)
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if channels == 1 and a.ndim == 3:
            a = cv2.cvtColor(a[:, :, :3], cv2.COLOR_RGB2GRAY)
        elif channels == 3 and a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        a = a[None] if a.ndim == 2 else a[:, :, :3].transpose(2, 0, 1)
        out.append(torch.from_numpy(np.ascontiguousarray(a)))
    return torch.stack(out).float().div_(127.5).sub_(1.0)


def infer_channels(paths: list[Path], max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """3 if any sampled image has colour (channels that differ), else 1."""
    for p in paths[:8]:
        img = read_image(p, channels=3, max_pixels=max_pixels)
        if not (
            np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])
        ):
            return 3
    return 1


@dataclass(frozen=True)
class LabelledSample:
    path: Path
    label: int  # 0 normal, 1 defect
    kind: str  # "good" or the defect folder name
    mask_path: Path | None


def mvtec_test_samples(category: Path | str) -> list[LabelledSample]:
    """``CATEGORY/test/{good,DEFECT}`` with masks from ``ground_truth/DEFECT/NAME_mask.png``."""
    category = Path(category)
    test = category / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{category}: no test/ folder (expected the MVTec-AD layout)")
    out = []
    for kind_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        kind = kind_dir.name
        for img in list_images(kind_dir):
            if kind == "good":
                out.append(LabelledSample(img, 0, kind, None))
                continue
            mask = category / "ground_truth" / kind / f"{img.stem}_mask.png"
            out.append(LabelledSample(img, 1, kind, mask if mask.is_file() else None))
    if not out:
        raise FileNotFoundError(f"{test}: no test images")
    return out


def read_mask(sample: LabelledSample, shape: tuple[int, int]) -> np.ndarray | None:
    """Binary ground truth (all zeros for good images); None when a defect has no mask file."""
    if sample.label == 0:
        return np.zeros(shape, dtype=bool)
    if sample.mask_path is None:
        return None
    mask = read_image(sample.mask_path, channels=1)
    if mask.shape != shape:
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return mask > 127


# Where a data set written with `layerwatch simulate dataset --reference` keeps each image's
# references: CATEGORY/reference/SPLIT/KIND/NAME_prev.png and NAME_outline.png (255 = part).
REFERENCE_DIR = "reference"
PREVIOUS_SUFFIX = "_prev.png"
OUTLINE_SUFFIX = "_outline.png"


def reference_paths(image: Path) -> tuple[Path, Path] | None:
    """(previous layer, outline) paths of an image in the MVTec layout
    (CATEGORY/SPLIT/KIND/NAME.png); None when the image is not inside that layout."""
    image = Path(image)
    if len(image.parts) < 4:
        return None
    kind, split, category = image.parent.name, image.parent.parent.name, image.parents[2]
    folder = category / REFERENCE_DIR / split / kind
    return folder / f"{image.stem}{PREVIOUS_SUFFIX}", folder / f"{image.stem}{OUTLINE_SUFFIX}"


def read_outline(
    path: Path | str, shape: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """An expected-outline PNG as uint8 H×W, 1 = part; ImageError naming the file when it cannot
    be decoded or does not match the layer's size."""
    mask = read_image_file(path, max_pixels, grayscale=True)
    if mask.shape != shape:
        raise ImageError(
            f"{path}: outline is {mask.shape[1]}×{mask.shape[0]}, the layer {shape[1]}×{shape[0]}"
        )
    return (mask > 127).astype(np.uint8)


def _why(path: Path, err: Exception) -> str:
    text = str(err)
    return text if str(path) in text else f"{path}: {text}"


def load_reference(
    image: Path | str,
    shape: tuple[int, int],
    channels: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> LayerReference | None:
    """The references stored beside an image (see ``reference_paths``), or None if it has none.

    A previous layer or outline that is missing or cannot be read is left out, with the reason
    in ``outline_error``: the layer is then scored with what remains (at worst, texture only).
    """
    paths = reference_paths(Path(image))
    if paths is None or not (paths[0].exists() or paths[1].exists()):
        return None
    prev_path, outline_path = paths
    previous = outline = None
    problems = []
    try:
        previous = read_image(prev_path, channels, max_pixels)
        if previous.shape[:2] != shape:
            problems.append(
                f"{prev_path}: previous layer is {previous.shape[1]}×{previous.shape[0]}, "
                f"the layer {shape[1]}×{shape[0]}"
            )
            previous = None
    except (ImageError, OSError, ValueError) as e:
        problems.append(_why(prev_path, e))
    try:
        outline = read_outline(outline_path, shape, max_pixels)
    except (ImageError, OSError, ValueError) as e:
        problems.append(_why(outline_path, e))
    return LayerReference(previous, outline, "; ".join(problems) or None)


def iter_batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
