"""Pieces every method shares: thresholds from held-out normal data only, and anomaly maps →
``ScoreResult`` (mask, area, box, latency) so all methods report the same way."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scorer.artifact import ArtifactError, require
from scorer.features import FeatureConfig, defect_mask, global_norm, max_window_norm
from scorer.methods import ScoreResult

# Share of held-out normal images a method may flag (the same 2 % as RADAR's forest
# contamination, so every method's image threshold is set at the same false-alarm rate).
DEFAULT_CONTAMINATION = 0.02
# RADAR's pixel quantile; all methods use it for their pixel masks.
DEFAULT_PIXEL_QUANTILE = 0.999


def pixel_threshold(maps: Sequence[np.ndarray], quantile: float) -> float:
    """High quantile of every pixel of the held-out normal maps."""
    pixels = np.concatenate([np.asarray(m).ravel() for m in maps])
    return float(np.quantile(pixels, quantile))


def cluster_areas(
    maps: Sequence[np.ndarray], pixel_thr: float, mask_config: FeatureConfig
) -> list[int]:
    """Largest kept defect cluster (pixels) of each held-out normal map at the pixel threshold.

    Stored in the artifact as the monitor's in-control distribution for its cluster chart:
    without it the monitor must learn the areas from a job's first layers, which usually have
    no cluster at all, so the first normal cluster later in the print stops it.
    """
    return [defect_mask(m, pixel_thr, mask_config).largest_area for m in maps]


def pixel_calibration(
    maps: Sequence[np.ndarray], quantile: float, mask_config: FeatureConfig
) -> tuple[float, list[int]]:
    """The pixel threshold of held-out normal maps and their cluster areas at that threshold
    (the areas are only meaningful at the threshold the scorer masks with)."""
    thr = pixel_threshold(maps, quantile)
    return thr, cluster_areas(maps, thr, mask_config)


def read_areas(cal: dict[str, Any], where: Path) -> list[int]:
    """The stored calibration cluster areas (empty for artifacts from before they were kept)."""
    areas = cal.get("largest_areas", [])
    if not isinstance(areas, list) or not all(
        isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in areas
    ):
        raise ArtifactError(where, "calibration largest_areas must be a list of pixel counts")
    return list(areas)


def image_threshold(scores: Sequence[float] | np.ndarray, contamination: float) -> float:
    """(1 − contamination) quantile of held-out normal image scores."""
    if not 0.0 < contamination < 0.5:
        raise ValueError(f"contamination must be in (0, 0.5), got {contamination}")
    s = np.asarray(scores, dtype=np.float64)
    if s.size < 2:
        raise ValueError("calibration needs at least 2 held-out normal images")
    return float(np.quantile(s, 1.0 - contamination))


def cross_fit(
    features: np.ndarray,
    fit_score: Callable[[np.ndarray, np.ndarray], np.ndarray],
    score_all: Callable[[np.ndarray], np.ndarray],
    folds: int,
    seed: int,
) -> np.ndarray:
    """Each calibration row scored by a detector fitted on the other folds:
    ``fit_score(fit_on, to_score)``; ``score_all`` (the full fit) when a fold leaves < 2 rows.

    ``folds <= 0`` is leave-one-out: each row scored by a fit on all the others. It is
    deterministic (no fold draw) and its fits are the closest to the final one on all n rows;
    a cheap detector (the tail score) uses it. k-fold draws its folds from ``seed``.
    """
    n = len(features)
    if folds <= 0:  # leave-one-out: n folds of one row each (the draw does not matter)
        folds = n
    else:
        folds = max(2, min(folds, n))
        if n < 2 * folds:
            folds = max(2, n // 2)
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n)
    for k in range(folds):
        held = order[k::folds]
        rest = np.setdiff1d(order, held)
        out[held] = (
            score_all(features[held])
            if len(rest) < 2
            else fit_score(features[rest], features[held])
        )
    return out


def map_features(maps: Sequence[np.ndarray], window: int) -> list[tuple[float, float]]:
    """RADAR's (f1, f2) computed on any anomaly map: RMS and hottest w×w window RMS.

    Reported by every method so ``ScoreResult.f1/f2`` mean the same kind of thing everywhere.
    """
    out = []
    for m in maps:
        x = torch.as_tensor(np.asarray(m, np.float32))[None, None]
        out.append((float(global_norm(x)[0]), float(max_window_norm(x, window)[0])))
    return out


def top_k_mean(anomaly_map: np.ndarray, k: int) -> float:
    """Mean of the k largest map values (DiffusionAD's image score)."""
    flat = np.asarray(anomaly_map, np.float64).ravel()
    k = max(1, min(k, flat.size))
    return float(np.partition(flat, flat.size - k)[-k:].mean())


def to_results(
    maps: Sequence[np.ndarray],
    scores: Sequence[float] | np.ndarray,
    flags: Sequence[bool] | np.ndarray,
    features: Sequence[tuple[float, float]],
    pixel_thr: float,
    mask_config: FeatureConfig,
    started: float,
) -> list[ScoreResult]:
    """One ``ScoreResult`` per map: the pixel mask at the calibrated threshold and its stats.

    ``started`` is the batch's ``time.perf_counter()`` start; the latency includes the masks.
    """
    masks = [defect_mask(m, pixel_thr, mask_config) for m in maps]
    latency_ms = (time.perf_counter() - started) * 1000.0 / max(len(maps), 1)
    out = []
    for m, s, a, (f1, f2), mask in zip(maps, scores, flags, features, masks, strict=True):
        out.append(
            ScoreResult(
                score=float(s),
                anomalous=bool(a),
                f1=float(f1),
                f2=float(f2),
                defect_area=mask.defect_area,
                largest_area=mask.largest_area,
                bbox=mask.bbox,
                anomaly_map=m,
                latency_ms=latency_ms,
            )
        )
    return out


def read_thresholds(cal: dict[str, Any], where: Path) -> tuple[float, float]:
    """(image threshold, pixel threshold) from a stored calibration block, checked."""
    thr = float(require(cal, "threshold", (int, float), where))
    pix = float(require(cal, "pixel_threshold", (int, float), where))
    if not (np.isfinite(thr) and np.isfinite(pix)):
        raise ArtifactError(where, "calibration thresholds are not finite")
    return thr, pix


class MapCalibration:
    """Calibration state of a method that scores by an anomaly map (PCA, DiffusionAD,
    DDPM reconstruction): fitted on held-out normal maps, stored and restored one way.
    The method's ``config`` provides ``contamination``, ``pixel_quantile`` and ``features``."""

    config: Any
    threshold: float
    pixel_threshold: float
    calibration_scores: list[float]
    calibration_areas: list[int]

    def fit_thresholds(self, scores: np.ndarray, maps: Sequence[np.ndarray]) -> None:
        c = self.config
        self.threshold = image_threshold(scores, c.contamination)
        self.pixel_threshold, self.calibration_areas = pixel_calibration(
            maps, c.pixel_quantile, c.features
        )
        self.calibration_scores = [float(s) for s in scores]

    def calibration_record(self) -> dict[str, Any]:
        """The calibration block stored in the artifact's config.json."""
        c = self.config
        return {
            "image_scores": list(self.calibration_scores),
            "threshold": float(self.threshold),
            "contamination": c.contamination,
            "pixel_threshold": float(self.pixel_threshold),
            "pixel_quantile": c.pixel_quantile,
            "largest_areas": list(self.calibration_areas),
        }

    def restore_calibration(self, cal: dict[str, Any], where: Path) -> None:
        """The stored scores and areas (thresholds come through the constructor)."""
        self.calibration_scores = [float(v) for v in cal.get("image_scores", [])]
        self.calibration_areas = read_areas(cal, where)


class TopKMapScoring(MapCalibration):
    """``score_batch`` for methods that make a pixel map and score an image by the mean of its
    top-k pixels (``self.config.top_k``); they provide ``anomaly_maps`` and their thresholds."""

    name: str
    threshold: float
    pixel_threshold: float
    config: Any

    def anomaly_maps(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def _scores(self, maps: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([top_k_mean(m, self.config.top_k) for m in maps])

    def score_batch(self, images: Sequence[np.ndarray]) -> list[ScoreResult]:
        if not math.isfinite(self.threshold):
            raise RuntimeError(f"{self.name} scorer is not calibrated")
        if not images:
            return []
        start = time.perf_counter()
        maps = self.anomaly_maps(images)
        scores = self._scores(maps)
        feats = map_features(maps, self.config.features.window)
        return to_results(
            maps, scores, scores > self.threshold, feats, self.pixel_threshold,
            self.config.features, start,
        )  # fmt: skip
