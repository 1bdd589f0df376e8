"""The scorer's per-job memory of recent layers: the previous-layer reference (issue 18).

Bounded twice: at most ``layers`` images per job (the highest layer numbers seen) and at
most ``jobs`` jobs (the least recently seen is dropped). A job the memory does not hold, after
a restart or an eviction, is read back from the ``layer_images`` table the service writes
with its scores, so a restarted scorer compares a layer with the same previous layer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import numpy as np

JobKey = tuple[str, str]  # (printer, job)
Loader = Callable[[JobKey, int], Iterable[tuple[int, np.ndarray]]]
T = TypeVar("T")


class JobStore(Generic[T]):
    """One value per job for at most ``jobs`` jobs, the least recently seen dropped; a job not
    held is built by ``make(key, layer)`` (e.g. read back from the database). The bound every
    per-job memory of the scorer shares."""

    def __init__(self, jobs: int, make: Callable[[JobKey, int], T]) -> None:
        if jobs < 1:
            raise ValueError(f"need jobs >= 1, got {jobs}")
        self.jobs = jobs
        self._make = make
        self._store: OrderedDict[JobKey, T] = OrderedDict()

    def get(self, key: JobKey, layer: int) -> T:
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        value = self._store[key] = self._make(key, layer)
        while len(self._store) > self.jobs:
            self._store.popitem(last=False)
        return value

    def values(self) -> Iterable[T]:
        return self._store.values()

    def clear(self) -> None:
        self._store.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __len__(self) -> int:
        return len(self._store)


class LayerHistory:
    """The last ``layers`` images of up to ``jobs`` jobs. ``load(key, before)`` gives a job's
    stored layers below ``before`` when the memory has nothing of that job."""

    def __init__(self, layers: int, jobs: int, load: Loader | None = None) -> None:
        if layers < 0:
            raise ValueError(f"need layers >= 0, got {layers}")
        self.layers = layers
        self._load = load
        self._store: JobStore[dict[int, np.ndarray]] = JobStore(jobs, self._read_back)

    def previous(self, key: JobKey, layer: int) -> np.ndarray | None:
        """The job's highest layer below ``layer`` (a replayed or repeated layer is not its
        own previous), or None."""
        if self.layers == 0:
            return None
        held = self._store.get(key, layer)
        below = [n for n in held if n < layer]
        return held[max(below)] if below else None

    def add(self, key: JobKey, layer: int, image: np.ndarray) -> None:
        """Remember a scored layer; keeps the ``layers`` highest of the job."""
        if self.layers == 0:
            return
        held = self._store.get(key, layer)
        held[layer] = image
        self._trim(held)

    def _read_back(self, key: JobKey, layer: int) -> dict[int, np.ndarray]:
        return self._trim(dict(self._load(key, layer)) if self._load is not None else {})

    def _trim(self, held: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Keep the job's ``layers`` highest layers."""
        for n in sorted(held)[: max(len(held) - self.layers, 0)]:
            del held[n]
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
