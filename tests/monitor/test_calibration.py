"""Phase I: estimators, the normalising transform on skewed scores, screening, persistence."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy import stats

from monitor.calibration import (
    Calibration,
    YeoJohnson,
    fit_calibration,
    fit_features,
    fit_scores,
    location_scale,
)
from monitor.estimators import D2, mad_sigma, mr_sigma


def test_mr_sigma() -> None:
    assert mr_sigma([1.0, 3.0, 2.0]) == pytest.approx(1.5 / D2)
    x = np.random.default_rng(0).normal(0, 2.0, 20_000)
    assert mr_sigma(x) == pytest.approx(2.0, rel=0.02)
    with pytest.raises(ValueError):
        mr_sigma([1.0])


def test_mr_sigma_ignores_a_slow_drift() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(1000) + np.linspace(0, 5, 1000)
    assert mr_sigma(x) == pytest.approx(1.0, rel=0.06)
    assert x.std() > 1.5


def test_mad_is_robust() -> None:
    x = np.r_[np.random.default_rng(2).standard_normal(1000), [1e6] * 20]
    assert mad_sigma(x) == pytest.approx(1.0, rel=0.1)
    mu, sigma = location_scale(x, "mad")
    assert abs(mu) < 0.1 and sigma < 1.2
    with pytest.raises(ValueError, match="unknown estimator"):
        location_scale(x, "iqr")  # type: ignore[arg-type]


def _isolation_forest_scores(n: int, seed: int) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(seed)
    iso = IsolationForest(n_estimators=50, random_state=0).fit(rng.standard_normal((500, 4)))
    return -iso.score_samples(rng.standard_normal((n, 4)))


@pytest.mark.parametrize("kind", ["gamma", "lognormal", "isolation_forest"])
def test_transform_makes_skewed_scores_normal(kind: str) -> None:
    rng = np.random.default_rng(3)
    if kind == "gamma":
        x = rng.gamma(2.0, 0.01, 12_000) + 0.3
    elif kind == "lognormal":
        x = rng.lognormal(0.0, 0.5, 12_000)
    else:
        x = _isolation_forest_scores(12_000, 4)
    phase1, phase2 = x[:2000], x[2000:]
    assert stats.skew(phase2) > 0.4
    cal = fit_scores(phase1)
    z = cal.z_array(phase2)
    assert abs(stats.skew(z)) < 0.15
    assert stats.kstest(z, "norm").statistic < 0.05
    assert (z > 3).mean() < 0.005  # the upper tail is not inflated
    raw = fit_scores(phase1, transform="none").z_array(phase2)
    assert stats.kstest(raw, "norm").statistic > stats.kstest(z, "norm").statistic


def test_transform_is_monotone_and_unbounded() -> None:
    x = np.random.default_rng(5).exponential(1.0, 2000)
    yj = YeoJohnson.fit(x)
    assert 0.0 <= yj.lam <= 2.0
    grid = np.linspace(-50, 1e4, 2001)
    y = yj.array(grid)
    assert np.all(np.diff(y) > 0)
    assert yj(1e8) > yj(1e4) + 1.0  # a huge anomaly still maps far out


@pytest.mark.parametrize("lam", [0.0, 0.4, 1.0, 2.0])
def test_scalar_transform_matches_array(lam: float) -> None:
    yj = YeoJohnson(1.0, 2.0, lam)
    xs = [-7.0, -1.0, 0.5, 1.0, 3.0, 40.0]
    assert [yj(v) for v in xs] == pytest.approx(yj.array(xs).tolist())


def test_screening_drops_a_bad_layer() -> None:
    x = np.random.default_rng(6).standard_normal(300)
    x[100] = 25.0
    cal = fit_scores(x, transform="none", estimator="std")
    assert cal.n == 299 and abs(cal.mu0) < 0.2 and cal.sigma0 == pytest.approx(1.0, rel=0.15)
    unscreened = fit_scores(x, transform="none", estimator="std", screen_alpha=None)
    assert unscreened.n == 300 and unscreened.sigma0 > 1.5


def test_too_little_or_flat_data() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        fit_scores([1.0, 2.0, float("nan")])
    with pytest.raises(ValueError, match="zero spread"):
        fit_scores([1.0] * 30, transform="none")
    with warnings.catch_warnings():  # a one-sided score's quiet job: every layer 0
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="zero spread"):
            fit_scores([0.0] * 20)
    with pytest.raises(ValueError, match="p \\+ 1"):
        fit_features([[1.0, 2.0], [2.0, 3.0]])


def test_calibration_round_trips_through_json() -> None:
    rng = np.random.default_rng(7)
    cal = fit_calibration(rng.gamma(2.0, size=200), rng.standard_normal((200, 2)), [0, 1, 5, 2])
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
    assert back.score is not None and back.score.z(3.0) == cal.score.z(3.0)  # type: ignore[union-attr]
    assert Calibration.from_dict({}) == Calibration()
