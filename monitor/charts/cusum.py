"""Two-sided tabular CUSUM (Page 1954) with optional fast initial response."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitor.charts.base import Kernel, zeros


@dataclass(frozen=True)
class CusumKernel(Kernel):
    """C+ = max(0, C+ + z - k), C- = max(0, C- - z - k); signal when either exceeds h.

    The plotted statistic is C+ or -C-, whichever is larger in size, against limits ±h, so one
    series shows both sides. FIR (Lucas & Crosier 1982) starts both sums at h/2, which speeds
    detection of a shift present at start-up at a small cost in ARL0. The sums are not reset
    after a signal: a build is not corrected mid-print, and alarm episodes de-duplicate.
    """

    kind = "cusum"
    k: float = 0.5
    h: float = 4.0
    fir: bool = False

    def __post_init__(self) -> None:
        if not (self.h > 0 and self.k >= 0):
            raise ValueError(f"need h > 0 and k >= 0, got h={self.h}, k={self.k}")

    def init(self, n: int | None) -> tuple[Any, ...]:
        start = self.h / 2.0 if self.fir else 0.0
        return zeros(n, start), zeros(n, start)

    def step(self, s: tuple[Any, ...], x: Any, t: int) -> tuple[tuple[Any, ...], Any, Any]:
        cp = s[0] + x - self.k
        cp = cp * (cp > 0) + 0.0  # max(0, .) for floats and arrays; + 0.0 turns -0.0 into 0.0
        cm = s[1] - x - self.k
        cm = cm * (cm > 0) + 0.0
        up = cp >= cm
        stat = cp * up - cm * (1 - up * 1)
        hi = cp > self.h
        code = hi * 1 + (cm > self.h) * (1 - hi * 1) * 2
        return (cp, cm), stat, code

    def limits(self, t: int) -> tuple[float, float, float]:
        return 0.0, -self.h, self.h
