"""Real-photograph data sets: crops of scikit-image's texture photographs with planted defects.

The simulator is easier than a camera (issue 23), so the detector is also measured on real
photographs of texture. scikit-image ships three 512×512 grey texture photographs in its wheel
(``skimage/data``): ``gravel`` (granular and stochastic, the look of a powder bed), ``grass``
(fine, stochastic, directional) and ``brick`` (a regular texture). Their licences are in
:data:`PHOTOS` and docs/photos.md; nothing is downloaded.

Each photograph is cut into four regions that never overlap, so no pixel of a test image was
ever seen in training or calibration::

    rows   0–255, all columns     train        → CATEGORY/train/good
    rows 256–383, columns 0–255   calibration  → CATEGORY/calibration/good
    rows 256–383, columns 256–511 test         → CATEGORY/test, ground_truth     (tuning split)
    rows 384–511, all columns     holdout      → CATEGORY/holdout/test, ground_truth (untouched)

A crop is a random square inside its region, in one of the 8 flips/rotations, with a small
gain and offset (±10 %, ±8 grey levels). Defects are painted into test crops by the seeded
procedures of :data:`DEFECTS`, each returning the exact mask of the pixels it changed.
The same seed writes the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .dataset import _prepare, save_png
from .noise import derive_seed

MANIFEST = "simulation.json"  # the name _prepare checks, so a rewrite replaces only our folder

_CC0 = "CC0 1.0 (public domain), per the docstring of skimage.data.{fn}() in scikit-image 0.26; "


@dataclass(frozen=True)
class Photo:
    file: str  # in skimage/data
    granular: bool
    description: str
    licence: str


PHOTOS: dict[str, Photo] = {
    "gravel": Photo(
        "gravel.png", True, "gravel: granular stochastic texture (powder-bed-like)",
        _CC0.format(fn="gravel") + "original: CC0Textures Gravel04",
    ),
    "grass": Photo(
        "grass.png", False, "grass: fine stochastic, directional texture",
        _CC0.format(fn="grass") + "original: DeviantArt linolafett, Grass-01",
    ),
    "brick": Photo(
        "brick.png", False, "brick: regular texture (a wall)",
        _CC0.format(fn="brick") + "original: CC0Textures Bricks25",
    ),
}  # fmt: skip

# (row from, row to, column from, column to) as fractions of the photograph.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "train": (0.0, 0.5, 0.0, 1.0),
    "calibration": (0.5, 0.75, 0.0, 0.5),
    "test": (0.5, 0.75, 0.5, 1.0),
    "holdout": (0.75, 1.0, 0.0, 1.0),
}
GAIN = 0.10  # ± relative gain of a crop
OFFSET = 8.0  # ± grey levels


def load_photo(name: str) -> np.ndarray:
    """The grey uint8 photograph ``name`` from scikit-image's installed data folder."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photograph {name!r}; one of {', '.join(PHOTOS)}")
    import skimage.data

    path = Path(skimage.data.__file__).parent / PHOTOS[name].file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the installed scikit-image (need ≥ 0.26)")
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)  # a known 512×512 file: bounded
    if img is None:
        raise OSError(f"could not decode {path}")
    return img


def region(photo: np.ndarray, name: str) -> np.ndarray:
    """The pixels of one split's region (a view)."""
    h, w = photo.shape[:2]
    r0, r1, c0, c1 = REGIONS[name]
    return photo[round(r0 * h) : round(r1 * h), round(c0 * w) : round(c1 * w)]


