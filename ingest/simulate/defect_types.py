"""Defect events (what the user asks for) and specs (how a kind is drawn and how it evolves)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .noise import rng_for
from .scene import LayerContext, Overrides

_EVENT = re.compile(r"^\s*([a-z_]+)\s*@\s*(\d+)\s*(?::\s*([0-9.eE+-]+))?\s*$")


@dataclass(frozen=True)
class DefectEvent:
    """A defect of ``kind`` that starts at ``layer`` with ``severity`` in (0, 1]."""

    kind: str
    layer: int
    severity: float = 0.6

    def __post_init__(self) -> None:
        if not 0.0 < self.severity <= 1.0:
            raise ValueError(f"severity must be in (0, 1], got {self.severity}")
        if self.layer < 0:
            raise ValueError(f"onset layer must be >= 0, got {self.layer}")

    @classmethod
    def parse(cls, text: str) -> DefectEvent:
        """Parse ``KIND@LAYER[:SEVERITY]``, e.g. ``crack@40:0.8``."""
        m = _EVENT.match(text)
        if not m:
            raise ValueError(f"expected KIND@LAYER[:SEVERITY], e.g. crack@40:0.8; got {text!r}")
        kind, layer, sev = m.groups()
        return cls(kind, int(layer), float(sev) if sev else 0.6)

    def __str__(self) -> str:
        return f"{self.kind}@{self.layer}:{self.severity:g}"


@dataclass(frozen=True)
class DefectInstance:
    """One defect as drawn on one layer: its event plus how far it has evolved."""

    kind: str
    severity: float
    onset: int
    layer: int
    extent: float  # growth factor, 1 at onset
    seed: int

    def anchor(self, *part: object) -> np.random.Generator:
        """Draws fixed for the defect's whole life (where it is, its shape; ``part`` i)."""
        return rng_for(self.seed, "defect-anchor", self.kind, self.onset, *part)

    def fresh(self) -> np.random.Generator:
        """Draws renewed every layer (e.g. new pores, new spatter)."""
        return rng_for(self.seed, "defect-layer", self.kind, self.onset, self.layer)


Paint = Callable[[LayerContext, np.ndarray, DefectInstance], np.ndarray]
Override = Callable[[LayerContext, DefectInstance], Overrides]


@dataclass(frozen=True)
class DefectSpec:
    """How one defect kind is drawn, where it can be seen and how it evolves over layers.

    ``override`` changes the process (re-rendered, e.g. thinner beads); ``paint`` then draws
    on the radiance. ``lifetime`` is how many layers it stays visible from its onset (None:
    to the end of the print); its extent grows by ``growth`` per layer up to ``max_extent``.
    """

    kind: str
    process: str
    description: str
    paint: Paint | None = None
    override: Override | None = None
    stages: tuple[str, ...] = ("top",)
    lifetime: int | None = None
    growth: float = 0.0
    max_extent: float = 2.5

    def instance(self, event: DefectEvent, layer: int, seed: int) -> DefectInstance | None:
        """The defect on ``layer``, or None if it has not started or is already covered."""
        age = layer - event.layer
        if age < 0 or (self.lifetime is not None and age >= self.lifetime):
            return None
        extent = min(self.max_extent, 1.0 + self.growth * age)
        return DefectInstance(event.kind, event.severity, event.layer, layer, extent, seed)
