"""RADAR + geometry (issue 18): the texture channel (RADAR, used as it is) and the geometry
channel (scorer.geometry) fused into one image score and one pixel map per layer.

Fusion: each channel's score is divided by its own threshold (1 = that channel's own 2 %
decision), the fused score is their sum (``rule="sum"``; models saved before it keep the
larger of the two, ``"max"``), and the fused threshold is the (1 − contamination) quantile of
the fused scores of the held-out normal layers, so the combined false-positive rate stays at
the model's target rather than adding up the channels' rates. The sum was chosen on the seed-0
development data (the seed-1-trained models scoring the seed-0 test sets: image AUROC max /
sum / Fisher's p-value combination 0.990 / 0.984 / 0.983 on fdm_rectilinear, 0.942 / 0.959 /
0.949 on fdm_grid, 0.924 / 0.953 / 0.953 on lpbf_powder, 0.954 / 0.966 / 0.964 on lpbf_fused):
with the larger of the two, a normal layer's noise in either channel counts in full, and a
defect one channel sees moderately sinks into the other's noise. ``fired`` names, for a
flagged layer, the channels whose own decision flags it (scaled score above 1), or the larger
contributor when neither does alone. The pixel map is
the larger of the two channels' maps, each divided by its own pixel threshold, and its pixel
threshold is the 0.999 quantile of the fused held-out normal maps.

The largest defect cluster (``largest_area``, the monitor's cluster-area chart) is the texture
channel's, on RADAR's own map and calibrated by RADAR's held-out areas: the geometry maps are
whole-part maps by construction (a shifted part is displaced everywhere), so a cluster there
measures the part, not a growing defect; on a streamed 128² print, camera jitter of 2.6-3 px in
normal layers lit the whole part (5 000 of 16 384 px) and stopped the print by cluster area.
Geometric evidence reaches the monitor through the image score.

Without references (none sent, or a layer whose previous layer and outline are both missing or
unusable) a layer is scored by the texture channel alone, at RADAR's own decision; the method
logs that once. The geometry channel is fitted only when the training data carry references;
a model fitted without them is a texture-only model and says so in its metadata.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from rich.console import Console

from scorer.artifact import Artifact, ArtifactError, require
from scorer.calibration import (
    DEFAULT_CONTAMINATION,
    image_threshold,
    read_areas,
    to_results,
)
from scorer.device import DeviceInfo
from scorer.geometry import GeometryChannel, GeometryConfig, Sample
from scorer.methods import LayerReference, ScoreResult, TrainData, TrainSettings
from scorer.radar import RadarScorer

log = logging.getLogger(__name__)

TEXTURE, GEOMETRY = "texture", "geometry"
PIXEL_LAYERS = 16  # held-out layers whose fused maps set the pixel threshold
_GEOMETRY_PREFIX = "geometry."
RULES = {"sum": np.add, "max": np.maximum}  # channel scores over their own thresholds → fused


@dataclass
class ChannelOutputs:
    """One batch through both channels: the fused results, RADAR's own results, and the
    geometry channel's (score, pixel map) per layer, each over its own threshold (None where
    the layer had no usable reference or the model no geometry channel)."""

    fused: list[ScoreResult]
    texture: list[ScoreResult]
    geometry: list[tuple[float, np.ndarray] | None]


def _usable(ref: LayerReference | None) -> bool:
    return ref is not None and (ref.previous is not None or ref.outline is not None)


def _checked(ref: LayerReference | None, shape: tuple[int, ...]) -> LayerReference | None:
    """The reference with any part that does not match the layer's size dropped (and why)."""
    if ref is None:
        return None
    problems = [ref.outline_error] if ref.outline_error else []
    previous, outline = ref.previous, ref.outline
    if previous is not None and np.asarray(previous).shape[:2] != shape[:2]:
        problems.append(
            f"previous layer is {np.asarray(previous).shape[:2]}, the layer {shape[:2]}"
        )
        previous = None
    if outline is not None and np.asarray(outline).shape != shape[:2]:
        problems.append(f"outline is {np.asarray(outline).shape}, the layer {shape[:2]}")
        outline = None
    return LayerReference(previous, outline, "; ".join(problems) or None, ref.placement)


