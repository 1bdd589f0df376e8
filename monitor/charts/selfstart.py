"""Self-starting charts (Hawkins 1987; Quesenberry 1991): chart Q_n, no Phase I needed.

T_n = (x_n - xbar_{n-1}) / s_{n-1} · sqrt((n-1)/n) ~ t_{n-2}, and Q_n = Phi^-1(F_t(T_n)) is
i.i.d. N(0,1) while in control, so any known-parameter chart applies to Q with its usual
limits. After the inner chart signals the running estimates freeze: otherwise they would absorb
the shift and the chart would talk itself back into control.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtri, stdtr

from monitor.charts.base import Kernel, kernel_from_dict, kernel_to_dict, zeros
from monitor.charts.cusum import CusumKernel


def q_statistic(x: Any, n: Any, mean: Any, m2: Any) -> Any:
    """Q for x given n >= 2 earlier values with running mean and sum of squares m2."""
    var = m2 / (n - 1)
    sd = var**0.5 + (var <= 0) * 1e-12
    t = (x - mean) / sd * (n / (n + 1)) ** 0.5
    q = ndtri(stdtr(n - 1, -abs(t)))  # lower tail of -|T| keeps precision far out
    return -q * ((t > 0) * 1 - (t < 0) * 1)


def q_sequence(x: Any) -> np.ndarray:
    """Q_3..Q_n of one whole series at once (the batch form of the streaming chart, no freezing).

    Running moments come from cumulative sums of x - x_0, which keeps them accurate for
    scores with a large mean.
    """
    y = np.asarray(x, dtype=float)
    y = y - y[0]
    n = np.arange(1, y.size + 1)
    mean = np.cumsum(y) / n
    m2 = np.cumsum(y * y) - n * mean * mean
    prev = slice(1, -1)  # estimates from the values before each of points 3..n
    return q_statistic(y[2:], n[prev], mean[prev], m2[prev])


@dataclass(frozen=True)
class SelfStartKernel(Kernel):
    """Feeds Q_n to ``inner`` (a CUSUM by default); the first two values only seed estimates."""

    kind = "selfstart"
    warmup = 2
    inner: Kernel = field(default_factory=CusumKernel)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule_names", self.inner.rule_names)

    def params(self) -> dict[str, Any]:
        return {"inner": kernel_to_dict(self.inner)}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Kernel:
        return cls(kernel_from_dict(params["inner"]))

    def init(self, n: int | None) -> tuple[Any, ...]:
        count = 0 if n is None else zeros(n)
        return (*self.inner.init(n), count, zeros(n), zeros(n), 0 if n is None else zeros(n))

    def step(self, s: tuple[Any, ...], x: Any, t: int) -> tuple[tuple[Any, ...], Any, Any]:
        inner_state, (n, mean, m2, frozen) = s[:-4], s[-4:]
        if t <= self.warmup:
            inner_stat, code = 0.0, 0
        else:
            q = q_statistic(x, n, mean, m2)
            inner_state, inner_stat, code = self.inner.step(inner_state, q, t - self.warmup)
        live = (1 - frozen) * (code == 0)  # update unless frozen or signalling now
        n1 = n + live
        d = (x - mean) * live
        mean1 = mean + d / (n1 + (n1 == 0))
        m2 = m2 + d * (x - mean1)
        return (*inner_state, n1, mean1, m2, 1 - live), inner_stat, code

    def limits(self, t: int) -> tuple[float, float, float]:
        return self.inner.limits(t - self.warmup)
