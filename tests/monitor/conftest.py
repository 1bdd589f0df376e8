"""Shared fixtures: the SPC.md tolerance rule for simulated ARLs."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from monitor.arl import ArlEstimate


@pytest.fixture
def assert_arl() -> Callable[[ArlEstimate, float], None]:
    """A simulated ARL must land within ±4·ARL/√n of the reference (SPC.md)."""

    def check(est: ArlEstimate, reference: float) -> None:
        tol = 4.0 * reference / math.sqrt(est.n)
        assert abs(est.arl - reference) <= tol, (
            f"ARL {est.arl:.2f} (n={est.n}) vs reference {reference} ± {tol:.2f}"
        )

    return check
