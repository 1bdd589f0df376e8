"""A print: one job's layers in order, each with its ground truth.

Every layer is rendered on its own from (job seed, layer), first clean, then with the
defects active on that layer; the camera develops both with the same noise, so the mask is
exactly where the defects changed the frame and ``clean`` is the defect-free twin.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .categories import Category, resolve_category
from .defect_types import DefectEvent
from .defects import active, apply, check_events
from .fdm import FdmJob, FdmRenderer
from .lpbf import LpbfJob, LpbfRenderer
from .noise import rng_for

Renderer = FdmRenderer | LpbfRenderer


@dataclass
class LayerFrame:
    """One camera frame of a print and its truth."""

    layer: int
    z_mm: float
    image: np.ndarray  # uint8, H×W (grey) or H×W×3 (RGB)
    mask: np.ndarray  # uint8 H×W, 255 exactly where the defects changed the image
    defects: list[dict[str, Any]] = field(default_factory=list)  # kind, severity, onset_layer
    clean: np.ndarray | None = None  # the same frame without the defects

    @property
    def anomalous(self) -> bool:
        return bool(self.defects) and bool(self.mask.any())

    @property
    def mask_area(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def truth(self) -> dict[str, Any]:
        """JSON-ready ground truth of the frame."""
        return {
            "layer": self.layer,
            "z_mm": self.z_mm,
            "defects": self.defects,
            "mask_area": self.mask_area,
        }


def make_renderer(
    category: Category, seed: int, size: int = 256, layers: int = 100, rgb: bool = False
) -> Renderer:
    """The renderer of one job: job parameters are drawn from (category, seed)."""
    if size < 32:
        raise ValueError(f"size must be at least 32 px, got {size}")
    if category.process == "fdm":
        return FdmRenderer(FdmJob.sample(category, seed, size, layers, rgb))
    return LpbfRenderer(LpbfJob.sample(category, seed, size, layers, rgb))


def render_layer(renderer: Renderer, layer: int, events: Iterable[DefectEvent] = ()) -> LayerFrame:
    """Render one layer of a job with the given defect events (those active on it apply)."""
    job = renderer.job
    ctx = renderer.context(layer)
    live = active(list(events), renderer.process, layer, job.seed)
    defective = apply(ctx, live) if live else None
    flicker = 1.0 + 0.015 * float(rng_for(job.seed, "flicker", layer).standard_normal())
    clean, image, mask = job.camera.develop(
        ctx.radiance, defective, rng_for(job.seed, "sensor", layer), flicker
    )
    if job.channels == 1:
        clean, image = clean[..., 0], image[..., 0]
    truth = [
        {
            "kind": inst.kind,
            "severity": inst.severity,
            "onset_layer": inst.onset,
            "extent": round(inst.extent, 3),
        }
        for _, inst in live
    ]
    return LayerFrame(layer, job.z_mm(layer), image, mask, truth, clean)


def expected_outline(renderer: Renderer, layer: int) -> np.ndarray:
    """The designed part section of ``layer`` (uint8 H×W, 1 = material), as the slicer's outline
    of that layer would draw it in the camera frame: the reference a layer is compared with."""
    return renderer.expected_outline(layer)


def _events(defects: Iterable[DefectEvent | str]) -> list[DefectEvent]:
    return [d if isinstance(d, DefectEvent) else DefectEvent.parse(d) for d in defects]


def simulate_print(
    layers: int,
    defects: Iterable[DefectEvent | str] = (),
    seed: int = 0,
    size: int = 256,
    process: str = "fdm",
    category: str | None = None,
    rgb: bool = False,
) -> Iterator[LayerFrame]:
    """Frames of one simulated print, layer by layer.

    A ``category`` fixes the process (``process`` then only matters without one, picking
    that process's default category). Defects are :class:`DefectEvent` or
    ``"KIND@LAYER[:SEVERITY]"`` strings; each starts at its layer and then persists, grows or
    is covered as its kind does.
    """
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    cat = resolve_category(category, process)
    events = _events(defects)
    check_events(events, cat)
    renderer = make_renderer(cat, seed, size, layers, rgb)
    # not a generator function: bad arguments fail at the call, frames render lazily
    return (render_layer(renderer, layer, events) for layer in range(layers))
