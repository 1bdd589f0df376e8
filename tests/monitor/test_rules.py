"""Each run rule fires on a hand-made sequence at its last point, and not on the near miss."""

from __future__ import annotations

import pytest

from monitor.charts import IndividualsKernel, KernelChart
from monitor.rules import RULE_DOC, RULESETS, parse_rules

ALT = [0.1, -0.1] * 7

CASES = {
    # rule: (fires at its last point, near miss)
    "2of3_beyond_2s": ([0.0, 2.5, 0.5, 2.5], [2.5, 0.5, 0.5, 2.5, -2.5]),
    "4of5_beyond_1s": ([0.0, 1.5, 1.5, 0.5, 1.5, 1.5], [1.5, 0.5, 1.5, 0.5, 1.5, -1.5, -1.5]),
    "8_same_side": ([-0.5] + [0.1] * 8, [0.1] * 7 + [-0.1] + [0.1] * 7),
    "9_same_side": ([0.1] * 9, [0.1] * 8 + [0.0] + [0.1] * 8),
    "6_trend": ([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.5]),
    "14_alternating": (ALT, [*ALT[:13], ALT[12]]),  # a tie breaks the alternation
    "15_within_1s": ([2.0] + [0.5] * 15, [0.5] * 14 + [1.5] + [0.5] * 14),
    "8_beyond_1s": ([1.5, -1.5] * 4, [1.5, -1.5, 1.5, -1.5, 0.5, 1.5, -1.5, 1.5, -1.5]),
}


def _chart(rules: str) -> KernelChart:
    return KernelChart(IndividualsKernel(L=3.0, rules=rules))


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_at_last_point(rule: str) -> None:
    chart = _chart(rule)
    points = [chart.update(z) for z in CASES[rule][0]]
    assert [p.signal for p in points] == [False] * (len(points) - 1) + [True]
    assert points[-1].rule == rule


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_near_miss_does_not_fire(rule: str) -> None:
    chart = _chart(rule)
    assert not any(chart.update(z).signal for z in CASES[rule][1])


def test_every_rule_has_a_case_and_a_description() -> None:
    assert set(CASES) == set(RULE_DOC)
    assert set(RULESETS["nelson"]) | set(RULESETS["we"]) == set(RULE_DOC)


def test_limit_beats_run_rules_and_names_the_side() -> None:
    chart = _chart("nelson")
    for z in [2.5, 2.5]:
        chart.update(z)
    p = chart.update(3.5)
    assert p.signal and p.rule == "upper"
    assert chart.update(-3.5).rule == "lower"


def test_rules_use_sigma_units_of_the_raw_chart() -> None:
    chart = KernelChart(IndividualsKernel(center=10.0, sigma=2.0, L=3.0, rules="we"))
    points = [chart.update(x) for x in (10.0, 15.0, 11.0, 15.0)]  # z = 0, 2.5, 0.5, 2.5
    assert points[-1].rule == "2of3_beyond_2s"
    assert points[-1].statistic == 15.0 and points[-1].ucl == 16.0


def test_unknown_rule_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown run rule"):
        parse_rules("we,nelson9")
    assert parse_rules("6_trend, 8_beyond_1s") == ("6_trend", "8_beyond_1s")
