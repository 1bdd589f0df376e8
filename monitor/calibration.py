"""Phase I: turn in-control calibration data into the parameters the charts assume.

Scores: a Yeo-Johnson transform fitted on Phase I makes skewed detector scores (Isolation
Forest scores are right-skewed) approximately normal, then mu0/sigma0 standardise them, so the
charts' designed ARLs (which assume N(0,1) in control) hold. Features: mean and covariance for
T²/MEWMA. Defect areas: kept as the empirical in-control distribution for the cluster chart.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

from monitor.charts.spatial import cluster_area_limit
from monitor.estimators import mad_sigma, mr_sigma
from monitor.levels import FeatureStatistic, LevelModel, fit_levels

Estimator = Literal["mr", "std", "mad"]
log = logging.getLogger(__name__)


def location_scale(x: Sequence[float], estimator: Estimator = "mr") -> tuple[float, float]:
    """(mu0, sigma0): mean with MRbar/d2 or the s.d., or median with MAD (robust to outliers)."""
    a = np.asarray(x, dtype=float)
    if estimator == "mad":
        return float(np.median(a)), mad_sigma(a)
    if estimator == "mr":
        return float(a.mean()), mr_sigma(a)
    if estimator == "std":
        return float(a.mean()), float(a.std(ddof=1))
    raise ValueError(f"unknown estimator {estimator!r}; use 'mr', 'std' or 'mad'")


@dataclass(frozen=True)
class YeoJohnson:
    """y = YJ((x - loc)/scale; lam), with lam restricted to [0, 2].

    Pre-scaling makes the fit independent of the score's units. The restriction keeps both
    tails unbounded: for lam < 0 the upper tail would be capped at -1/lam and a huge anomaly
    score could never cross a limit.
    """

    loc: float
    scale: float
    lam: float

    @classmethod
    def fit(cls, x: Sequence[float]) -> YeoJohnson:
        a = np.asarray(x, dtype=float)
        loc = float(np.median(a))
        scale = mad_sigma(a) or float(a.std()) or 1.0
        u = (a - loc) / scale
        res = optimize.minimize_scalar(
            lambda lam: -stats.yeojohnson_llf(lam, u), bounds=(0.0, 2.0), method="bounded"
        )
        return cls(loc, scale, float(res.x))

    def __call__(self, x: float) -> float:
        u = (x - self.loc) / self.scale
        lam = self.lam
        if u >= 0.0:
            return math.log1p(u) if lam < 1e-12 else ((u + 1.0) ** lam - 1.0) / lam
        return (
            -math.log1p(-u)
            if lam > 2.0 - 1e-12
            else -((1.0 - u) ** (2.0 - lam) - 1.0) / (2.0 - lam)
        )

    def array(self, x: Sequence[float]) -> np.ndarray:
        return np.asarray(
            stats.yeojohnson((np.asarray(x, float) - self.loc) / self.scale, self.lam)
        )


@dataclass(frozen=True)
class ScoreCalibration:
    """z = (T(score) - mu0)/sigma0, approximately N(0,1) while the process is in control."""

    mu0: float
    sigma0: float
    n: int
    transform: YeoJohnson | None = None
    estimator: Estimator = "mr"

    def z(self, score: float) -> float:
        t = self.transform
        return ((t(score) if t is not None else score) - self.mu0) / self.sigma0

    def z_array(self, scores: Sequence[float]) -> np.ndarray:
        y = self.transform.array(scores) if self.transform else np.asarray(scores, float)
        return (y - self.mu0) / self.sigma0


def fit_scores(
    scores: Sequence[float],
    *,
    transform: Literal["yeojohnson", "none"] = "yeojohnson",
    estimator: Estimator = "mr",
    screen_alpha: float | None = 0.01,
    max_rounds: int = 3,
) -> ScoreCalibration:
    """Phase I for the score: fit the transform and (mu0, sigma0).

    With ``screen_alpha`` set, points beyond Bonferroni limits (family-wise ``screen_alpha``
    over the m Phase I points) are dropped and the fit repeated: a spatter or a bad layer in the
    calibration run should not widen the limits for every later build.
    """
    x = np.asarray(scores, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 10:
        raise ValueError(f"Phase I needs at least 10 finite scores, got {x.size}")
    if np.ptp(x) == 0:  # before the transform fit, which has nothing to fit (scipy warnings)
        raise ValueError(f"Phase I scores have zero spread (all {x[0]:g}); cannot standardise")
    for round_ in range(max_rounds + 1):
        yj = YeoJohnson.fit(x) if transform == "yeojohnson" else None
        y = yj.array(x) if yj else x
        mu, sigma = location_scale(y, estimator)
        if not sigma > 0:
            raise ValueError("Phase I scores have zero spread; cannot standardise")
        if screen_alpha is None or round_ == max_rounds:
            break
        limit = stats.norm.isf(screen_alpha / (2 * x.size))
        keep = np.abs((y - mu) / sigma) <= limit
        if keep.all() or keep.sum() < 10:
            break
        x = x[keep]
    return ScoreCalibration(mu, sigma, int(x.size), yj, estimator)


@dataclass(frozen=True)
class FeatureCalibration:
    """Phase I mean vector and covariance of the feature vector, from n layers."""

    mean: tuple[float, ...]
    cov: tuple[tuple[float, ...], ...]
    n: int


def fit_features(features: Sequence[Sequence[float]]) -> FeatureCalibration:
    f = np.asarray(features, dtype=float)
    f = f[np.isfinite(f).all(axis=1)]
    if f.ndim != 2 or f.shape[0] <= f.shape[1] + 1:
        raise ValueError(f"need more than p + 1 complete feature vectors, got shape {f.shape}")
    cov = np.atleast_2d(np.cov(f, rowvar=False))
    return FeatureCalibration(
        tuple(f.mean(axis=0).tolist()), tuple(map(tuple, cov.tolist())), int(f.shape[0])
    )


@dataclass(frozen=True)
class AreaCalibration:
    """In-control largest-cluster areas; the limit for a per-layer alpha comes from them."""

    areas: tuple[float, ...]

    def limit(self, alpha: float) -> float:
        return cluster_area_limit(self.areas, alpha)

    @property
    def median(self) -> float:
        return float(np.median(self.areas))


def fit_areas(areas: Sequence[float]) -> AreaCalibration:
    a = [float(v) for v in areas if v is not None and math.isfinite(v)]
    if not a:
        raise ValueError("need at least one in-control defect area")
    return AreaCalibration(tuple(a))


@dataclass(frozen=True)
class Calibration:
    """Everything Phase I knows; a missing part is estimated from the job's first layers.

    ``levels`` (the random-effects model of a print's level, fitted on several layers of each
    of several normal prints) makes the score charts run on each job's own centre: without it
    they run on z against the population's centre. It models ``level_statistic`` of each
    layer's (f1, f2), or the raw score where that is None."""

    score: ScoreCalibration | None = None
    features: FeatureCalibration | None = None
    areas: AreaCalibration | None = None
    levels: LevelModel | None = None
    level_statistic: FeatureStatistic | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        s, f, a = d.get("score"), d.get("features"), d.get("areas")
        score = None
        if s is not None:
            t = s.get("transform")
            score = ScoreCalibration(
                s["mu0"], s["sigma0"], s["n"], YeoJohnson(**t) if t else None, s["estimator"]
            )
        feats = None
        if f is not None:
            feats = FeatureCalibration(tuple(f["mean"]), tuple(tuple(r) for r in f["cov"]), f["n"])
        lv, st = d.get("levels"), d.get("level_statistic")
        return cls(
            score,
            feats,
            AreaCalibration(tuple(a["areas"])) if a else None,
            LevelModel.from_dict(lv) if lv else None,
            FeatureStatistic(tuple(st["center"]), tuple(st["scale"])) if st else None,
        )

    def level_values(self, rows: Any) -> np.ndarray:
        """The level model's statistic of layers given as rows of (score, f1, f2)."""
        a = np.asarray(rows, dtype=float).reshape(-1, 3)
        st = self.level_statistic
        return st.array(a[:, 1:3]) if st is not None else a[:, 0]


