"""The level model: its fit, its surprises, and the job's self-starting centre in the engine."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from monitor.calibration import Calibration, ScoreCalibration, fit_print_levels
from monitor.engine import JobMonitor
from monitor.levels import (
    FeatureStatistic,
    LevelFilter,
    LevelModel,
    fit_levels,
    innovations,
    simulate_levels,
)

# Prints differ more than layers within a print, as on the demo model's normal prints.
MODEL = LevelModel(m0=0.5, kappa0=0.3, a0=4.0, b0=0.6, discount=0.97)
IDENTITY = ScoreCalibration(mu0=0.0, sigma0=1.0, n=100)  # z = score


def _monitor(model: LevelModel = MODEL, **kw) -> JobMonitor:
    return JobMonitor("p", "j", calibration=Calibration(score=IDENTITY, levels=model), **kw)


def _run(monitor: JobMonitor, y: np.ndarray) -> list:
    events = []
    for layer, value in enumerate(y, start=1):
        events += monitor.update(layer, float(value))[1]
    return events


def _print(level: float, layers: int, seed: int) -> np.ndarray:
    """One print at a fixed level with the model's typical within-print spread."""
    return level + MODEL.within_sd * np.random.default_rng(seed).standard_normal(layers)


def test_fit_recovers_the_parameters():
    fit = fit_levels(simulate_levels(MODEL, 80, 100, np.random.default_rng(1)))
    assert fit.n_prints == 80 and fit.n_layers == 8000
    # m0 is the level at layer 1 only (the level then wanders), so it is the loosest estimate
    assert fit.m0 == pytest.approx(MODEL.m0, abs=0.35)
    assert fit.between_sd == pytest.approx(MODEL.between_sd, rel=0.3)
    assert fit.within_sd == pytest.approx(MODEL.within_sd, rel=0.2)
    assert fit.discount == pytest.approx(MODEL.discount, abs=0.02)


def test_fit_needs_several_prints():
    with pytest.raises(ValueError, match="at least 3 prints"):
        fit_levels([[0.1, 0.2, 0.3, 0.4], [0.0, 0.1, 0.2]])


def test_surprises_are_iid_standard_normal_whatever_the_print_level():
    y = simulate_levels(MODEL, 600, 120, np.random.default_rng(2))
    r, skipped = innovations(MODEL, y)
    assert abs(np.nanmean(r)) < 0.02
    assert np.nanstd(r) == pytest.approx(1.0, abs=0.03)
    assert abs(np.mean(r[:, 1:] * r[:, :-1])) < 0.03
    assert np.nanstd(r[:, 0]) == pytest.approx(1.0, abs=0.08)  # layer 1 too: the prior is right
    assert skipped.mean() == pytest.approx(0.0027, abs=0.002)  # the symmetric 3-sigma gate
    # the raw values are far from that: their print level dominates
    raw = y - y.mean()
    assert np.mean(raw[:, 1:] * raw[:, :-1]) / np.mean(raw * raw) > 0.5


def test_scalar_filter_matches_the_lockstep_one_and_missing_layers_count_nothing():
    y = simulate_levels(MODEL, 3, 40, np.random.default_rng(3))
    y[1, 10:15] = np.nan
    r, _ = innovations(MODEL, y)
    f = LevelFilter(MODEL)
    assert np.allclose([f.update(v) for v in y[0]], r[0])
    assert np.isnan(r[1, 10:15]).all() and np.isfinite(r[1, 15:]).all()


def test_centre_learns_the_print_level_from_the_first_layer():
    """A normal print 2 between-print s.d. above the mean: no stop, and its centre finds it;
    the population's centre (the static charts) stops it."""
    level = MODEL.m0 + 2 * MODEL.between_sd
    y = _print(level, 200, seed=4)
    m = _monitor()
    assert [e for e in _run(m, y) if e.level == "stop"] == []
    assert m.level is not None and m.level.level == pytest.approx(level, abs=0.25)
    static = JobMonitor("p", "j", calibration=Calibration(score=IDENTITY))
    assert any(e.level == "stop" for e in _run(static, y))


