"""Alarm policy TOML, episode de-duplication, stop criteria, and the alarm state machine."""

from __future__ import annotations

import pytest

from monitor.alarms import (
    Alarm,
    AlarmPolicy,
    AlarmState,
    AlarmTracker,
    IllegalTransition,
    PolicyError,
    StopThresholds,
    load_policy,
    parse_policy,
    transition,
)
from monitor.charts import ChartPoint

POLICY = """
[warn]
charts = ["ewma", "cusum", "shewhart"]
rules = "we"

[stop]
cusum_h = 9.5
cluster_area_critical = 400
consecutive_anomalous = 4

[episode]
reset_after = 5

[printers.mk4-02.stop]
action = "cancel"
cusum_h = 12.0
"""


def test_policy_parses_with_per_printer_overrides() -> None:
    ps = parse_policy(POLICY)
    base = ps.for_printer("mk4-01")
    assert base.warn.charts == ("ewma", "cusum", "shewhart") and base.warn.rules == "we"
    assert (base.stop.cusum_h, base.stop.cluster_area_critical) == (9.5, 400)
    assert base.stop.consecutive_anomalous == 4 and base.episode.reset_after == 5
    other = ps.for_printer("mk4-02")
    assert other.stop.action == "cancel" and other.stop.cusum_h == 12.0
    assert other.stop.cluster_area_critical == 400 and other.warn == base.warn  # merged
    assert parse_policy("").default == AlarmPolicy()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[warn]\ncharts = ["ewmaa"]', ["warn.charts.0", "'ewmaa'", "shewhart"]),
        ("[stop]\ncusum_hh = 3", ["stop.cusum_hh", "Extra inputs are not permitted"]),
        ("[stop]\ncusum_h = -1", ["stop.cusum_h", "greater than 0", "-1"]),
        ('[stop]\nconsecutive_anomalous = "three"', ["stop.consecutive_anomalous", "integer"]),
        ('[warn]\nrules = "western"', ["warn.rules", "unknown run rule"]),
        ("[warn\ncharts = []", ["not valid TOML", "line 1"]),
        ('[printers.p2.stop]\naction = "explode"', ["[printers.p2]", "stop.action", "'explode'"]),
        ("printers = 3", ["[printers] must be a table"]),
    ],
)
def test_policy_errors_are_clear(text: str, expected: list[str]) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "printers.toml")
    msg = str(err.value)
    assert msg.startswith("printers.toml")
    for part in expected:
        assert part in msg, msg


def test_load_policy_from_file(tmp_path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    assert load_policy(path).default.stop.cusum_h == 9.5
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")


def _pt(chart: str, signal: bool, stat: float = 0.0, rule: str | None = "upper") -> ChartPoint:
    return ChartPoint(chart, stat, 0.0, -3.0, 3.0, signal, rule if signal else None)


def _tracker(reset_after: int = 3, **thresholds) -> AlarmTracker:
    policy = parse_policy(f"[episode]\nreset_after = {reset_after}").default
    return AlarmTracker("p", "j", policy, StopThresholds(**thresholds))


def _run(tracker: AlarmTracker, signals: list[bool], chart: str = "ewma") -> list:
    events = []
    for layer, s in enumerate(signals, start=1):
        events += tracker.observe(layer, [_pt(chart, s, 4.0 if s else 0.0)])
    return events


def test_one_alarm_per_episode() -> None:
    signals = [False, True, True, False, True, False, False, False, True, True]
    events = _run(_tracker(reset_after=3), signals)
    assert [(e.layer, e.episode) for e in events] == [(2, 1), (9, 2)]
    e = events[0]
    assert (e.chart, e.level, e.rule, e.limit, e.action) == ("ewma", "warn", "upper", 3.0, None)
    assert e.key == ("j", "ewma", "warn", 1)


def test_reset_zero_means_one_alarm_per_job() -> None:
    events = _run(_tracker(reset_after=0), [True] + [False] * 100 + [True])
    assert len(events) == 1


def test_charts_not_in_warn_set_do_not_alarm() -> None:
    tracker = _tracker()
    assert tracker.observe(1, [_pt("selfstart", True)]) == []


def test_missing_points_do_not_end_an_episode() -> None:
    tracker = _tracker(reset_after=2)
    assert len(tracker.observe(1, [_pt("cluster", True)])) == 1
    for layer in range(2, 10):
        tracker.observe(layer, [_pt("ewma", False)])  # no cluster point on these layers
    assert tracker.observe(10, [_pt("cluster", True)]) == []


def test_stop_criteria() -> None:
    tracker = _tracker(cusum_h=9.0, cluster_area=50.0, consecutive_limit=2.0, consecutive_k=3)
    assert tracker.observe(1, [_pt("cusum", True, 8.0)])[0].level == "warn"
    # A score far *below* Phase I neither warns nor stops: higher is worse.
    assert tracker.observe(2, [_pt("cusum", True, -9.5, "lower")]) == []
    assert _tracker().observe(1, [_pt("ewma", True, -4.0, "lower")]) == []
    stop = tracker.observe(3, [_pt("cusum", True, 9.5, "upper")])
    assert [(e.chart, e.level, e.rule, e.action) for e in stop] == [
        ("cusum", "stop", "h_stop", "pause")
    ]
    events = [tracker.observe(10 + i, [_pt("shewhart", False, z)]) for i, z in enumerate(
        [2.5, -2.5, 1.0, -2.5, -2.1, -2.2, 2.5, 2.1, 2.2]
    )]  # fmt: skip
    assert [len(e) for e in events] == [0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert (events[-1][0].chart, events[-1][0].rule) == ("consecutive", "3_consecutive")
    area = tracker.observe(20, [_pt("cluster", False, 50.0)])
    assert [(e.chart, e.level, e.rule) for e in area] == [("cluster", "stop", "area_critical")]


def test_tracker_state_round_trip() -> None:
    a = _tracker(reset_after=3)
    _run(a, [True, False])
    b = _tracker(reset_after=3)
    b.load_state(a.state_dict())
    assert _run(a, [True, False, False, False, True]) == _run(b, [True, False, False, False, True])


def test_state_machine() -> None:
    assert transition("open", "acknowledged") is AlarmState.ACKNOWLEDGED
    assert transition(AlarmState.ACKNOWLEDGED, "resolved") is AlarmState.RESOLVED
    assert transition("open", "resolved") is AlarmState.RESOLVED
    for cur, tgt in [
        ("resolved", "open"),
        ("resolved", "acknowledged"),
        ("acknowledged", "open"),
        ("open", "open"),
        ("acknowledged", "acknowledged"),
    ]:
        with pytest.raises(IllegalTransition, match=f"from {cur} to {tgt}"):
            transition(cur, tgt)
    with pytest.raises(ValueError):
        transition("open", "snoozed")


def test_alarm_lifecycle() -> None:
    event = _run(_tracker(), [True])[0]
    alarm = Alarm(event)
    alarm.acknowledge("operator")
    alarm.resolve("operator")
    assert alarm.state is AlarmState.RESOLVED
    assert alarm.history == [
        (AlarmState.ACKNOWLEDGED, "operator"),
        (AlarmState.RESOLVED, "operator"),
    ]
    with pytest.raises(IllegalTransition):
        alarm.acknowledge()