def fit_calibration(
    scores: Sequence[float] | None = None,
    features: Sequence[Sequence[float]] | None = None,
    areas: Sequence[float] | None = None,
    **score_options: Any,
) -> Calibration:
    """Phase I from a list of scores (the model artifact's calibration scores, or a job's first
    m layers) and, if given, the matching features and defect areas."""
    return Calibration(
        fit_scores(scores, **score_options) if scores is not None else None,
        fit_features(features) if features is not None else None,
        fit_areas(areas) if areas is not None else None,
    )


def fit_print_levels(cal: Calibration, prints: Sequence[Sequence[Sequence[float]]]) -> LevelModel:
    """The level model of calibration prints (per layer [score, f1, f2]) in ``cal``'s statistic."""
    return fit_levels([cal.level_values(p) for p in prints])


def with_print_levels(
    cal: Calibration, prints: Sequence[Sequence[Sequence[float]]] | None, model_version: str = ""
) -> Calibration:
    """``cal`` with the level model fitted on calibration prints (per print, per layer
    [score, f1, f2]: what ``layerwatch monitor calibrate`` stores). Without them the score
    charts keep the population's centre, and the log says so."""
    if not prints:
        log.info("no calibration prints: score charts on the population's centre",
                 extra={"model_version": model_version})  # fmt: skip
        return cal
    try:
        levels = fit_print_levels(cal, prints)
    except ValueError as exc:
        log.warning("calibration prints unusable", extra={"error": str(exc)})
        return cal
    fitted = {k: round(v, 4) for k, v in levels.to_dict().items() if isinstance(v, float)}
    log.info(
        "level model from calibration prints", extra={"model_version": model_version, **fitted}
    )
    return dataclasses.replace(cal, levels=levels)


def model_calibration(config: dict[str, Any]) -> Calibration:
    """Phase I from a model's stored calibration: image scores, (f1, f2) features and the
    largest defect-cluster area of each held-out normal image (models from before the areas
    were stored leave them to the job's first layers), and the level model's statistic of the
    features. The level model itself comes from calibration prints, which the model's held-out
    images (one layer each) cannot give: see ``with_print_levels``."""
    cal = config.get("calibration") or {}
    score = feats = areas = None
    scores = cal.get("image_scores") or cal.get("scores")
    if scores and len(scores) >= 10:
        score = fit_scores(scores)
    features = cal.get("features")
    if features and len(features) > 3:
        feats = fit_features(features)
    largest = cal.get("largest_areas")
    if largest and len(largest) >= 10:
        areas = fit_areas(largest)
    statistic = FeatureStatistic.from_features(features) if features and len(features) > 3 else None
    return Calibration(score=score, features=feats, areas=areas, level_statistic=statistic)
