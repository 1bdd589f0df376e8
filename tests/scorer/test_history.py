"""The scorer's per-job layer memory: bounded in layers per job and in jobs, previous layer
found below the current one, and read back through the loader after an eviction."""

from __future__ import annotations

import numpy as np
import pytest

from scorer.history import LayerHistory


def _img(v: int) -> np.ndarray:
    return np.full((4, 4), v, np.uint8)


def test_previous_is_the_highest_layer_below() -> None:
    h = LayerHistory(layers=2, jobs=4)
    key = ("p", "j")
    assert h.previous(key, 0) is None
    for n in (0, 1, 2):
        h.add(key, n, _img(n))
    assert int(h.previous(key, 3)[0, 0]) == 2
    assert int(h.previous(key, 2)[0, 0]) == 1  # a replayed layer 2 is not its own previous
    assert h.previous(key, 1) is None  # layer 0 fell out: only the last 2 are kept
    assert h.size == (1, 2)


def test_memory_is_bounded_in_jobs_and_layers() -> None:
    h = LayerHistory(layers=2, jobs=3)
    for job in range(10):
        for n in range(20):
            h.add(("p", f"j{job}"), n, _img(n))
    assert h.size == (3, 6)
    assert ("p", "j9") in h and ("p", "j0") not in h  # least recently seen evicted
    h.previous(("p", "j7"), 20)  # seen again: j8 is now the oldest
    h.add(("p", "j10"), 0, _img(0))
    assert ("p", "j7") in h and ("p", "j8") not in h


def test_an_evicted_job_is_read_back_through_the_loader() -> None:
    stored = {("p", "j0"): [(5, _img(5)), (6, _img(6)), (7, _img(7))]}
    asked = []

    def load(key, before):
        asked.append((key, before))
        return [(n, im) for n, im in stored.get(key, []) if n < before]

    h = LayerHistory(layers=2, jobs=1, load=load)
    assert int(h.previous(("p", "j0"), 8)[0, 0]) == 7
    assert h.size == (1, 2)  # the loader's 3 trimmed to 2
    assert h.previous(("p", "j1"), 1) is None  # evicts j0
    assert int(h.previous(("p", "j0"), 8)[0, 0]) == 7
    assert asked == [(("p", "j0"), 8), (("p", "j1"), 1), (("p", "j0"), 8)]


def test_clear_forgets_every_job() -> None:
    h = LayerHistory(layers=2, jobs=4)
    h.add(("p", "j"), 0, _img(0))
    h.clear()
    assert h.size == (0, 0) and h.previous(("p", "j"), 1) is None


def test_no_history_keeps_nothing() -> None:
    h = LayerHistory(layers=0, jobs=1, load=lambda *_: pytest.fail("loaded"))
    h.add(("p", "j"), 0, _img(0))
    assert h.previous(("p", "j"), 1) is None and h.size == (0, 0)