def test_centre_stays_put_through_a_step_defect():
    """A step of 4 within-print s.d. at layer 60: stopped within 3 layers, and the centre moves
    by less than a tenth of the step (the gate skips the onset, the hold what follows)."""
    y = _print(MODEL.m0, 120, seed=5)
    step = 4 * MODEL.within_sd
    y[59:] += step
    m = _monitor()
    levels, stops = [], []
    for layer, value in enumerate(y, start=1):
        _, events = m.update(layer, float(value))
        levels.append(m.level.level)
        stops += [layer for e in events if e.level == "stop"]
    assert stops and 60 <= stops[0] <= 63
    assert m.level.hold
    assert abs(levels[-1] - levels[58]) < 0.1 * step
    # without the gate and the hold the centre would have learnt most of the step by the end
    free = LevelFilter(dataclasses.replace(MODEL, gate=math.inf))
    for value in y:
        free.update(float(value))
    assert free.level - levels[58] > 0.5 * step


def test_centre_follows_a_slow_drift_without_an_alarm():
    """0.5 within-print s.d. over 100 layers, on top of normal noise."""
    y = _print(MODEL.m0, 150, seed=6)
    m0 = _monitor()
    assert _run(m0, y) == []  # this noise alone raises nothing
    drift = np.clip(np.arange(150) - 25, 0, 100) * (0.5 * MODEL.within_sd / 100)
    m = _monitor()
    assert _run(m, y + drift) == []
    assert m.level.level - m0.level.level == pytest.approx(0.5 * MODEL.within_sd, abs=0.1)


def test_restart_rebuilds_the_same_state_from_the_stored_scores():
    y = _print(MODEL.m0, 90, seed=7)
    y[70:] += 4 * MODEL.within_sd
    live = _monitor()
    _run(live, y[:80])
    records = [(layer, float(v), None, None, None) for layer, v in enumerate(y[:80], start=1)]
    restarted = _monitor()
    restarted.replay(records)
    assert restarted.level.state == live.level.state and restarted.level.hold == live.level.hold
    assert [c.state_dict() for c in restarted.charts] == [c.state_dict() for c in live.charts]
    for layer, v in enumerate(y[80:], start=81):
        assert live.update(layer, float(v))[0] == restarted.update(layer, float(v))[0]


def test_the_feature_statistic_drives_the_centre_when_the_model_has_features():
    """y = the larger log-feature in robust sigma of the calibration features; the score is
    ignored by the level path (it is censored at 0 on many normal layers)."""
    rng = np.random.default_rng(8)
    features = np.exp(rng.normal([0.0, 1.0], [0.5, 0.25], size=(200, 2)))
    st = FeatureStatistic.from_features(features)
    assert st.center == pytest.approx((0.0, 1.0), abs=0.1)
    assert st.scale == pytest.approx((0.5, 0.25), rel=0.2)
    assert st(math.exp(1.0), math.exp(1.0)) == pytest.approx(max(1 / st.scale[0], 0.0), rel=0.2)
    prints = [[[0.0, *f] for f in np.exp(rng.normal([0.0, 1.0], [0.5, 0.25], size=(60, 2)))]
              for _ in range(12)]  # fmt: skip
    cal = Calibration(score=IDENTITY, level_statistic=st)
    cal = dataclasses.replace(cal, levels=fit_print_levels(cal, prints))
    m = JobMonitor("p", "j", calibration=cal)
    points, _ = m.update(1, 0.0, math.exp(0.1), math.exp(1.05))
    assert {p.chart for p in points} >= {"cusum", "level"}
    assert m.update(2, 0.0, None, None) == ([], [])  # no features: no score chart this layer


def test_calibration_round_trip_keeps_the_level_model():
    cal = Calibration(
        score=IDENTITY, levels=MODEL, level_statistic=FeatureStatistic((0.0, 1.0), (0.5, 0.2))
    )
    assert Calibration.from_dict(cal.to_dict()) == cal
