"""The scorer's per-job memory of where a job's part normally sits against its outline.

A layer shift or a warped corner persists: every layer after it is displaced from its designed
outline by the same amount, while it matches its (equally displaced) previous layer. The
geometry channel sees the persistence by comparing a layer's placement (its part's offset from
the expected outline and its shape deviation, ``scorer.geometry.OUTLINE_STATE``) with the
job's normal placement: the median of its last ``window`` layers that were not flagged. A
flagged layer never enters it, so once a shift is seen the reference holds and the evidence
stays (the monitor's job centre holds the same way). The segmenter's bias against the designed
outline, which differs from job to job, cancels. The placement is known once half the window
is there: a median of 8 layers is not moved by a print's few first (solid bottom) layers.

Bounded: ``window`` states per job, ``jobs`` jobs (``scorer.history.JobStore``, as the layer
history). A job not held is read back with ``load(key, before, window)`` from the
outline states the service stores with its scores, so a restarted scorer keeps the reference.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import numpy as np

from scorer.history import JobKey, JobStore

State = tuple[float, float, float]
Loader = Callable[[JobKey, int, int], Iterable[State]]


class JobPlacements:
    """Normal placements of up to ``jobs`` jobs, each from its last ``window`` unflagged layers;
    a job's placement is known once it has ``minimum`` of them (half the window if not given)."""

    def __init__(
        self,
        window: int = 16,
        minimum: int | None = None,
        jobs: int = 256,
        load: Loader | None = None,
    ) -> None:
        minimum = max(window // 2, 1) if minimum is None else minimum
        if window < 1 or not 1 <= minimum <= window:
            raise ValueError(
                f"need window >= 1 and 1 <= minimum <= window, got {window}, {minimum}"
            )
        self.window, self.minimum = window, minimum
        self._load = load
        self._store: JobStore[deque[State]] = JobStore(jobs, self._read_back)

    def placement(self, key: JobKey, layer: int) -> State | None:
        """The job's normal placement for ``layer`` (its median state), None until known."""
        held = self._store.get(key, layer)
        if len(held) < self.minimum:
            return None
        m = np.median(np.asarray(held, np.float64), axis=0)
        return (float(m[0]), float(m[1]), float(m[2]))

    def add(self, key: JobKey, layer: int, state: State | None, flagged: bool) -> None:
        """Remember a scored layer's placement unless it was flagged or had none."""
        if state is None or flagged or not all(np.isfinite(state)):
            return
        self._store.get(key, layer).append((float(state[0]), float(state[1]), float(state[2])))

    def _read_back(self, key: JobKey, layer: int) -> deque[State]:
        loaded = list(self._load(key, layer, self.window)) if self._load is not None else []
        return deque(loaded[-self.window :], maxlen=self.window)

    def clear(self) -> None:
        """Forget every job (after a rebalance, as the layer history does)."""
        self._store.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._store
