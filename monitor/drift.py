"""river drift detectors as secondary signals, with thresholds calibrated by simulation.

river's defaults are not designed by ARL: on N(0,1) PageHinkley() false-alarms in every stream
within 5000 points and ADWIN's delay for a 1-sigma shift is several times CUSUM's (SPC.md).
Here each detector is calibrated on simulated N(0,1) streams so that P(false alarm within
``horizon`` points) = p, and it only ever raises warnings.

PageHinkley's threshold comes from the (1-p) quantile of the maximum test statistic, computed
by a vectorised replica of river 0.26's recursion (a test pins the two together). ADWIN's first
detection time is monotone in delta (no cut happens before it, so the window is the same for
every delta, and a larger delta only lowers the cut bound), so its delta is found by bisection
on the false-alarm fraction of fixed simulated streams, running river itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from river import drift

from monitor.charts.base import ChartPoint

DriftKind = Literal["adwin", "pagehinkley"]
PH_DEFAULTS = {"min_instances": 30, "delta": 0.005, "alpha": 1 - 0.0001}


def page_hinkley_statistic(detector: drift.PageHinkley) -> float:
    """max(increase, decrease) test statistic of river's PageHinkley (private state, 0.26)."""
    inc = detector._sum_increase - detector._min_increase
    dec = detector._max_decrease - detector._sum_decrease
    return float(max(inc, dec))


def page_hinkley_max(
    x: np.ndarray,
    min_instances: int = 30,
    delta: float = 0.005,
    alpha: float = 1 - 0.0001,
) -> np.ndarray:
    """Per row of x (runs × T), the largest statistic river's PageHinkley would test."""
    n, steps = x.shape
    mean = np.zeros(n)
    s_inc = np.zeros(n)
    s_dec = np.zeros(n)
    min_inc = np.full(n, np.inf)
    max_dec = np.full(n, -1.0)  # river starts the running max at -1
    best = np.full(n, -np.inf)
    for j in range(steps):
        xj = x[:, j]
        mean += (xj - mean) / (j + 1)
        dev = xj - mean
        s_inc = alpha * s_inc + dev - delta
        s_dec = alpha * s_dec + dev + delta
        np.minimum(min_inc, s_inc, out=min_inc)
        np.maximum(max_dec, s_dec, out=max_dec)
        if j + 1 >= min_instances:
            np.maximum(best, np.maximum(s_inc - min_inc, max_dec - s_dec), out=best)
    return best


@lru_cache(maxsize=64)
def calibrate_page_hinkley(horizon: int, p: float, n_sim: int = 2000, seed: int = 0) -> float:
    """Threshold with P(PageHinkley alarms within ``horizon`` N(0,1) points) = p."""
    x = np.random.default_rng(seed).standard_normal((n_sim, horizon))
    return float(np.quantile(page_hinkley_max(x, **PH_DEFAULTS), 1.0 - p))


def _adwin_alarms(streams: np.ndarray, delta: float) -> float:
    hits = 0
    for row in streams.tolist():
        det = drift.ADWIN(delta=delta)
        for v in row:
            det.update(v)
            if det.drift_detected:
                hits += 1
                break
    return hits / len(streams)


@lru_cache(maxsize=64)
def calibrate_adwin(
    horizon: int, p: float, n_sim: int = 200, seed: int = 0, iterations: int = 12
) -> float:
    """Largest delta (on a log grid) with false-alarm fraction <= p over ``horizon`` points."""
    streams = np.random.default_rng(seed).standard_normal((n_sim, horizon))
    lo, hi = math.log(1e-12), math.log(0.9)
    if _adwin_alarms(streams, math.exp(hi)) <= p:
        return math.exp(hi)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if _adwin_alarms(streams, math.exp(mid)) <= p:
            lo = mid
        else:
            hi = mid
    return math.exp(lo)


class DriftChart:
    """A river detector behind the chart interface; state is rebuilt by replaying inputs."""

    __slots__ = ("_det", "_values", "kind", "name", "param")

    def __init__(self, kind: DriftKind, param: float, name: str | None = None) -> None:
        if kind not in ("adwin", "pagehinkley"):
            raise ValueError(f"unknown drift detector {kind!r}; use 'adwin' or 'pagehinkley'")
        self.kind = kind
        self.param = float(param)  # ADWIN delta or PageHinkley threshold
        self.name = name or kind
        self._det = (
            drift.ADWIN(delta=self.param)
            if kind == "adwin"
            else drift.PageHinkley(threshold=self.param, mode="both", **PH_DEFAULTS)
        )
        self._values: list[float] = []

    def update(self, x: float) -> ChartPoint:
        self._values.append(x)
        det = self._det
        det.update(x)
        hit = det.drift_detected
        rule = "drift" if hit else None
        if self.kind == "adwin":
            return ChartPoint(self.name, det.estimation, 0.0, math.nan, math.nan, hit, rule)
        return ChartPoint(self.name, page_hinkley_statistic(det), 0.0, 0.0, self.param, hit, rule)

    def replay(self, values: Iterable[float]) -> None:
        for x in values:
            self.update(x)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "param": self.param, "values": self._values}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> DriftChart:
        chart = cls(d["kind"], d["param"], d["name"])
        chart.replay(d["values"])
        return chart
