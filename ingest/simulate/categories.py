"""Named data-set presets: one product / texture family each, like an MVTec-AD category.

A category fixes the process, the shapes, the infill pattern (FDM) or the imaging stage (LPBF)
and the material colour; everything else (size, placement, layer height, lighting, noise...)
is drawn per job, so normal images within a category still vary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROCESSES = ("fdm", "lpbf")
STAGES = {"fdm": ("top",), "lpbf": ("powder", "fused")}
INFILL_PATTERNS = ("rectilinear", "grid", "triangles", "gyroid", "none")


@dataclass(frozen=True)
class Category:
    name: str
    process: str
    shapes: tuple[str, ...]
    stage: str  # FDM: "top"; LPBF: "powder" (after recoat) or "fused" (after exposure)
    material: tuple[float, float, float]  # filament or powder colour, linear RGB in [0, 1]
    infill: str = ""  # FDM: rectilinear | grid | triangles | gyroid | none (walls only)
    description: str = ""

    def __post_init__(self) -> None:
        if self.process not in PROCESSES or self.stage not in STAGES[self.process]:
            raise ValueError(f"bad process/stage {self.process}/{self.stage} in {self.name}")
        if self.process == "fdm" and self.infill not in INFILL_PATTERNS:
            raise ValueError(f"infill must be one of {INFILL_PATTERNS}, got {self.infill!r}")


def colour(rgb: tuple[float, float, float], channels: int) -> np.ndarray:
    """A colour as an array of ``channels`` values (luminance when grey)."""
    c = np.asarray(rgb, np.float32)
    if channels == 1:
        return np.array([0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]], np.float32)
    return c


_ALL_SOLIDS = ("rounded_box", "cylinder", "bracket", "plate_holes")

CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category(
            "fdm_rectilinear",
            "fdm",
            ("rounded_box", "bracket"),
            "top",
            (0.80, 0.80, 0.78),
            "rectilinear",
            "grey PLA boxes and L brackets, rectilinear infill alternating ±45° by layer",
        ),
        Category(
            "fdm_grid",
            "fdm",
            ("plate_holes", "rounded_box"),
            "top",
            (0.95, 0.55, 0.18),
            "grid",
            "orange PETG plates with holes and boxes, grid infill",
        ),
        Category(
            "fdm_triangles",
            "fdm",
            ("bracket", "cylinder"),
            "top",
            (0.30, 0.50, 0.90),
            "triangles",
            "blue PLA brackets and stepped shafts, triangle infill",
        ),
        Category(
            "fdm_gyroid",
            "fdm",
            ("cylinder", "plate_holes"),
            "top",
            (0.92, 0.92, 0.88),
            "gyroid",
            "white PLA shafts and plates, gyroid-like wavy infill",
        ),
        Category(
            "fdm_vase",
            "fdm",
            ("vase",),
            "top",
            (0.85, 0.30, 0.35),
            "none",
            "red PLA lobed vases printed as walls only (no infill)",
        ),
        Category(
            "lpbf_powder",
            "lpbf",
            _ALL_SOLIDS,
            "powder",
            (0.63, 0.62, 0.60),
            description="316L powder bed right after recoating, part hidden under the powder",
        ),
        Category(
            "lpbf_fused",
            "lpbf",
            _ALL_SOLIDS,
            "fused",
            (0.63, 0.62, 0.60),
            description="316L powder bed after exposure: fused, hatched cross-section in powder",
        ),
    )
}

DEFAULT_CATEGORY = {"fdm": "fdm_rectilinear", "lpbf": "lpbf_fused"}


def get_category(name: str | None, process: str = "fdm") -> Category:
    """The named category, or the process's default one."""
    if name is None:
        if process not in DEFAULT_CATEGORY:
            raise ValueError(f"unknown process {process!r}; choose from {PROCESSES}")
        name = DEFAULT_CATEGORY[process]
    try:
        return CATEGORIES[name]
    except KeyError:
        raise ValueError(f"unknown category {name!r}; choose from {sorted(CATEGORIES)}") from None


def resolve_category(name: str | None, process: str | None, strict: bool = False) -> Category:
    """The named category (it fixes the process), else the process's default one.

    With ``strict`` (explicit user input) a category of another process is an error;
    otherwise the category wins, so callers can pass a default process along.
    """
    cat = get_category(name, process or "fdm")
    if strict and process is not None and cat.process != process:
        raise ValueError(f"category {cat.name!r} is an {cat.process} category, not {process}")
    return cat
