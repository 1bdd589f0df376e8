"""The defect registry: ``DEFECTS[process][kind]`` → :class:`DefectSpec`, and applying them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .categories import Category
from .defect_types import DefectEvent, DefectInstance, DefectSpec
from .fdm_defects import SPECS as _FDM
from .lpbf_defects import SPECS as _LPBF
from .scene import LayerContext, Overrides

DEFECTS: dict[str, dict[str, DefectSpec]] = {
    "fdm": {s.kind: s for s in _FDM},
    "lpbf": {s.kind: s for s in _LPBF},
}
DEFECT_KINDS: dict[str, tuple[str, ...]] = {p: tuple(d) for p, d in DEFECTS.items()}


def kinds_for(category: Category) -> tuple[str, ...]:
    """Defect kinds visible in a category (e.g. no porosity under fresh powder)."""
    return tuple(k for k, s in DEFECTS[category.process].items() if category.stage in s.stages)


def check_events(events: Sequence[DefectEvent], category: Category) -> None:
    """Fail early, with the valid choices, on a kind the category cannot show."""
    valid = kinds_for(category)
    for e in events:
        if e.kind not in valid:
            raise ValueError(
                f"defect {e.kind!r} is not available for category {category.name!r} "
                f"({category.process}, stage {category.stage}); choose from {', '.join(valid)}"
            )


def active(
    events: Sequence[DefectEvent], process: str, layer: int, seed: int
) -> list[tuple[DefectSpec, DefectInstance]]:
    """The defects visible on ``layer``, with how far each has grown."""
    out = []
    for e in events:
        spec = DEFECTS[process][e.kind]
        inst = spec.instance(e, layer, seed)
        if inst is not None:
            out.append((spec, inst))
    return out


def apply(ctx: LayerContext, defects: Sequence[tuple[DefectSpec, DefectInstance]]) -> np.ndarray:
    """The layer's radiance with the defects: process overrides first (one re-render), then
    the painted effects in order."""
    ov = Overrides()
    for spec, inst in defects:
        if spec.override is not None:
            ov = ov.merge(spec.override(ctx, inst))
    rad = ctx.radiance if ov.empty else ctx.render(ov)
    for spec, inst in defects:
        if spec.paint is not None:
            rad = spec.paint(ctx, rad, inst)
    return rad
