"""ChartDesign: budgets, Šidák split, solved limits meet their per-chart ARL0."""

from __future__ import annotations

import itertools
import math

import pytest
from pydantic import ValidationError

from monitor import arl
from monitor.design import DEFAULT_STOP, DEFAULT_WARN, DELTAS, ChartDesign


def test_default_budget() -> None:
    d = ChartDesign()
    assert d.build_arl0("stop") == pytest.approx(19_496, abs=1)
    lim = d.solve()
    assert lim.stop_chart_arl0 == pytest.approx(arl.sidak_arl0(19_496, len(DEFAULT_STOP)), rel=1e-4)
    assert lim.warn_chart_arl0 == pytest.approx(
        arl.sidak_arl0(d.build_arl0("warn"), len(DEFAULT_WARN))
    )
    assert lim.stop_chart_arl0 > lim.warn_chart_arl0


def test_limits_meet_their_arl0() -> None:
    d = ChartDesign(layers=500, stop_false_alarm_prob=0.02, lam=0.1, k=0.75)
    lim = d.solve(("shewhart", "ewma", "cusum", "mewma", "t2"), ("cusum", "consecutive"))
    w, s = lim.warn_chart_arl0, lim.stop_chart_arl0
    assert arl.shewhart_arl(lim.shewhart_L) == pytest.approx(w, rel=1e-6)
    assert arl.ewma_arl(0.1, lim.ewma_L) == pytest.approx(w, rel=1e-4)
    assert arl.cusum_arl(0.75, lim.cusum_h) == pytest.approx(w, rel=1e-4)
    assert arl.mewma_arl0(0.1, lim.mewma_h, 2) == pytest.approx(w, rel=1e-4)
    assert arl.t2_arl(lim.t2_ucl, 2) == pytest.approx(w, rel=1e-6)
    assert arl.cusum_arl(0.75, lim.cusum_h_stop) == pytest.approx(s, rel=1e-4)
    assert arl.consecutive_arl_at(lim.consecutive_L, 3) == pytest.approx(s, rel=1e-4)
    assert lim.cusum_h_stop > lim.cusum_h


def test_stop_never_below_warn() -> None:
    # 2 stop criteria at P=0.1 get a smaller per-chart ARL0 than 5 warn charts at P=0.2
    lim = ChartDesign(stop_false_alarm_prob=0.1).solve(DEFAULT_WARN[:5], ("cusum", "cluster"))
    assert lim.stop_chart_arl0 < lim.warn_chart_arl0
    assert lim.cusum_h_stop == lim.cusum_h and lim.cluster_alpha_stop == lim.cluster_alpha


def test_arl0_override_and_validation() -> None:
    d = ChartDesign(stop_arl0=5000, warn_arl0=500)
    assert d.build_arl0("stop") == 5000 and d.build_arl0("warn") == 500
    with pytest.raises(ValidationError, match="stricter"):
        ChartDesign(stop_arl0=100, warn_arl0=500)
    with pytest.raises(ValidationError):
        ChartDesign(stop_false_alarm_prob=1.2)
    with pytest.raises(ValidationError):
        ChartDesign(lambda_=0.2)  # type: ignore[call-arg]


def test_report_rows() -> None:
    d = ChartDesign(layers=200)
    lim = d.solve(("shewhart", "ewma", "cusum", "cluster"), DEFAULT_STOP)
    rows = d.report(lim, mc_runs=300)
    assert [(r.chart, r.level) for r in rows] == [
        ("shewhart", "warn"),
        ("ewma", "warn"),
        ("cusum", "warn"),
        ("cluster", "warn"),
        ("cusum", "stop"),
        ("cluster", "stop"),
        ("consecutive", "stop"),
    ]
    for r in rows:
        target = lim.warn_chart_arl0 if r.level == "warn" else lim.stop_chart_arl0
        assert r.arl0 == pytest.approx(target, rel=1e-3)
        if r.chart != "cluster":
            shifted = [r.shifted[dl] for dl in DELTAS]
            assert all(a > b for a, b in itertools.pairwise(shifted)), r
    ruled = d.report(d.solve(("shewhart",), ("cusum",)), rules="we", mc_runs=300)[0]
    assert (
        ruled.arl0 is not None and ruled.arl0 < 200
    )  # run rules blow the budget: shown, not hidden
    assert "off budget" in ruled.method


def test_report_self_start_and_drift() -> None:
    d = ChartDesign(layers=150)
    lim = d.solve(("selfstart", "pagehinkley"), ("cusum",))
    assert lim.pagehinkley_threshold is not None and lim.adwin_delta is None
    rows = d.report(lim, mc_runs=200)
    assert rows[0].arl0 == pytest.approx(lim.warn_chart_arl0, rel=1e-3)
    assert rows[0].shifted[3.0] < 15
    assert rows[1].chart == "pagehinkley" and rows[1].shifted[3.0] is not None
    assert math.isfinite(rows[1].shifted[3.0])