def crop(area: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random size² crop of ``area`` in a random flip/rotation with a small gain and offset."""
    h, w = area.shape[:2]
    if h < size or w < size:
        raise ValueError(f"crop size {size} exceeds the region ({h}×{w})")
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    out = np.rot90(area[y : y + size, x : x + size], int(rng.integers(4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain = 1.0 + rng.uniform(-GAIN, GAIN)
    return np.clip(out.astype(np.float32) * gain + rng.uniform(-OFFSET, OFFSET), 0, 255)


# ---- defects: each takes (float image, rng, donor region) and returns (image, bool mask) ------


def _ellipse(size: int, rng: np.random.Generator, lo: int, hi: int) -> np.ndarray:
    """A filled random ellipse of radii in [lo, hi] fully inside the image."""
    ry, rx = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    m = max(ry, rx) + 2
    cy, cx = int(rng.integers(m, size - m)), int(rng.integers(m, size - m))
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (cx, cy), (rx, ry), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(bool)


def _box(size: int, rng: np.random.Generator, lo: int, hi: int) -> tuple[int, int, int, int]:
    h, w = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    y, x = int(rng.integers(2, size - h - 2)), int(rng.integers(2, size - w - 2))
    return y, x, h, w


def cut_paste(img: np.ndarray, rng: np.random.Generator, donor: np.ndarray):
    """A patch of the train region (elsewhere in the photograph) enlarged 1.6–2.4× (coarser
    grain, like a foreign particle or a different powder) and pasted with a hard edge."""
    size = img.shape[0]
    y, x, h, w = _box(size, rng, 16, 36)
    zoom = rng.uniform(1.6, 2.4)
    sh, sw = max(2, round(h / zoom)), max(2, round(w / zoom))
    dy = int(rng.integers(0, donor.shape[0] - sh))
    dx = int(rng.integers(0, donor.shape[1] - sw))
    patch = cv2.resize(donor[dy : dy + sh, dx : dx + sw].astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)  # fmt: skip
    out = img.copy()
    out[y : y + h, x : x + w] = patch
    mask = np.zeros_like(img, dtype=bool)
    mask[y : y + h, x : x + w] = True
    return out, mask


def smooth(img: np.ndarray, rng: np.random.Generator, donor: np.ndarray):
    """A smeared area: an ellipse replaced by a strong blur of itself (texture missing)."""
    mask = _ellipse(img.shape[0], rng, 10, 24)
    blurred = cv2.GaussianBlur(img, (0, 0), rng.uniform(3.0, 6.0))
    return np.where(mask, blurred, img), mask


def streak(img: np.ndarray, rng: np.random.Generator, donor: np.ndarray):
    """A recoater-like streak: a band 5–12 px high, dragged along its length (motion blur)
    and a little brighter or darker."""
    size = img.shape[0]
    h = int(rng.integers(5, 13))
    y = int(rng.integers(4, size - h - 4))
    x0 = int(rng.integers(0, size // 3))
    x1 = int(rng.integers(2 * size // 3, size + 1))
    k = int(rng.integers(15, 32))
    dragged = cv2.blur(img, (k, 1)) + rng.choice([-1, 1]) * rng.uniform(8, 20)
    mask = np.zeros_like(img, dtype=bool)
    mask[y : y + h, x0:x1] = True
    return np.where(mask, dragged, img), mask


def _blob(img: np.ndarray, rng: np.random.Generator, bright: bool):
    mask = _ellipse(img.shape[0], rng, 6, 16)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.5) * mask  # edge falls off inside
    if bright:
        out = img + soft * rng.uniform(45, 90)
    else:
        out = img * (1.0 - soft * rng.uniform(0.35, 0.6))
    return out, mask


def dark_blob(img: np.ndarray, rng: np.random.Generator, donor: np.ndarray):
    """A dark spot (a pore, soot, a burn mark)."""
    return _blob(img, rng, bright=False)


def bright_blob(img: np.ndarray, rng: np.random.Generator, donor: np.ndarray):
    """A bright spot (a spatter particle, a glare)."""
    return _blob(img, rng, bright=True)


def scratch(img: np.ndarray, rng: np.random.Generator, donor: np.ndarray):
    """A thin curved line 1–3 px wide and 40–90 px long, darker or brighter."""
    size = img.shape[0]
    length, angle = rng.uniform(40, 90), rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    t = np.linspace(-0.5, 0.5, 24)
    bend = rng.uniform(-0.15, 0.15) * length * (1 - 4 * t**2)
    xs = cx + t * length * np.cos(angle) - bend * np.sin(angle)
    ys = cy + t * length * np.sin(angle) + bend * np.cos(angle)
    pts = np.clip(np.stack([xs, ys], 1), 0, size - 1).round().astype(np.int32)
    mask = np.zeros(img.shape, np.uint8)
    cv2.polylines(mask, [pts], False, 1, int(rng.integers(1, 4)))
    m = mask.astype(bool)
    if rng.random() < 0.5:
        out = np.where(m, img * rng.uniform(0.3, 0.55), img)
    else:
        out = np.where(m, img + rng.uniform(60, 110), img)
    return out, m


def missing(img: np.ndarray, rng: np.random.Generator, donor: np.ndarray):
    """A missing patch: a rectangle of flat grey at the local mean with faint sensor noise
    (bare plate or short powder feed)."""
    y, x, h, w = _box(img.shape[0], rng, 14, 36)
    out = img.copy()
    level = float(img[y : y + h, x : x + w].mean()) + rng.uniform(-15, 15)
    out[y : y + h, x : x + w] = level + rng.normal(0, 2.0, (h, w))
    mask = np.zeros_like(img, dtype=bool)
    mask[y : y + h, x : x + w] = True
    return out, mask


Defect = Callable[[np.ndarray, np.random.Generator, np.ndarray], tuple[np.ndarray, np.ndarray]]
DEFECTS: dict[str, Defect] = {
    "cut_paste": cut_paste,
    "smooth": smooth,
    "streak": streak,
    "dark_blob": dark_blob,
    "bright_blob": bright_blob,
    "scratch": scratch,
    "missing": missing,
}


def plant(img: np.ndarray, kind: str, rng: np.random.Generator, donor: np.ndarray):
    """``img`` (uint8 or float) with one ``kind`` defect: (uint8 image, uint8 0/1 mask); the
    mask is the region the procedure painted."""
    out, mask = DEFECTS[kind](np.asarray(img, np.float32), rng, donor)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), mask.astype(np.uint8)


def write_photos(
    out: Path | str,
    category: str,
    size: int = 128,
    n_train: int = 200,
    n_calibration: int = 40,
    n_test_good: int = 40,
    n_test_defect: int = 8,
    seed: int = 0,
    on_image: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write ``out/category`` from the photograph of that name (see the module docstring)."""
    photo = load_photo(category)
    root = Path(out) / category
    _prepare(root)
    donor = region(photo, "train").astype(np.float32)
    width = max(3, len(str(max(n_train, n_calibration, n_test_good, n_test_defect, 1) - 1)))
    records: list[dict[str, Any]] = []

    def write(rel: Path, image: np.ndarray, info: dict[str, Any]) -> None:
        save_png(root / rel, image)
        records.append({"file": str(rel), **info})
        if on_image is not None:
            on_image(str(rel))

    normals = [("train", "train/good", n_train), ("calibration", "calibration/good",
               n_calibration)]  # fmt: skip
    for split, folder, n in normals:
        area = region(photo, split)
        for i in range(n):
            rng = np.random.default_rng(derive_seed(seed, category, split, "good", i))
            img = np.clip(np.rint(crop(area, size, rng)), 0, 255).astype(np.uint8)
            write(Path(folder) / f"{i:0{width}d}.png", img, {"split": split})
    for split, base in (("test", Path()), ("holdout", Path("holdout"))):
        area = region(photo, split)
        plan = [("good", i) for i in range(n_test_good)]
        plan += [(k, i) for k in DEFECTS for i in range(n_test_defect)]
        for kind, i in plan:
            rng = np.random.default_rng(derive_seed(seed, category, split, kind, i))
            img = crop(area, size, rng)
            name = f"{i:0{width}d}"
            info: dict[str, Any] = {"split": split, "kind": kind}
            if kind == "good":
                img8 = np.clip(np.rint(img), 0, 255).astype(np.uint8)
            else:
                img8, mask = plant(img, kind, rng, donor)
                mrel = base / "ground_truth" / kind / f"{name}_mask.png"
                save_png(root / mrel, mask * 255)
                info |= {"mask": str(mrel), "mask_area": int(mask.sum())}
            write(base / "test" / kind / f"{name}.png", img8, info)
    summary = {
        "root": str(root),
        "category": category,
        "photograph": PHOTOS[category].description,
        "licence": PHOTOS[category].licence,
        "granular": PHOTOS[category].granular,
        "regions": REGIONS,
        "size": size,
        "seed": seed,
        "train_good": n_train,
        "calibration_good": n_calibration,
        "test_good": n_test_good,
        "test_defect": {k: n_test_defect for k in DEFECTS},
        "holdout": str(root / "holdout"),
    }
    (root / MANIFEST).write_text(json.dumps(summary | {"images": records}, indent=1))
    return summary