class RadarGeometryScorer:
    """RADAR's texture channel beside the geometry channel, fused (module docstring)."""

    name: ClassVar[str] = "radar-geometry"
    uses_references: ClassVar[bool] = True

    def __init__(
        self,
        texture: RadarScorer,
        geometry: GeometryChannel | None,
        threshold: float = 1.0,
        pixel_threshold: float = 1.0,
        metadata: dict[str, Any] | None = None,
        contamination: float = DEFAULT_CONTAMINATION,
        rule: str = "sum",
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"fusion rule must be one of {sorted(RULES)}, not {rule!r}")
        self.rule = rule
        self.texture = texture
        self.geometry = geometry
        self.threshold = float(threshold)
        self._pixel_threshold = float(pixel_threshold)
        self.contamination = contamination
        self.metadata: dict[str, Any] = metadata or {}
        self.metadata["geometry_channel"] = "on" if geometry is not None else "off"
        self.calibration_areas: list[int] = list(texture.calibration_areas)
        self.calibration_scores: list[float] = []
        self._version = ""
        self._said_texture_only = False

    @property
    def engine(self) -> str:
        """The texture channel's network engine (RadarScorer.engine)."""
        return self.texture.engine

    @property
    def channels(self) -> int:
        return self.texture.channels

    @property
    def model_version(self) -> str:
        return self._version

    @property
    def pixel_threshold(self) -> float:
        return self._pixel_threshold

    # ---- scoring ------------------------------------------------------------------------------

    def _texture_only_once(self, why: str) -> None:
        if not self._said_texture_only:
            log.warning("radar-geometry: %s; scoring by the texture channel alone", why)
            self._said_texture_only = True

    def _texture_scaled(
        self, results: Sequence[ScoreResult]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        det = self.texture.detector
        assert det is not None
        t_scores = np.array([r.score for r in results]) / det.threshold
        t_maps = [r.anomaly_map / self.texture.pixel_threshold for r in results]
        return t_scores, t_maps

    def score_batch(
        self,
        images: Sequence[np.ndarray],
        references: Sequence[LayerReference | None] | None = None,
    ) -> list[ScoreResult]:
        return self.score_channels(images, references).fused

    def score_channels(
        self,
        images: Sequence[np.ndarray],
        references: Sequence[LayerReference | None] | None = None,
    ) -> ChannelOutputs:
        """The fused results and what each channel said (for benchmarks and reports)."""
        if not images:
            return ChannelOutputs([], [], [])
        if references is not None and len(references) != len(images):
            raise ValueError(f"{len(references)} references for {len(images)} images")
        start = time.perf_counter()
        texture = self.texture.score_batch(images)
        t_scores, t_maps = self._texture_scaled(texture)
        refs = [
            _checked(r, np.asarray(img).shape)
            for img, r in zip(images, references or [None] * len(images), strict=True)
        ]
        for r in refs:
            if r is not None and r.outline_error:
                log.warning("radar-geometry: reference not used: %s", r.outline_error)
        if self.geometry is None:
            self._texture_only_once(
                "the model has no geometry channel (trained without references)"
            )
        elif not any(_usable(r) for r in refs):
            self._texture_only_once("no previous layer or outline came with the layers")
        scores, maps, channel_scores, states = [], [], [], []
        geometry: list[tuple[float, np.ndarray] | None] = []
        for img, r, ts, tm in zip(images, refs, t_scores, t_maps, strict=True):
            if self.geometry is None or not _usable(r):
                # texture alone, at RADAR's own decision (its scaled threshold is 1)
                scores.append(ts * self.threshold)
                maps.append(tm * self.pixel_threshold)
                channel_scores.append({TEXTURE: float(ts)})
                states.append(None)
                geometry.append(None)
                continue
            assert r is not None
            a = self.geometry.analyse(img, r)
            gs = float(self.geometry.score_features(a.features)[0]) / self.geometry.threshold
            gm = self.geometry.pixel_map(a) / self.geometry.pixel_threshold
            scores.append(RULES[self.rule](ts, gs))
            maps.append(np.maximum(tm, gm))
            channel_scores.append({TEXTURE: float(ts), GEOMETRY: gs})
            states.append(self.geometry.normal_placement(a))
            geometry.append((gs, gm))
        scores_arr = np.array(scores)
        flags = scores_arr > self.threshold
        out = to_results(
            maps,
            scores_arr,
            flags,
            [(r.f1, r.f2) for r in texture],
            self.pixel_threshold,
            self.texture.config.features,
            start,
        )
        for res, t, cs, st in zip(out, texture, channel_scores, states, strict=True):
            res.largest_area = t.largest_area  # the texture channel's (module docstring)
            res.channel_scores = cs
            res.outline_state = st
            res.fired = self._fired(cs, res.anomalous)
        return ChannelOutputs(out, texture, geometry)

    def _fired(self, cs: dict[str, float], flagged: bool) -> tuple[str, ...]:
        """The channels behind a flagged layer: those whose own decision flags it (for "max",
        as before: those above the fused threshold), else the larger contributor."""
        if not flagged:
            return ()
        own = 1.0 if self.rule == "sum" else self.threshold
        return tuple(c for c in (TEXTURE, GEOMETRY) if cs.get(c, 0.0) > own) or (
            max(cs, key=lambda c: cs[c]),
        )

    # ---- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        data: TrainData,
        settings: TrainSettings,
        device: DeviceInfo,
        deadline: float,
        console: Console | None = None,
    ) -> RadarGeometryScorer:
        geo_start = time.perf_counter()
        geometry = None
        has_refs = bool(data.train_references) and bool(data.calibration_references)
        if has_refs:
            geometry = GeometryChannel.fit(
                [
                    Sample(i, r)
                    for i, r in zip(data.train, data.train_references, strict=True)
                    if _usable(r)
                ],
                [
                    Sample(i, r)
                    for i, r in zip(data.calibration, data.calibration_references, strict=True)
                    if _usable(r)
                ],
                GeometryConfig(contamination=DEFAULT_CONTAMINATION),
                settings.seed,
            )
        else:
            log.warning(
                "radar-geometry: the training data have no references; geometry channel off"
            )
        geo_seconds = time.perf_counter() - geo_start
        # The fused calibration scores held-out layers once more (PIXEL_LAYERS of them through
        # RADAR, at a conservative 0.5 s a layer at 256²; all of them twice through the
        # geometry channel, at its measured rate): keep time for it within the budget.
        n_cal, n_all = len(data.calibration), len(data.train) + len(data.calibration)
        reserve = min(n_cal, PIXEL_LAYERS) * 0.5 + 2.0
        reserve += geo_seconds * 2 * n_cal / n_all if has_refs else 0.0
        # RADAR is trained and calibrated exactly as on its own (its own 2 % threshold)
        texture = RadarScorer.fit(data, settings, device, deadline - reserve, console)
        scorer = cls(texture, geometry, metadata={"training": texture.metadata.get("training", {})})
        scorer.metadata["t_selection"] = texture.metadata.get("t_selection", {})
        scorer.metadata["geometry_fit_seconds"] = round(geo_seconds, 2)
        cal_start = time.perf_counter()
        scorer.calibrate(data.calibration, data.calibration_references if has_refs else None)
        scorer.metadata["fusion_calibration_seconds"] = round(time.perf_counter() - cal_start, 2)
        return scorer

    def calibrate(
        self,
        images: Sequence[np.ndarray],
        references: Sequence[LayerReference | None] | None,
    ) -> None:
        """The fused thresholds from held-out normal layers: the texture channel's held-out
        scores are its (leave-one-out) calibration scores, the geometry channel's were never
        fitted on these layers."""
        det = self.texture.detector
        assert det is not None
        t_cal = np.asarray(det.calibration_scores) / det.threshold
        if self.geometry is None or references is None:
            self.threshold, self._pixel_threshold = 1.0, self.texture.pixel_threshold
            self.calibration_scores = [float(v) for v in t_cal]
            self.calibration_areas = list(self.texture.calibration_areas)
            self.metadata["fusion"] = {"channels": [TEXTURE], "threshold": 1.0}
            return
        self.threshold, self._pixel_threshold = 1.0, 1.0  # scaled scores while calibrating
        geometry = self.geometry
        g_cal = []
        for img, ref in zip(images, references, strict=True):
            r = _checked(ref, np.asarray(img).shape)
            a = geometry.analyse(img, r) if r is not None and _usable(r) else None
            g_cal.append(0.0 if a is None else float(geometry.score_features(a.features)[0]))
        g_cal = list(np.asarray(g_cal) / geometry.threshold)
        fused = RULES[self.rule](t_cal, np.asarray(g_cal))
        self.threshold = image_threshold(fused, self.contamination)
        # The pixel threshold needs RADAR's maps of held-out layers once more (RADAR keeps none
        # from its own calibration): an evenly spread subset bounds that extra network time.
        pick = np.unique(np.linspace(0, len(images) - 1, min(len(images), PIXEL_LAYERS)).round())
        sub = [int(i) for i in pick]
        results = self.score_batch([images[i] for i in sub], [references[i] for i in sub])
        maps = [r.anomaly_map for r in results]
        pixels = np.concatenate([m.ravel() for m in maps])
        self._pixel_threshold = float(np.quantile(pixels, self.texture.config.pixel_quantile))
        self.calibration_areas = list(self.texture.calibration_areas)  # see largest_area
        self.calibration_scores = [float(v) for v in fused]
        self.metadata["fusion"] = {
            "channels": [TEXTURE, GEOMETRY],
            "rule": self.rule,
            "threshold": self.threshold,
            "pixel_threshold": self._pixel_threshold,
            "held_out_false_positive_rate": float(np.mean(fused > self.threshold)),
            "pixel_threshold_layers": len(sub),
        }

    # ---- persistence --------------------------------------------------------------------------

    def to_artifact(self) -> Artifact:
        tex = self.texture.to_artifact()
        tensors = dict(tex.tensors)
        config: dict[str, Any] = {
            "channels": self.channels,
            "texture": tex.config,
            "geometry": None if self.geometry is None else self.geometry.to_config(),
            # the fused calibration in the block every method has (the monitor's Phase I reads
            # its image scores, the texture channel's (f1, f2) and the cluster areas)
            "calibration": {
                "image_scores": self.calibration_scores,
                "features": tex.config["calibration"]["features"],
                "threshold": self.threshold,
                "pixel_threshold": self.pixel_threshold,
                "contamination": self.contamination,
                "largest_areas": self.calibration_areas,
            },
            **self.metadata,
        }
        if self.geometry is not None:
            for k, v in self.geometry.to_arrays().items():
                tensors[_GEOMETRY_PREFIX + k] = torch.as_tensor(np.asarray(v, np.float64))
        return Artifact(self.name, tensors, config, self._version)

    @classmethod
    def from_artifact(
        cls, artifact: Artifact, device: DeviceInfo, where: Path
    ) -> RadarGeometryScorer:
        doc = artifact.config
        cfg_path = where / "config.json"
        tex_doc = require(doc, "texture", dict, cfg_path)
        tex_tensors = {
            k: v for k, v in artifact.tensors.items() if not k.startswith(_GEOMETRY_PREFIX)
        }
        texture = RadarScorer.from_artifact(
            Artifact(RadarScorer.name, tex_tensors, tex_doc, artifact.model_version), device, where
        )
        geometry = None
        if doc.get("geometry") is not None:
            arrays = {
                k[len(_GEOMETRY_PREFIX) :]: v.numpy()
                for k, v in artifact.tensors.items()
                if k.startswith(_GEOMETRY_PREFIX)
            }
            try:
                geometry = GeometryChannel.from_parts(
                    require(doc, "geometry", dict, cfg_path), arrays
                )
            except (KeyError, TypeError, ValueError) as e:
                raise ArtifactError(cfg_path, f"invalid geometry channel ({e})") from e
        cal = require(doc, "calibration", dict, cfg_path)
        thr = float(require(cal, "threshold", (int, float), cfg_path))
        pix = float(require(cal, "pixel_threshold", (int, float), cfg_path))
        if not (math.isfinite(thr) and math.isfinite(pix)):
            raise ArtifactError(cfg_path, "fusion thresholds are not finite")
        keep = (
            "training",
            "t_selection",
            "geometry_fit_seconds",
            "fusion_calibration_seconds",
            "fusion",
        )
        meta = {k: doc[k] for k in keep if k in doc}
        contamination = float(cal.get("contamination", DEFAULT_CONTAMINATION))
        # models from before the rule was a choice used the larger of the two channels
        rule = "sum" if meta.get("fusion", {}).get("rule") == "sum" else "max"
        scorer = cls(texture, geometry, thr, pix, meta, contamination, rule)
        scorer.calibration_scores = [float(v) for v in cal.get("image_scores", [])]
        scorer.calibration_areas = read_areas(cal, cfg_path)
        scorer._version = artifact.model_version
        return scorer


__all__ = ["RadarGeometryScorer"]
