"""The scorer's per-job normal placement: the median of unflagged layers, bounded, read back."""

from __future__ import annotations

import pytest

from scorer.job_placement import JobPlacements


def test_the_placement_is_the_median_of_unflagged_layers_once_enough() -> None:
    jp = JobPlacements(window=4, minimum=3)
    key = ("p", "j")
    jp.add(key, 0, (1.0, 0.0, 2.0), flagged=False)
    jp.add(key, 1, (9.0, 9.0, 9.0), flagged=True)  # a flagged layer never teaches it
    jp.add(key, 2, None, flagged=False)  # nor one without an outline (or off normal)
    jp.add(key, 3, (3.0, 1.0, 2.0), flagged=False)
    assert jp.placement(key, 4) is None  # two are not enough
    jp.add(key, 4, (2.0, 5.0, 1.0), flagged=False)
    assert jp.placement(key, 5) == (2.0, 1.0, 2.0)
    for n in range(5, 9):  # the window keeps the last 4
        jp.add(key, n, (10.0 + n, 0.0, 0.0), flagged=False)
    assert jp.placement(key, 9) == (16.5, 0.0, 0.0)


def test_jobs_are_bounded_and_an_evicted_job_is_read_back() -> None:
    asked: list[tuple[tuple[str, str], int, int]] = []

    def load(key: tuple[str, str], before: int, limit: int) -> list[tuple[float, float, float]]:
        asked.append((key, before, limit))
        return [(float(i), 0.0, 0.0) for i in range(10)]  # more than the window: the last kept

    jp = JobPlacements(window=3, minimum=1, jobs=2, load=load)
    assert jp.placement(("p", "a"), 20) == (8.0, 0.0, 0.0)
    jp.placement(("p", "b"), 20)
    jp.placement(("p", "c"), 20)
    assert ("p", "a") not in jp and ("p", "c") in jp
    assert asked == [(("p", k), 20, 3) for k in "abc"]
    jp.clear()
    assert ("p", "c") not in jp


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        JobPlacements(window=4, minimum=5)
