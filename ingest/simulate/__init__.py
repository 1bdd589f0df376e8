"""Layer-image simulator: realistic FDM and LPBF layers, defects with pixel-exact masks.

Public API::

    simulate_print(layers, defects, seed, size, process, category, rgb) -> Iterator[LayerFrame]
    write_dataset(out, category, ...) -> summary        # MVTec-AD layout under out/category
    DefectEvent("crack", 40, 0.8) or DefectEvent.parse("crack@40:0.8")
    DEFECT_KINDS["fdm"], DEFECT_KINDS["lpbf"]            # kind names per process
    CATEGORIES["fdm_rectilinear"], ...                   # data-set presets

See docs/simulator.md for the model.
"""

from .categories import CATEGORIES, Category
from .dataset import write_dataset
from .defect_types import DefectEvent
from .defects import DEFECT_KINDS, DEFECTS, kinds_for
from .printjob import LayerFrame, expected_outline, make_renderer, render_layer, simulate_print

__all__ = [
    "CATEGORIES",
    "DEFECTS",
    "DEFECT_KINDS",
    "Category",
    "DefectEvent",
    "LayerFrame",
    "expected_outline",
    "kinds_for",
    "make_renderer",
    "render_layer",
    "simulate_print",
    "write_dataset",
]
