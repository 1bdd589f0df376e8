"""Spatial chart on the largest connected defect cluster per layer (after Grasso et al. 2017).

Hot pixels scattered by noise are expected; a defect shows up as a *cluster*. Per layer the
anomaly map is thresholded, connected components are labelled and the largest area is the
charted scalar; the upper limit A_min is calibrated on in-control layers to a per-layer false
alarm rate alpha, so ARL0 = 1/alpha.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from monitor.charts.base import Kernel


def largest_cluster_area(
    anomaly_map: np.ndarray,
    threshold: float = 0.5,
    smooth_sigma: float = 0.0,
    connectivity: int = 1,
) -> int:
    """Pixel count of the largest connected component of a binary map, or of ``map > threshold``.

    ``smooth_sigma`` > 0 applies the Gaussian spatial weighting before thresholding a real map;
    ``connectivity`` 1 = edge neighbours, ``ndim`` = edge and corner neighbours.
    """
    a = np.asarray(anomaly_map)
    if a.dtype == bool:
        mask = a
    else:
        a = a.astype(float)
        if smooth_sigma > 0:
            a = ndimage.gaussian_filter(a, smooth_sigma)
        mask = a > threshold
    labels, n = ndimage.label(
        mask, structure=ndimage.generate_binary_structure(a.ndim, connectivity)
    )
    if n == 0:
        return 0
    return int(np.bincount(labels.ravel())[1:].max())


def cluster_area_limit(areas: Sequence[float], alpha: float, min_exceedances: int = 10) -> float:
    """A_min with P(area >= A_min) <= alpha on in-control layers.

    The empirical quantile when the calibration set has at least ``min_exceedances`` layers in
    the tail (alpha·n); otherwise an exponential tail is fitted to the exceedances of the 90th
    percentile (peaks over threshold), because a per-build alpha is usually far below 1/n.
    Never below 1: a layer without any cluster cannot alarm.
    """
    x = np.sort(np.asarray(areas, dtype=float))
    n = x.size
    if n == 0 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need in-control areas and 0 < alpha < 1 (n={n}, alpha={alpha})")
    if alpha * n >= min_exceedances:
        candidates = np.unique(x)
        tail = n - np.searchsorted(x, candidates, side="left")  # count(area >= c)
        return max(1.0, float(candidates[np.argmax(tail <= alpha * n)]))
    u = float(np.quantile(x, 0.9))
    excess = x[x > u] - u
    if excess.size == 0:  # no spread in the calibration areas: anything larger alarms
        return max(1.0, float(x[-1]) + 1.0)
    p_u = excess.size / n
    limit = u + float(excess.mean()) * math.log(p_u / alpha)
    return max(1.0, limit, float(x[-1]) + 1.0 if alpha * n < 1 else 0.0)


@dataclass(frozen=True)
class ClusterAreaKernel(Kernel):
    """Signal when the layer's largest cluster area reaches ``a_min``."""

    kind = "cluster"
    a_min: float = 1.0
    center: float = 0.0
    rule_names = (None, "area")

    def init(self, n: int | None) -> tuple[Any, ...]:
        return ()

    def step(self, s: tuple[Any, ...], x: Any, t: int) -> tuple[tuple[Any, ...], Any, Any]:
        return s, x, (x >= self.a_min) * 1

    def limits(self, t: int) -> tuple[float, float, float]:
        return self.center, 0.0, self.a_min
