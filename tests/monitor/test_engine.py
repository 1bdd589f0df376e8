"""JobMonitor: Phase I, idempotent layers, detection of a planted shift, replay after restart."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from monitor.alarms import parse_policy
from monitor.arl import t2_ucl
from monitor.calibration import Calibration, fit_calibration, fit_scores, model_calibration
from monitor.design import ChartDesign
from monitor.engine import JobMonitor, chart_from_state

CAL = Calibration(score=fit_scores(np.random.default_rng(99).standard_normal(3000)))


def _scores(n: int, seed: int, shift_at: int | None = None, delta: float = 3.0) -> list[float]:
    x = np.random.default_rng(seed).standard_normal(n)
    if shift_at is not None:
        x[shift_at - 1 :] += delta
    return x.tolist()


def test_phase1_from_the_first_layers() -> None:
    mon = JobMonitor("p", "j", phase1_layers=50)
    scores = _scores(60, 1)
    for layer in range(1, 51):
        assert mon.update(layer, scores[layer - 1]) == ([], [])
        assert mon.phase1_pending == (["score"] if layer < 50 else [])
    points, _ = mon.update(51, scores[50])
    assert [p.chart for p in points] == ["shewhart", "ewma", "cusum"]
    assert mon.calibration.score is not None and mon.calibration.score.n == 50


def test_calibration_given_charts_from_layer_one() -> None:
    mon = JobMonitor("p", "j", calibration=CAL)
    points, events = mon.update(1, 0.3)
    assert len(points) == 3 and events == []
    assert points[0].statistic == pytest.approx(CAL.score.z(0.3))  # type: ignore[union-attr]


def test_repeated_and_older_layers_are_ignored() -> None:
    mon = JobMonitor("p", "j", calibration=CAL)
    first = mon.update(5, 0.1)
    assert first[0]
    assert mon.update(5, 9.0) == ([], []) and mon.update(3, 9.0) == ([], [])
    assert len(mon.update(6, 0.2)[0]) == 3


def test_warmup_layers_are_neither_charted_nor_phase1() -> None:
    policy = parse_policy("[start]\nwarmup_layers = 5\n").default
    assert policy.start.warmup_layers == 5
    mon = JobMonitor("p", "j", policy=policy, phase1_layers=20)
    for layer in range(5):  # far out, as a print's first layers can be: no chart, no alarm
        assert mon.update(layer, 50.0) == ([], [])
    assert mon.phase1_pending == []  # nor kept for Phase I
    normal = _scores(20, 3)
    for layer, x in zip(range(5, 25), normal, strict=True):
        assert mon.update(layer, x) == ([], [])
    assert mon.calibration.score is not None and mon.calibration.score.n == 20
    assert abs(mon.calibration.score.mu0) < 1.0  # the normal layers, not the warm-up's 50
    assert len(mon.update(25, 0.0)[0]) == 3  # charts from the first layer after Phase I


def test_missing_inputs_skip_their_charts() -> None:
    rng = np.random.default_rng(2)
    cal = fit_calibration(
        rng.standard_normal(500), rng.standard_normal((500, 2)), rng.poisson(3, 500)
    )
    mon = JobMonitor("p", "j", calibration=cal)
    names = lambda pts: sorted(p.chart for p in pts)  # noqa: E731
    assert names(mon.update(1, 0.1, 0.2, -0.1, 3.0)[0]) == [
        "cluster", "cusum", "ewma", "shewhart", "t2"
    ]  # fmt: skip
    assert names(mon.update(2, float("nan"), 0.2, None, 3.0)[0]) == ["cluster"]
    assert names(mon.update(3, None, 0.2, 0.1)[0]) == ["t2"]


def test_detects_a_planted_shift_at_the_right_layer() -> None:
    mon = JobMonitor("p", "j", calibration=CAL)
    events = []
    for layer, s in enumerate(_scores(260, 3, shift_at=201), start=1):
        events += mon.update(layer, s)[1]
    assert events, "no alarm for a 3-sigma shift"
    assert min(e.layer for e in events) >= 201
    warn = [e for e in events if e.level == "warn"]
    stop = [e for e in events if e.level == "stop"]
    assert 201 <= warn[0].layer <= 205
    assert stop and stop[0].layer <= 210 and stop[0].action == "pause"
    assert len({e.key for e in events}) == len(events)  # one alarm per episode


def _first_stop(mon: JobMonitor, scores: list[float]) -> int | None:
    for layer, s in enumerate(scores, start=1):
        if any(e.level == "stop" for e in mon.update(layer, s)[1]):
            return layer
    return None


def test_a_print_sitting_above_the_calibration_mean_is_not_stopped() -> None:
    """Phase I from a model's calibration mixes prints: one normal print can sit a whole sigma
    above the mean with little spread of its own. The default k (1.5) lets it run 1000 layers;
    the textbook k = 0.5 stops it, which is why the default changed."""
    offset_print = (1.0 + 0.4 * np.random.default_rng(5).standard_normal(1000)).tolist()
    assert _first_stop(JobMonitor("p", "j", calibration=CAL), offset_print) is None
    textbook = JobMonitor("p", "j", calibration=CAL, design=ChartDesign(k=0.5))
    assert _first_stop(textbook, offset_print) is not None
    defect = offset_print[:200] + [s + 3.0 for s in offset_print[200:]]
    stop = _first_stop(JobMonitor("p", "j", calibration=CAL), defect)
    assert stop is not None and 201 <= stop <= 203


# Largest defect-cluster areas of 40 held-out normal images, measured on a development model
# (fdm_rectilinear, 256²): most have no cluster, a few have one of up to ~400 px.
NORMAL_AREAS = [0] * 24 + [17, 39, 41, 44, 53, 68, 82, 83, 84, 102, 123, 174, 203, 249, 310, 396]


def _first_area_stop(mon: JobMonitor, areas: list[float]) -> int | None:
    for layer, a in enumerate(areas, start=1):
        if any(e.level == "stop" for e in mon.update(layer, 0.0, None, None, a)[1]):
            return layer
    return None


def test_model_cluster_areas_keep_an_ordinary_cluster_from_stopping_the_print() -> None:
    """Without the model's areas the area limit comes from the job's first layers, which
    usually have no cluster at all (limit 1 px): the first ordinary cluster stops the print.
    With them it takes a cluster beyond what normal images show."""
    scores = np.random.default_rng(7).standard_normal(3000).tolist()
    cal = model_calibration(
        {"calibration": {"image_scores": scores, "largest_areas": NORMAL_AREAS}}
    )
    assert cal.areas is not None and cal.areas.areas == tuple(map(float, NORMAL_AREAS))
    ordinary = [0.0] * 30 + [250.0] + [0.0] * 9
    assert _first_area_stop(JobMonitor("p", "j", calibration=cal), ordinary) is None
    job_areas = JobMonitor(
        "p", "j", calibration=dataclasses.replace(cal, areas=None), phase1_layers=20
    )
    assert _first_area_stop(job_areas, ordinary) == 31
    defect = [0.0] * 30 + [2500.0] * 10
    assert _first_area_stop(JobMonitor("p", "j", calibration=cal), defect) == 31
    old_model = model_calibration({"calibration": {"image_scores": scores}})
    assert old_model.areas is None and old_model.score is not None


def test_replay_rebuilds_the_same_state() -> None:
    rng = np.random.default_rng(4)
    n = 300
    recs = [
        (i + 1, float(s), float(a), float(b), float(c))
        for i, (s, a, b, c) in enumerate(
            zip(
                _scores(n, 5, shift_at=220, delta=1.5),
                rng.standard_normal(n),
                rng.standard_normal(n),
                rng.poisson(3, n),
                strict=True,
            )
        )
    ]
    policy = parse_policy('[warn]\nrules = "nelson"').default
    live = JobMonitor("p", "j", policy=policy, phase1_layers=100)
    for r in recs[:150]:
        live.update(*r)
    restarted = JobMonitor("p", "j", policy=policy, phase1_layers=100)
    restarted.replay(recs[:150])
    for r in recs[150:]:
        assert live.update(*r) == restarted.update(*r)
    assert live.tracker.state_dict() == restarted.tracker.state_dict()


def test_feature_and_area_charts() -> None:
    rng = np.random.default_rng(6)
    mon = JobMonitor("p", "j", phase1_layers=100)
    for layer in range(1, 101):
        f = rng.standard_normal(2)
        mon.update(
            layer, float(rng.standard_normal()), float(f[0]), float(f[1]), float(rng.poisson(3))
        )
    t2 = next(c for c in mon.charts if c.name == "t2")
    assert t2.kernel.ucl > t2_ucl(2, 1 / mon.limits.warn_chart_arl0)  # type: ignore[attr-defined]
    area_stop = mon.tracker.thresholds.cluster_area
    assert area_stop is not None and area_stop > 10
    points, events = mon.update(101, 0.0, 0.0, 0.0, area_stop + 1)
    assert {p.chart for p in points} == {"shewhart", "ewma", "cusum", "t2", "cluster"}
    assert [(e.chart, e.level) for e in events] == [("cluster", "warn"), ("cluster", "stop")]


def test_drift_charts_and_stop_only_cusum() -> None:
    policy = parse_policy('[warn]\ncharts = ["shewhart", "adwin", "pagehinkley"]').default
    mon = JobMonitor("p", "j", design=ChartDesign(layers=200), policy=policy, calibration=CAL)
    assert mon.limits.adwin_delta is not None and mon.limits.pagehinkley_threshold is not None
    events = []
    for layer, s in enumerate(_scores(200, 7, shift_at=101, delta=2.0), start=1):
        points, ev = mon.update(layer, s)
        events += ev
    assert [p.chart for p in points] == ["shewhart", "cusum", "adwin", "pagehinkley"]
    cusum = next(c for c in mon.charts if c.name == "cusum")
    assert cusum.kernel.h == mon.limits.cusum_h_stop  # type: ignore[attr-defined]
    assert not any(e.chart == "cusum" and e.level == "warn" for e in events)
    assert any(e.chart == "cusum" and e.level == "stop" for e in events)
    assert any(e.chart in ("adwin", "pagehinkley") for e in events)
    assert all(e.layer > 100 for e in events)


def test_every_chart_state_round_trips() -> None:
    policy = parse_policy('[warn]\ncharts = ["shewhart", "selfstart", "adwin"]').default
    mon = JobMonitor("p", "j", design=ChartDesign(layers=200), policy=policy, calibration=CAL)
    scores = _scores(80, 8)
    for layer, s in enumerate(scores[:40], start=1):
        mon.update(layer, s)
    rebuilt = [chart_from_state(c.state_dict()) for c in mon.charts]
    for s in scores[40:]:
        z = CAL.score.z(s)  # type: ignore[union-attr]
        for a, b in zip(mon.charts, rebuilt, strict=True):
            pa, pb = a.update(z), b.update(z)
            assert (pa.statistic, pa.signal) == (pb.statistic, pb.signal)  # type: ignore[union-attr]
