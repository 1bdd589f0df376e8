"""Isolation Forest wrapper: deterministic refit and the two threshold rules."""

from __future__ import annotations

import numpy as np
import pytest

from scorer.isoforest import IsoForestConfig, IsoForestDetector


def _features(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).normal([1.0, 2.0], [0.05, 0.1], size=(n, 2))


def test_refit_is_deterministic_and_outliers_score_higher() -> None:
    a, b = IsoForestDetector(_features()), IsoForestDetector(_features())
    probe = np.array([[1.0, 2.0], [1.5, 3.5]])
    np.testing.assert_array_equal(a.score(probe), b.score(probe))
    assert a.threshold == b.threshold
    s = a.score(probe)
    assert s[1] > s[0] and a.decide(s).tolist() == [False, True]


def test_crossfit_threshold_is_an_out_of_sample_quantile() -> None:
    det = IsoForestDetector(_features(), IsoForestConfig(contamination=0.05))
    assert det.threshold == pytest.approx(np.quantile(det.calibration_scores, 0.95))
    assert np.mean(det.calibration_scores > det.threshold) <= 0.05
    # out-of-sample scores are higher than in-sample ones: the reason for cross-fitting
    assert det.calibration_scores.mean() > det.score(det.features).mean()


def test_sklearn_threshold_and_bad_settings() -> None:
    det = IsoForestDetector(_features(), IsoForestConfig(contamination="auto", threshold="sklearn"))
    assert det.threshold == pytest.approx(0.5)
    with pytest.raises(ValueError, match="contamination"):
        IsoForestDetector(_features(), IsoForestConfig(contamination="auto"))
    with pytest.raises(ValueError, match="threshold"):
        IsoForestDetector(_features(), IsoForestConfig(threshold="magic"))
    with pytest.raises(ValueError, match="at least 2"):
        IsoForestDetector(_features(1))


def test_one_sided_forest_does_not_flag_a_lower_than_usual_residual() -> None:
    """RADAR's features grow with the residual: below the calibration median is as normal as
    the median; a two-sided forest isolates such a point and scores it like an outlier."""
    feats = _features()
    low, median = np.array([[0.7, 1.4]]), np.median(feats, axis=0, keepdims=True)
    one, two = IsoForestDetector(feats), IsoForestDetector(feats, IsoForestConfig(one_sided=False))
    assert one.config.one_sided
    assert one.score(low)[0] == pytest.approx(one.score(median)[0])
    assert not one.decide(one.score(low))[0]
    assert two.score(low)[0] > two.score(median)[0] and two.decide(two.score(low))[0]
    high = np.array([[1.0, 3.5]])  # only f2 high: still an outlier
    assert one.decide(one.score(high))[0]
