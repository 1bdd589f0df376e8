"""Largest connected defect cluster and its calibrated upper limit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitor.charts import ClusterAreaKernel, KernelChart, cluster_area_limit, largest_cluster_area


def test_largest_cluster_on_binary_map() -> None:
    m = np.zeros((6, 6), dtype=bool)
    m[0, 0:4] = True  # 4 in a row
    m[3:5, 3:5] = True  # 2x2 block = 4 ... plus one diagonal neighbour below
    m[5, 5] = True
    assert largest_cluster_area(m) == 4  # edge connectivity: the corner pixel is separate
    assert largest_cluster_area(m, connectivity=2) == 5
    assert largest_cluster_area(np.zeros((4, 4), dtype=bool)) == 0


def test_real_map_threshold_and_smoothing() -> None:
    a = np.zeros((20, 20))
    a[5:9, 5:9] = 1.0  # a 16-pixel blob
    a[15, 15] = 1.0  # an isolated hot pixel
    assert largest_cluster_area(a, threshold=0.5) == 16
    smoothed = largest_cluster_area(a, threshold=0.3, smooth_sigma=1.0)
    assert 4 <= smoothed <= 20  # the blob survives smoothing, the single pixel does not join it
    single = np.zeros((20, 20))
    single[15, 15] = 1.0
    assert largest_cluster_area(single, threshold=0.3, smooth_sigma=1.0) == 0


def test_empirical_limit() -> None:
    areas = np.arange(1000.0)
    a_min = cluster_area_limit(areas, 0.05)
    assert a_min == 950.0  # exactly 50 of 1000 layers reach it
    assert (areas >= a_min).mean() <= 0.05


def test_exponential_tail_beyond_the_data() -> None:
    areas = np.random.default_rng(0).exponential(10.0, 2000)
    a_min = cluster_area_limit(areas, 1e-5)
    assert a_min == pytest.approx(10.0 * math.log(1e5), rel=0.25)
    assert a_min > areas.max()


def test_limit_never_below_one_and_validates() -> None:
    assert cluster_area_limit([0.0] * 50, 1e-4) == 1.0
    with pytest.raises(ValueError):
        cluster_area_limit([], 0.01)


def _noise_areas(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array(
        [
            largest_cluster_area(rng.standard_normal((24, 24)), 1.2, smooth_sigma=1.0)
            for _ in range(n)
        ]
    )


def test_calibrated_per_layer_false_alarm_rate() -> None:
    alpha, n = 0.02, 1500
    a_min = cluster_area_limit(_noise_areas(n, 1), alpha)
    fresh = _noise_areas(n, 2)
    rate = (fresh >= a_min).mean()
    assert rate <= alpha + 4 * math.sqrt(alpha * (1 - alpha) / n)
    assert rate >= alpha / 4


def test_cluster_chart_signals_at_a_min() -> None:
    chart = KernelChart(ClusterAreaKernel(a_min=12.0, center=2.0))
    assert not chart.update(11.0).signal
    p = chart.update(12.0)
    assert p.signal and p.rule == "area" and (p.center, p.lcl, p.ucl) == (2.0, 0.0, 12.0)
