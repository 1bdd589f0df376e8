"""The scorer's per-job memory of recent layers: the previous-layer reference (issue 18).

Bounded twice: at most ``layers`` images per job (the highest layer numbers seen) and at
most ``jobs`` jobs (the least recently seen is dropped). A job the memory does not hold, after
a restart or an eviction, is read back from the ``layer_images`` table the service writes
with its scores, so a restarted scorer compares a layer with the same previous layer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

import numpy as np

JobKey = tuple[str, str]  # (printer, job)
Loader = Callable[[JobKey, int], Iterable[tuple[int, np.ndarray]]]


class LayerHistory:
    """The last ``layers`` images of up to ``jobs`` jobs. ``load(key, before)`` gives a job's
    stored layers below ``before`` when the memory has nothing of that job."""

    def __init__(self, layers: int, jobs: int, load: Loader | None = None) -> None:
        if layers < 0 or jobs < 1:
            raise ValueError(f"need layers >= 0 and jobs >= 1, got {layers}, {jobs}")
        self.layers = layers
        self.jobs = jobs
        self._load = load
        self._store: OrderedDict[JobKey, dict[int, np.ndarray]] = OrderedDict()

    def previous(self, key: JobKey, layer: int) -> np.ndarray | None:
        """The job's highest layer below ``layer`` (a replayed or repeated layer is not its
        own previous), or None."""
        if self.layers == 0:
            return None
        held = self._job(key, layer)
        below = [n for n in held if n < layer]
        return held[max(below)] if below else None

    def add(self, key: JobKey, layer: int, image: np.ndarray) -> None:
        """Remember a scored layer; keeps the ``layers`` highest of the job."""
        if self.layers == 0:
            return
        held = self._job(key, layer)
        held[layer] = image
        for n in sorted(held)[: max(len(held) - self.layers, 0)]:
            del held[n]

    def _job(self, key: JobKey, layer: int) -> dict[int, np.ndarray]:
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        held = dict(self._load(key, layer)) if self._load is not None else {}
        for n in sorted(held)[: max(len(held) - self.layers, 0)]:
            del held[n]
        self._store[key] = held
        while len(self._store) > self.jobs:
            self._store.popitem(last=False)
        return held

    def clear(self) -> None:
        """Forget every job (partitions moved: another scorer may score their next layers, so
        a job seen again is read back from the database, which has what that one stored)."""
        self._store.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._store

    @property
    def size(self) -> tuple[int, int]:
        """(jobs held, images held)."""
        return len(self._store), sum(len(v) for v in self._store.values())
