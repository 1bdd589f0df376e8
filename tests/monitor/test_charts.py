"""Chart kernels: scalar and vectorised paths agree, state survives JSON, formulas hold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from monitor.charts import (
    ClusterAreaKernel,
    CusumKernel,
    EwmaKernel,
    HotellingKernel,
    IndividualsKernel,
    Kernel,
    KernelChart,
    MewmaKernel,
    SelfStartKernel,
    batch,
    q_sequence,
    q_statistic,
)

COV = ((1.0, 0.4), (0.4, 2.0))
KERNELS: list[Kernel] = [
    IndividualsKernel(L=2.5, rules="nelson"),
    IndividualsKernel(center=1.0, sigma=2.0, rules="we"),
    EwmaKernel(0.2, 2.0),
    EwmaKernel(0.1, 2.0, exact=False),
    CusumKernel(0.5, 3.0),
    CusumKernel(0.5, 3.0, fir=True),
    SelfStartKernel(CusumKernel(0.5, 3.0)),
    SelfStartKernel(EwmaKernel(0.2, 2.5)),
    HotellingKernel((0.0, 1.0), COV, 6.0),
    MewmaKernel((0.0, 1.0), COV, 0.2, 6.0),
    ClusterAreaKernel(4.0, 1.0),
]


def _data(kernel: Kernel, n: int, steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if isinstance(kernel, HotellingKernel | MewmaKernel):
        return rng.standard_normal((n, steps, 2)) * 1.3
    if isinstance(kernel, ClusterAreaKernel):
        return rng.poisson(2.0, (n, steps)).astype(float)
    x = rng.standard_normal((n, steps)) * 1.3
    x[:, steps // 2 :] += 1.0
    return x


def _values(row: np.ndarray) -> list:
    return [tuple(v) for v in row.tolist()] if row.ndim == 2 else row.tolist()


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.kind)
def test_scalar_and_batch_paths_agree(kernel: Kernel) -> None:
    x = _data(kernel, 3, 60)
    res = batch(kernel, x)
    for i in range(3):
        chart = KernelChart(kernel)
        points = [chart.update(v) for v in _values(x[i])]
        for j, p in enumerate(points):
            if p is None:
                assert j < kernel.warmup
                continue
            assert p.statistic == pytest.approx(res.statistic[i, j], rel=1e-12, abs=1e-12)
            assert p.signal == bool(res.signal[i, j])
            assert (p.lcl, p.ucl) == pytest.approx((res.lcl[j], res.ucl[j]))
    assert res.signal.any()  # the data shifts: every chart family must see it somewhere


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.kind)
def test_state_round_trips_through_json(kernel: Kernel) -> None:
    values = _values(_data(kernel, 1, 80, seed=1)[0])
    a = KernelChart(kernel, name="x")
    for v in values[:40]:
        a.update(v)
    b = KernelChart.from_state(json.loads(json.dumps(a.state_dict(), allow_nan=False)))
    assert b.kernel == kernel and b.name == "x"
    for v in values[40:]:
        assert a.update(v) == b.update(v)


def test_unknown_kind_in_state() -> None:
    with pytest.raises(ValueError, match="unknown chart kind"):
        KernelChart.from_state({"kind": "xbar", "params": {}, "name": "x", "t": 0, "state": []})


def test_replay_rebuilds_state() -> None:
    values = np.random.default_rng(2).standard_normal(30).tolist()
    a, b = KernelChart(CusumKernel()), KernelChart(CusumKernel())
    for v in values:
        a.update(v)
    b.replay(values)
    assert a.state == b.state and a.t == b.t


def test_individuals_phase1_limits_are_xbar_pm_2_66_mrbar() -> None:
    x = [10.0, 12.0, 11.0, 13.0, 12.0]
    mrbar = (2 + 1 + 2 + 1) / 4
    _, lcl, ucl = IndividualsKernel.from_phase1(x).limits(1)
    assert ucl == pytest.approx(11.6 + 2.66 * mrbar, abs=1e-2)
    assert lcl == pytest.approx(11.6 - 2.66 * mrbar, abs=1e-2)


def test_ewma_exact_limits() -> None:
    k = EwmaKernel(0.2, 3.0)
    assert k.limits(1)[2] == pytest.approx(3.0 * 0.2)
    t = 5
    assert k.limits(t)[2] == pytest.approx(3.0 * math.sqrt(0.2 / 1.8 * (1 - 0.8 ** (2 * t))))
    assert k.limits(10_000)[2] == pytest.approx(3.0 * math.sqrt(0.2 / 1.8))
    assert EwmaKernel(0.2, 3.0, exact=False).limits(1)[2] == pytest.approx(
        3.0 * math.sqrt(0.2 / 1.8)
    )


def test_cusum_statistic_and_fir() -> None:
    chart = KernelChart(CusumKernel(0.5, 4.0))
    stats_ = [chart.update(z).statistic for z in (1.5, 1.5, -3.0, -1.0)]
    assert stats_ == pytest.approx([1.0, 2.0, -2.5, -3.0])  # C+ then -C- once C- is larger
    fir = KernelChart(CusumKernel(0.5, 4.0, fir=True))
    assert fir.state == (2.0, 2.0)
    assert fir.update(2.5).statistic == pytest.approx(4.0)
    p = fir.update(0.6)
    assert p.signal and p.rule == "upper" and p.statistic == pytest.approx(4.1)


def test_hotelling_value() -> None:
    k = HotellingKernel((0.0, 0.0), ((1.0, 0.5), (0.5, 1.0)), 10.597)
    p = KernelChart(k).update((1.0, 0.0))
    assert p.statistic == pytest.approx(1 / 0.75)
    assert HotellingKernel.for_alpha((0, 0), np.eye(2), 0.005).ucl == pytest.approx(
        10.597, abs=1e-3
    )


def test_mewma_first_point_uses_exact_covariance() -> None:
    k = MewmaKernel((0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)), 0.1, 8.66)
    assert KernelChart(k).update((1.0, 2.0)).statistic == pytest.approx(5.0)


def test_multivariate_rejects_bad_covariance() -> None:
    with pytest.raises(np.linalg.LinAlgError):
        HotellingKernel((0.0, 0.0), ((1.0, 2.0), (2.0, 1.0)), 10.0)
    with pytest.raises(ValueError, match="symmetric"):
        MewmaKernel((0.0, 0.0), ((1.0, 0.1), (0.0, 1.0)))


def test_self_starting_q_is_standard_normal_in_control() -> None:
    x = np.random.default_rng(3).normal(50.0, 7.0, 3000)
    q = q_sequence(x)
    assert q.size == 2998
    assert stats.kstest(q, "norm").pvalue > 0.01
    assert abs(np.corrcoef(q[:-1], q[1:])[0, 1]) < 0.06


def test_self_starting_chart_charts_q() -> None:
    x = np.random.default_rng(4).normal(5.0, 2.0, 200)
    chart = KernelChart(SelfStartKernel(IndividualsKernel(L=1e9)))
    points = [chart.update(v) for v in x.tolist()]
    assert points[:2] == [None, None]
    assert [p.statistic for p in points[2:]] == pytest.approx(q_sequence(x).tolist())
    assert q_statistic(7.0, 2, 5.0, 2.0) == pytest.approx(
        stats.norm.ppf(stats.t.cdf((7 - 5) / math.sqrt(2.0) * math.sqrt(2 / 3), 1))
    )


def test_self_starting_freezes_estimates_after_a_signal() -> None:
    rng = np.random.default_rng(5)
    x = np.r_[rng.standard_normal(100), rng.standard_normal(100) + 4.0]
    chart = KernelChart(SelfStartKernel(CusumKernel(0.5, 8.0)))
    first = None
    for i, v in enumerate(x.tolist()):
        p = chart.update(v)
        if p is not None and p.signal and first is None:
            first = i
    assert first is not None and 100 <= first < 110
    n, mean, _, frozen = chart.state[-4:]
    assert frozen == 1 and n == first and abs(mean) < 0.5  # shifted points never entered
    assert chart.update(4.0).signal  # and the chart stays out of control
