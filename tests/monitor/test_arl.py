"""ARL oracles from SPC.md: closed forms, Markov chains, vectorised Monte Carlo, solvers."""

from __future__ import annotations

import math

import pytest

from monitor import arl
from monitor.charts import (
    CusumKernel,
    EwmaKernel,
    HotellingKernel,
    IndividualsKernel,
    MewmaKernel,
    SelfStartKernel,
)

N = 3000  # runs per Monte Carlo check: tolerance ±7.3 % of the reference


def test_shewhart_closed_form() -> None:
    assert arl.shewhart_arl(3.0) == pytest.approx(370.4, abs=0.05)
    assert arl.shewhart_arl(3.0, 1.0) == pytest.approx(43.9, abs=0.05)


@pytest.mark.parametrize(("delta", "ref"), [(0.0, 370.4), (1.0, 43.9)])
def test_shewhart_monte_carlo(delta: float, ref: float, assert_arl) -> None:
    assert_arl(arl.mc_arl(IndividualsKernel(L=3.0), N, delta, seed=1), ref)


@pytest.mark.parametrize(
    ("delta", "ref"), [(0.0, 499.6), (0.5, 41.8), (1.0, 10.5), (1.5, 5.5), (2.0, 3.7), (3.0, 2.4)]
)
def test_ewma_markov(delta: float, ref: float) -> None:
    assert arl.ewma_arl(0.2, 2.962, delta) == pytest.approx(ref, rel=2e-3, abs=0.05)


@pytest.mark.parametrize(("lam", "L"), [(0.05, 2.615), (0.10, 2.814), (0.25, 2.998), (0.40, 3.054)])
def test_ewma_markov_montgomery_table(lam: float, L: float) -> None:
    assert arl.ewma_arl(lam, L) == pytest.approx(500, rel=0.01)


@pytest.mark.parametrize(
    ("exact", "delta", "ref"),
    [
        (False, 0.0, 500.0),
        (True, 0.0, 494.6),
        (False, 0.5, 41.8),
        (False, 1.0, 10.5),
        (False, 2.0, 3.7),
    ],
)
def test_ewma_monte_carlo(exact: bool, delta: float, ref: float, assert_arl) -> None:
    assert_arl(arl.mc_arl(EwmaKernel(0.2, 2.962, exact), N, delta, seed=2), ref)


@pytest.mark.parametrize(
    ("h", "delta", "ref"),
    [(4.0, 0.0, 168), (4.0, 0.5, 26.6), (4.0, 1.0, 8.38), (4.0, 2.0, 3.34), (5.0, 0.0, 465),
     (5.0, 0.5, 38.0), (5.0, 1.0, 10.4), (4.77, 0.0, 368.6)],
)  # fmt: skip
def test_cusum_markov(h: float, delta: float, ref: float) -> None:
    assert arl.cusum_arl(0.5, h, delta) == pytest.approx(ref, rel=3e-3)


def test_cusum_one_sided_is_double() -> None:
    assert arl.cusum_arl_one_sided(0.5, 4.0) == pytest.approx(335, rel=3e-3)
    assert arl.cusum_arl_one_sided(0.5, 5.0) == pytest.approx(931, rel=3e-3)


def test_cusum_siegmund_approximation() -> None:
    def siegmund(delta: float, k: float = 0.5, h: float = 5.0) -> float:
        d, b = delta - k, h + 1.166
        return (math.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)

    assert arl.cusum_arl_one_sided(0.5, 5.0, 1.0) == pytest.approx(siegmund(1.0), rel=0.02)


def test_cusum_fir_head_start_is_faster() -> None:
    assert arl.cusum_arl(0.5, 5.0, 1.0, fir=True) < 0.8 * arl.cusum_arl(0.5, 5.0, 1.0)
    assert arl.cusum_arl(0.5, 5.0, fir=True) > 0.9 * arl.cusum_arl(0.5, 5.0)


@pytest.mark.parametrize(
    ("h", "delta", "ref"), [(4.0, 0.0, 168), (5.0, 0.0, 465), (4.0, 1.0, 8.38)]
)
def test_cusum_monte_carlo(h: float, delta: float, ref: float, assert_arl) -> None:
    assert_arl(arl.mc_arl(CusumKernel(0.5, h), N, delta, seed=3), ref)


@pytest.mark.parametrize(("rules", "delta", "ref"), [("we", 0.0, 91.75), ("we", 1.0, 9.2)])
def test_western_electric_monte_carlo(rules: str, delta: float, ref: float, assert_arl) -> None:
    assert_arl(arl.mc_arl(IndividualsKernel(L=3.0, rules=rules), N, delta, seed=4), ref)


def test_rules_1_and_2_monte_carlo(assert_arl) -> None:
    assert_arl(arl.mc_arl(IndividualsKernel(L=3.0, rules="2of3_beyond_2s"), N, seed=5), 226)


