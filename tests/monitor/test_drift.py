"""river detectors: the vectorised replica matches river, calibration hits its target."""

from __future__ import annotations

import math

import numpy as np
import pytest
from river import drift as rdrift

from monitor.drift import (
    DriftChart,
    calibrate_adwin,
    calibrate_page_hinkley,
    page_hinkley_max,
    page_hinkley_statistic,
)


def test_page_hinkley_replica_matches_river() -> None:
    x = np.random.default_rng(0).standard_normal((4, 300))
    x[:, 150:] += 0.8
    for row in x:
        det = rdrift.PageHinkley(threshold=1e12)
        best = -math.inf
        for t, v in enumerate(row.tolist(), start=1):
            det.update(v)
            if t >= 30:
                best = max(best, page_hinkley_statistic(det))
        assert page_hinkley_max(row[None, :])[0] == pytest.approx(best, rel=1e-12)


def _false_alarm_fraction(kind: str, param: float, horizon: int, n: int, seed: int) -> float:
    streams = np.random.default_rng(seed).standard_normal((n, horizon)).tolist()
    hits = 0
    for row in streams:
        chart = DriftChart(kind, param)  # type: ignore[arg-type]
        hits += any(chart.update(v).signal for v in row)
    return hits / n


def test_page_hinkley_defaults_false_alarm_but_calibrated_does_not() -> None:
    assert _false_alarm_fraction("pagehinkley", 50.0, 3000, 30, 1) > 0.5
    p, horizon, n = 0.1, 300, 600
    threshold = calibrate_page_hinkley(horizon, p)
    rate = _false_alarm_fraction("pagehinkley", threshold, horizon, n, 2)
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / n) + 0.02


def test_adwin_calibration() -> None:
    p, horizon = 0.1, 300
    delta = calibrate_adwin(horizon, p, n_sim=200)
    assert delta > 0.002  # river's default is far more conservative than needed
    rate = _false_alarm_fraction("adwin", delta, horizon, 400, 3)
    assert abs(rate - p) < 0.08


def test_drift_chart_points_and_state() -> None:
    values = np.r_[np.zeros(100), np.full(100, 3.0)] + np.random.default_rng(4).normal(0, 0.3, 200)
    for kind, param in (("adwin", 0.01), ("pagehinkley", 20.0)):
        chart = DriftChart(kind, param)  # type: ignore[arg-type]
        points = [chart.update(v) for v in values[:150].tolist()]
        assert any(p.signal for p in points[100:]) and not any(p.signal for p in points[:100])
        assert points[-1].rule in (None, "drift")
        rebuilt = DriftChart.from_state(chart.state_dict())
        for v in values[150:].tolist():
            a, b = chart.update(v), rebuilt.update(v)
            assert (a.statistic, a.signal, a.rule) == (b.statistic, b.signal, b.rule)
    with pytest.raises(ValueError, match="unknown drift detector"):
        DriftChart("kswin", 0.1)  # type: ignore[arg-type]
