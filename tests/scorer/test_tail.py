"""RADAR's one-sided tail score: grows beyond the calibration range, where a forest saturates."""

from __future__ import annotations

import numpy as np
import pytest

from scorer.isoforest import IsoForestDetector
from scorer.tail import TailConfig, TailDetector


def _features(n: int = 40) -> np.ndarray:
    return np.exp(np.random.default_rng(0).normal(np.log([1.0, 2.0]), 0.05, size=(n, 2)))


def test_score_keeps_growing_beyond_the_calibration_range() -> None:
    feats = _features()
    tail, forest = TailDetector(feats), IsoForestDetector(feats)
    top = feats.max(axis=0)
    beyond = np.array([[1.0, top[1] * 1.2], [1.0, top[1] * 2.0], [1.0, top[1] * 4.0]])
    s = tail.score(beyond)
    assert s[0] < s[1] < s[2] and tail.decide(s).all()
    # the forest gives all three the same score: the reason for the tail score
    f = forest.score(beyond)
    assert f.max() - f.min() < 1e-9


def test_one_sided_and_deterministic() -> None:
    feats = _features()
    a, b = TailDetector(feats), TailDetector(feats)
    low = np.array([[0.5, 1.0], [1.0, 1.0]])
    assert a.score(low).tolist() == [0.0, 0.0]  # below the median on both: as normal as it gets
    probe = np.array([[1.2, 2.5]])
    assert a.score(probe)[0] == b.score(probe)[0] and a.threshold == b.threshold
    # f1 alone high counts too (both of RADAR's features)
    assert a.score(np.array([[3.0, 2.0]]))[0] > a.threshold


def test_threshold_is_a_cross_fitted_quantile_and_settings_are_checked() -> None:
    det = TailDetector(_features(), TailConfig(contamination=0.05))
    assert det.threshold == pytest.approx(np.quantile(det.calibration_scores, 0.95))
    assert det.calibration_scores.mean() >= det.score(det.features).mean()
    constant = TailDetector(np.ones((10, 2)))  # zero spread: no division by zero
    assert np.isfinite(constant.score(np.array([[2.0, 2.0]]))).all()
    with pytest.raises(ValueError, match="contamination"):
        TailDetector(_features(), TailConfig(contamination=0.5))
    with pytest.raises(ValueError, match="at least 2"):
        TailDetector(_features(1))


def test_default_threshold_is_leave_one_out_and_needs_no_fold_draw() -> None:
    feats = _features()
    det = TailDetector(feats)
    for i in (0, 7, len(feats) - 1):  # row i scored by a fit on every other row
        alone = TailDetector(np.delete(feats, i, axis=0))
        assert det.calibration_scores[i] == pytest.approx(alone.score(feats[i : i + 1])[0])
    other_seed = TailDetector(feats, TailConfig(random_state=99))
    assert np.array_equal(det.calibration_scores, other_seed.calibration_scores)
    k_fold = [TailDetector(feats, TailConfig(folds=5, random_state=s)).threshold for s in (0, 1)]
    assert k_fold[0] != k_fold[1]  # what leave-one-out removes: the threshold moved with the draw