def test_mewma_markov() -> None:
    assert arl.mewma_arl0(0.1, 8.66, 2) == pytest.approx(200, rel=0.015)
    assert arl.mewma_arl0(0.2, 9.65, 2) == pytest.approx(199.4, rel=0.015)
    assert arl.mewma_arl0(0.1, 12.73, 4) == pytest.approx(203, rel=0.015)


@pytest.mark.parametrize(("delta", "ref"), [(0.0, 200.9), (1.0, 10.1)])
def test_mewma_monte_carlo(delta: float, ref: float, assert_arl) -> None:
    kernel = MewmaKernel(lam=0.1, h=8.66, exact=False)
    assert_arl(arl.mc_arl(kernel, N, delta, seed=6), ref)


def test_mewma_exact_covariance_alarms_earlier() -> None:
    exact = arl.mc_arl(MewmaKernel(lam=0.1, h=8.66, exact=True), N, 1.0, seed=6)
    asym = arl.mc_arl(MewmaKernel(lam=0.1, h=8.66, exact=False), N, 1.0, seed=6)
    assert exact.arl < asym.arl


def test_mewma_shift_direction_does_not_matter(assert_arl) -> None:
    cov = ((2.0, 0.6), (0.6, 0.5))
    kernel = MewmaKernel((1.0, -1.0), cov, lam=0.1, h=8.66, exact=False)
    assert_arl(arl.mc_arl(kernel, N, 1.0, seed=7), 10.1)


def test_hotelling() -> None:
    assert arl.t2_ucl(2, 0.005) == pytest.approx(10.597, abs=1e-3)
    assert arl.t2_arl(10.597, 2) == pytest.approx(200, rel=1e-3)
    m = 50
    assert arl.t2_ucl_phase2(2, m, 0.005) > arl.t2_ucl(2, 0.005)
    assert arl.t2_ucl_phase2(2, 10**7, 0.005) == pytest.approx(10.597, abs=1e-2)
    assert arl.t2_ucl_phase1(2, m, 0.005) < (m - 1) ** 2 / m


def test_hotelling_monte_carlo(assert_arl) -> None:
    assert_arl(arl.mc_arl(HotellingKernel(ucl=10.597), N, seed=8), 200)


def test_self_starting_in_control_matches_known_parameter_cusum(assert_arl) -> None:
    assert_arl(arl.mc_arl(SelfStartKernel(CusumKernel(0.5, 4.0)), N, seed=9), 168)


def test_shift_at_returns_conditional_delay() -> None:
    rl = arl.simulate_run_lengths(CusumKernel(0.5, 4.0), 500, 3.0, seed=10, shift_at=30)
    assert 400 < rl.size < 500  # some runs false-alarmed before the change and are dropped
    assert 1.5 < rl.mean() < 3.5


@pytest.mark.parametrize(("lam", "ref_L"), [(0.2, 2.962), (0.1, 2.814), (0.05, 2.615)])
def test_ewma_solver(lam: float, ref_L: float) -> None:
    L = arl.ewma_L_for_arl0(lam, 500.0)
    assert pytest.approx(ref_L, abs=0.01) == L
    assert arl.ewma_arl(lam, L) == pytest.approx(500.0, rel=1e-4)


@pytest.mark.parametrize("target", [370.0, 5000.0, 58_000.0])
def test_solvers_round_trip(target: float) -> None:
    h = arl.cusum_h_for_arl0(0.5, target)
    assert arl.cusum_arl(0.5, h) == pytest.approx(target, rel=1e-4)
    assert arl.shewhart_arl(arl.shewhart_L_for_arl0(target)) == pytest.approx(target, rel=1e-9)
    hm = arl.mewma_h_for_arl0(0.1, target, 2)
    assert arl.mewma_arl0(0.1, hm, 2) == pytest.approx(target, rel=1e-4)
    L = arl.consecutive_L_for_arl0(3, target)
    assert arl.consecutive_arl_at(L, 3) == pytest.approx(target, rel=1e-4)


def test_known_designs() -> None:
    assert arl.cusum_h_for_arl0(0.5, 370.0) == pytest.approx(4.77, abs=0.01)
    assert arl.shewhart_L_for_arl0(370.4) == pytest.approx(3.0, abs=1e-3)
    assert arl.mewma_h_for_arl0(0.1, 200.0, 2) == pytest.approx(8.66, abs=0.05)


def test_budget_helpers() -> None:
    assert arl.arl0_for_false_alarm_prob(1000, 0.05) == pytest.approx(19_496, abs=1)
    assert arl.arl0_for_false_alarm_prob(1000, 0.1) == pytest.approx(9_491, abs=1)
    assert arl.false_alarm_prob(1000, arl.arl0_for_false_alarm_prob(1000, 0.05)) == pytest.approx(
        0.05
    )
    per = arl.sidak_arl0(19_500, 3)
    assert 1 - (1 - 1 / per) ** 3 == pytest.approx(1 / 19_500)
    assert arl.sidak_arl0(500, 1) == 500
    with pytest.raises(ValueError, match="false-alarm probability"):
        arl.arl0_for_false_alarm_prob(1000, 1.5)
