"""The geometry channel (issue 18): what a layer's *shape* says, against its references.

A single-image texture residual (RADAR) cannot see a defect that moves or bends the part rather
than changing its surface: a layer shift leaves normal infill, shifted; a warped corner is a
magnified, tilted, blurred copy of a normal corner. This channel compares each layer with the
job's previous layer and with the slicer's expected outline:

- registration to the previous layer (phase correlation, scorer.registration): the shift itself
  is a feature (a layer shift *is* a shift; normal layers move by the camera's jitter only);
- the part region (scorer.segmentation) against the expected outline and against the previous
  layer's part region: area deviation, boundary deviation (the distance transform of the
  reference's boundary, read at every disagreeing pixel; a robust Hausdorff distance from its
  top pixels), the displacement between part and outline, the edge blur along the outline (a
  lifted corner is out of focus) and a low-pass change to the previous layer;
- the part's placement against the outline compared with the job's normal placement (the
  median of its earlier unflagged layers, kept by the scorer; without one these features are
  missing, and in fitting the previous layer's placement stands in): a layer shift or a
  warped corner *persists* in the layers after it, while every comparison with the previous
  layer sees it once, at its onset. The segmenter's own bias against the designed outline
  differs from job to job and cancels here;
- a per-pixel map of geometric deviation: each of those pixel maps in units of its own normal
  extreme (a 0.999 quantile of normal training maps), the largest of them.

Everything is fitted on normal layer sequences: the segmenter and the features' normal level on
the training layers, the image and pixel thresholds on held-out normal layers only.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from scorer.calibration import image_threshold
from scorer.methods import LayerReference
from scorer.registration import estimate_shift, mask_offset
from scorer.segmentation import SEGMENTERS, LearnedSegmenter, classical_part, grey, half, iou

_MAD_TO_SIGMA = 1.4826
# Image features, in this order (each larger = further from normal).
FEATURES = (
    "shift_previous",  # |registration shift| to the previous layer, px
    "shift_outline",  # |shift| between the part region and the expected outline, px
    "area_outline",  # |part area − outline area| / outline area
    "area_previous",  # |part area − previous part area| / previous part area
    "boundary_outline",  # robust Hausdorff distance part ↔ outline, px
    "boundary_previous",  # the same against the previous layer's part region
    "edge_blur",  # 1 − sharpest-to-blurriest ratio of the outline's edge against the previous
    "change_previous",  # low-pass |layer − previous layer|, top pixels
    "offset_job",  # |part↔outline offset − the job's normal offset|, px
    "shape_job",  # outline shape deviation − the job's normal one, px
)
# A layer's placement against its outline (ScoreResult.outline_state, LayerReference.placement):
# (dx, dy), the part's offset off the outline, and "shape", how far the part's boundary departs
# from the outline once that offset is taken out (0.9 quantile of the distance beyond the
# tolerance over the disagreeing pixels), px. A shift moves (dx, dy); a warped corner or a
# distortion changes the shape. The quantile, not the top pixels' mean: a few stray blobs of
# the segmentation gave the top-pixel mean 2-9 px on one normal 128² print, the quantile ≤ 2.8.
OUTLINE_STATE = ("dx", "dy", "shape")
NEEDS = {  # which reference each feature needs
    "shift_previous": "previous",
    "shift_outline": "outline",
    "area_outline": "outline",
    "area_previous": "previous",
    "boundary_outline": "outline",
    "boundary_previous": "previous",
    "edge_blur": "both",
    "change_previous": "previous",
    "offset_job": "outline",
    "shape_job": "outline",
}
# Pixel maps (each divided by its normal 0.999 quantile before the maximum is taken).
MAPS = ("boundary_outline", "boundary_previous", "displacement", "change_previous")
_TOP_K = 64  # pixels averaged for a "robust maximum"
_MIN_SHAPE_PIXELS = 10  # fewer disagreeing pixels than this: the shape matches (0)
_PART_CACHE = 32  # part regions remembered (a batch of layers and their previous layers)


@dataclass(frozen=True)
class GeometryConfig:
    segmenter: str = "auto"  # "learned", "classical" or "auto" (the better on held-out IoU)
    contamination: float = 0.02  # share of held-out normal layers above the image threshold
    pixel_quantile: float = 0.999
    map_sigma: float = 2.0  # smoothing of the final pixel map
    change_sigma: float = 4.0  # low-pass scale of the change to the previous layer
    tolerance_px: float = 1.0  # boundary disagreement within this distance is registration noise
    outline_max_shift: float = 0.1  # the part is searched this far (× image side) off its outline
    # With an outline, each layer's part region comes from whichever segmenter agrees better
    # with it. Each fails on a kind of layer the other handles (measured on a 128² print,
    # IoU with the outline: learned 0.0-0.65 on the solid bottom layers, where Otsu gets
    # 0.93-0.97; Otsu 0.3-0.8 on sparse infill, where the learned one gets 0.8-0.89). A
    # layer's placement cannot be faked by the choice: both segment the image, not the outline.
    per_layer: bool = True
    placement_gate: float = 3.0  # σ: a layer placed further off the job's normal is not learned
    # The features the image score uses (all are computed and reported). The comparisons with
    # the outline are left out by default: on development data (seed 0) the part region found
    # in an image disagrees with the designed outline by more, from layer to layer, than with
    # the previous layer's region found the same way (the segmenter's own bias cancels), so
    # they added spread to normal scores: image AUROC fdm_rectilinear 0.86 → 0.92, lpbf_fused
    # 0.93 → 0.95 without them. The outline places the part against the job's own normal
    # placement instead (offset_job, shape_job), where that bias cancels. edge_blur is left
    # out too: on development data it moved image AUROC by at most 0.009 either way, and on
    # whole prints it fires on the first sparse layer over the solid bottom (7-8 σ: a normal
    # edge's texture changes there, once a print).
    score_features: tuple[str, ...] = (
        "shift_previous",
        "area_previous",
        "boundary_previous",
        "change_previous",
        "offset_job",
        "shape_job",
    )

    def __post_init__(self) -> None:
        if self.segmenter not in ("auto", "learned", "classical"):
            raise ValueError(
                f"segmenter must be auto, learned or classical, not {self.segmenter!r}"
            )
        if not 0.0 < self.contamination < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5), got {self.contamination}")
        if not 0.0 < self.pixel_quantile < 1.0:
            raise ValueError(f"pixel_quantile must be in (0, 1), got {self.pixel_quantile}")
        unknown = set(self.score_features) - set(FEATURES)
        if unknown or not self.score_features:
            raise ValueError(
                f"score_features must be some of {FEATURES}, got {self.score_features}"
            )
        object.__setattr__(self, "score_features", tuple(self.score_features))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Analysis:
    """One layer's geometry: its features (NaN where a reference was missing) and raw maps."""

    features: np.ndarray  # (len(FEATURES),)
    maps: dict[str, np.ndarray]  # raw pixel maps by MAPS name (zeros where not computable)
    shift: tuple[float, float] = (0.0, 0.0)  # registration to the previous layer, px
    outline_state: tuple[float, float, float] | None = None  # OUTLINE_STATE, with an outline


@dataclass
class Sample:
    """A normal training or calibration layer with its references."""

    image: np.ndarray
    reference: LayerReference


def _fill(mask: np.ndarray) -> np.ndarray:
    """Binary part region: opened, holes filled (the outer shape is what the geometry is)."""
    m = (mask > 0.5).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    h, w = m.shape
    flood = np.zeros((h + 2, w + 2), np.uint8)
    filled = m.copy()
    filled[0, :] = filled[-1, :] = filled[:, 0] = filled[:, -1] = 0
    inv = filled.copy()
    cv2.floodFill(inv, flood, (0, 0), 1)
    return (filled | (1 - inv)).astype(np.uint8)


def _boundary_distance(region: np.ndarray) -> np.ndarray:
    """Distance (px) of every pixel to the boundary of a binary region. A region that is empty
    (or fills the frame) has no boundary in view: its distance is capped at the frame's
    diagonal, as far as a boundary can be (OpenCV gives an unbounded value there, which made a
    layer after one whose part was not found score infinity)."""
    inside = cv2.distanceTransform(region, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - region, cv2.DIST_L2, 3)
    return np.minimum(np.maximum(inside, outside), np.float32(np.hypot(*region.shape)))


def _deviation(part: np.ndarray, reference: np.ndarray, tol: float) -> np.ndarray:
    """Per pixel: how far beyond ``tol`` a pixel where part and reference disagree lies from the
    reference's boundary (0 where they agree)."""
    d = _boundary_distance(reference) * (part != reference)
    return np.maximum(d - tol, 0.0).astype(np.float32)


def _top_mean(a: np.ndarray, k: int = _TOP_K) -> float:
    flat = a.ravel()
    k = min(k, flat.size)
    return float(np.partition(flat, flat.size - k)[-k:].mean())


def _grad(g: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


def _edge_blur(g: np.ndarray, gp: np.ndarray, outline: np.ndarray) -> float:
    """How much the blurriest stretch of the outline's edge lost against the previous layer:
    1 − min over the edge of (local gradient energy now / before), at half resolution. A lifted
    corner is out of focus; a normal layer's edge is as sharp as the last one's."""
    g, gp, outline = half(g), half(gp), half(outline)
    kernel = np.ones((3, 3), np.uint8)
    band = cv2.dilate(outline, kernel) - cv2.erode(outline, kernel)
    band = cv2.dilate(band, kernel).astype(np.float32)
    if band.sum() < 25:
        return 0.0
    weight = cv2.GaussianBlur(band, (0, 0), 3.0)
    now = cv2.GaussianBlur(_grad(g) * band, (0, 0), 3.0)
    before = cv2.GaussianBlur(_grad(gp) * band, (0, 0), 3.0)
    on = weight > 0.2 * weight.max()
    ratio = (now[on] + 1e-4) / (before[on] + 1e-4)
    return float(1.0 - np.min(ratio))


class GeometryChannel:
    """Fitted state of the geometry channel: segmenter, normal feature levels, map scales and
    thresholds (see the module docstring)."""

    def __init__(
        self,
        config: GeometryConfig,
        segmenter_kind: str,
        learned: LearnedSegmenter | None,
        center: np.ndarray,
        scale: np.ndarray,
        map_scales: np.ndarray,
        threshold: float = float("inf"),
        pixel_threshold: float = float("inf"),
        calibration_scores: list[float] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if segmenter_kind == "learned" and learned is None:
            raise ValueError("a learned segmenter needs its fitted weights")
        self.config = config
        self.segmenter_kind = segmenter_kind
        self.learned = learned
        self.center = np.asarray(center, np.float64)
        self.scale = np.asarray(scale, np.float64)
        self.map_scales = np.asarray(map_scales, np.float64)
        self.threshold = float(threshold)
        self.pixel_threshold = float(pixel_threshold)
        self.calibration_scores = list(calibration_scores or [])
        self.metadata: dict[str, Any] = metadata or {}
        self._columns = [FEATURES.index(f) for f in config.score_features]
        self._parts: OrderedDict[bytes, np.ndarray] = OrderedDict()

    # ---- analysis -----------------------------------------------------------------------------

    def part(
        self, image: np.ndarray, outline: np.ndarray | None, kind: str | None = None
    ) -> np.ndarray:
        """Part probability of a layer image with segmenter ``kind`` (the fitted one if None).

        Remembered for the last few images (by content): in a stream, this layer is the next
        layer's previous layer, so each layer is segmented once, not twice."""
        kind = kind or self.segmenter_kind
        if kind == "learned" and self.learned is None:
            kind = "classical"
        a = np.ascontiguousarray(image)
        key = hashlib.blake2b(a.tobytes(), digest_size=16)
        key.update(f"{a.shape}{kind}".encode())
        if kind == "classical" and outline is not None:
            key.update(np.ascontiguousarray(outline).tobytes())  # Otsu's side uses the outline
        digest = key.digest()
        if digest in self._parts:
            self._parts.move_to_end(digest)
            return self._parts[digest]
        if kind == "learned" and self.learned is not None:
            found = self.learned.probability(image)
        else:
            found = classical_part(image, outline)
        self._parts[digest] = found
        while len(self._parts) > _PART_CACHE:
            self._parts.popitem(last=False)
        return found

    def choose(
        self, image: np.ndarray, previous: np.ndarray | None, outline: np.ndarray | None
    ) -> str:
        """The segmenter for a layer and its previous layer (one for both, so that the two are
        compared region for region): with ``per_layer`` and an outline, the one whose worse
        agreement with the outline over the two is better (on the first sparse layer over a
        solid bottom, the learned one finds the part in the layer but not in its previous
        layer); else the fitted one. Agreement is the IoU once the outline is laid where it
        fits the region best: a shifted part must not make the worse segmenter look better."""
        if not self.config.per_layer or outline is None or self.learned is None:
            return self.segmenter_kind
        o = _fill(outline)
        reach = max(2, round(self.config.outline_max_shift * max(o.shape)))
        shown = [image] if previous is None else [image, previous]
        return max(
            SEGMENTERS,
            key=lambda k: min(
                _aligned_iou(_fill(self.part(im, outline, k)), o, reach) for im in shown
            ),
        )

    def analyse(self, image: np.ndarray, ref: LayerReference, proxy: bool = False) -> Analysis:
        """Features and raw maps of one layer (NaN features where a reference is missing).
        ``proxy``: without the job's placement, the previous layer's stands in (for fitting
        the job features' normal level on single training layers; see :func:`analyse`)."""
        outline = None if ref.outline is None else (np.asarray(ref.outline) > 0).astype(np.uint8)
        kind = self.choose(image, ref.previous, outline)
        return analyse(image, ref, lambda im, o: self.part(im, o, kind), self.config, proxy)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """One-sided robust distance above normal: ‖max(0, (x − median) / σ)‖₂ over the
        features a layer has (a missing reference counts as normal)."""
        x = np.atleast_2d(np.asarray(features, np.float64))
        z = np.nan_to_num((x - self.center) / self.scale, nan=0.0)[:, self._columns]
        return np.sqrt(np.sum(np.maximum(z, 0.0) ** 2, axis=1))

    def normal_placement(self, analysis: Analysis) -> tuple[float, float, float] | None:
        """The layer's OUTLINE_STATE if it may serve the job's normal placement: None without an
        outline, or when its placement features are beyond ``placement_gate`` σ of normal (a
        slowly growing warp that stays under the image threshold must not teach the job's
        reference its own shape)."""
        if analysis.outline_state is None:
            return None
        idx = [FEATURES.index("offset_job"), FEATURES.index("shape_job")]
        z = (analysis.features[idx] - self.center[idx]) / self.scale[idx]
        if np.any(np.nan_to_num(z, nan=0.0) > self.config.placement_gate):
            return None
        return analysis.outline_state

    def pixel_map(self, analysis: Analysis) -> np.ndarray:
        """The per-pixel geometric deviation, in units of its normal extreme."""
        maps = [analysis.maps[name] / s for name, s in zip(MAPS, self.map_scales, strict=True)]
        m = np.max(np.stack(maps), axis=0).astype(np.float32)
        return cv2.GaussianBlur(m, (0, 0), self.config.map_sigma)

    # ---- fitting ------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        train: list[Sample],
        calibration: list[Sample],
        config: GeometryConfig | None = None,
        seed: int = 0,
    ) -> GeometryChannel:
        """Segmenter and normal levels from the training layers, thresholds from the held-out
        calibration layers (normal sequences only)."""
        config = config or GeometryConfig()
        if len(train) < 2 or len(calibration) < 2:
            raise ValueError("the geometry channel needs at least 2 training and 2 held-out layers")
        with_outline = [s for s in train if s.reference.outline is not None]
        learned = None
        if with_outline:
            learned = LearnedSegmenter.fit(
                [s.image for s in with_outline], [s.reference.outline for s in with_outline], seed
            )
        ious = _segmenter_ious(learned, calibration)
        kind = config.segmenter
        if kind == "auto":
            kind = (
                "learned"
                if ious.get("learned", -1.0) >= ious.get("classical", 0.0)
                else "classical"
            )
        if kind == "learned" and learned is None:
            raise ValueError("segmenter 'learned' needs training layers with outlines")
        channel = cls(
            config,
            kind,
            learned,
            np.zeros(len(FEATURES)),
            np.ones(len(FEATURES)),
            np.ones(len(MAPS)),
        )
        fit_rows = [channel.analyse(s.image, s.reference, proxy=True) for s in train]
        feats = np.array([a.features for a in fit_rows])
        center = np.nanmedian(feats, axis=0)
        scale = _MAD_TO_SIGMA * np.nanmedian(np.abs(feats - center), axis=0)
        # A heavy upper tail on normal layers (a feature the segmenter cannot measure well,
        # e.g. the part region under fresh powder) widens its scale, so it does not drown the
        # features that are tight: σ is at least the (median → 95 %) distance / 1.645.
        upper = (np.nanquantile(feats, 0.95, axis=0) - center) / 1.645
        scale = np.maximum(np.nan_to_num(np.maximum(scale, upper), nan=1.0), 1e-3)
        channel.center, channel.scale = np.nan_to_num(center, nan=0.0), scale
        channel.map_scales = np.array(
            [
                max(
                    float(
                        np.quantile(
                            np.concatenate([a.maps[m].ravel() for a in fit_rows]),
                            config.pixel_quantile,
                        )
                    ),
                    1e-3,
                )
                for m in MAPS
            ]
        )
        cal_rows = [channel.analyse(s.image, s.reference) for s in calibration]
        scores = channel.score_features(np.array([a.features for a in cal_rows]))
        channel.threshold = image_threshold(scores, config.contamination)
        cal_maps = [channel.pixel_map(a) for a in cal_rows]
        channel.pixel_threshold = float(
            np.quantile(np.concatenate([m.ravel() for m in cal_maps]), config.pixel_quantile)
        )
        channel.calibration_scores = [float(s) for s in scores]
        channel.metadata = {
            "segmenter": kind,
            "segmenter_iou_on_held_out_normal": ious,
            "n_train_layers": len(train),
            "n_calibration_layers": len(calibration),
        }
        return channel

    # ---- persistence --------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"center": self.center, "scale": self.scale, "map_scales": self.map_scales}
        if self.learned is not None:
            out |= {f"segmenter.{k}": v for k, v in self.learned.to_arrays().items()}
        return out

    def to_config(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "features": list(FEATURES),
            "maps": list(MAPS),
            "segmenter": self.segmenter_kind,
            "threshold": self.threshold,
            "pixel_threshold": self.pixel_threshold,
            "calibration_scores": self.calibration_scores,
            **self.metadata,
        }

    @classmethod
    def from_parts(cls, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> GeometryChannel:
        """Rebuild from :meth:`to_config` and :meth:`to_arrays` (ValueError/KeyError if bad)."""
        stored = list(doc["features"])
        if stored != list(FEATURES[: len(stored)]) or list(doc["maps"]) != list(MAPS):
            raise ValueError("the stored geometry features or maps differ from this version's")
        seg = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("segmenter.")}
        learned = LearnedSegmenter.from_arrays(seg) if seg else None
        center, scale, scales = arrays["center"], arrays["scale"], arrays["map_scales"]
        if len(stored) < len(FEATURES) and center.shape == scale.shape == (len(stored),):
            # a model from before the job features: they are not among its score features,
            # so any normal level serves; it keeps its segmenter choice too
            pad = len(FEATURES) - len(stored)
            center, scale = np.pad(center, (0, pad)), np.pad(scale, (0, pad), constant_values=1)
            doc = {**doc, "config": {"per_layer": False, **doc["config"]}}
        if (
            center.shape != (len(FEATURES),)
            or scale.shape != (len(FEATURES),)
            or scales.shape != (len(MAPS),)
        ):
            raise ValueError("geometry normal levels have the wrong shape")
        meta = {
            k: v
            for k, v in doc.items()
            if k
            not in (
                "config",
                "features",
                "maps",
                "segmenter",
                "threshold",
                "pixel_threshold",
                "calibration_scores",
            )
        }
        return cls(
            GeometryConfig(**doc["config"]),
            str(doc["segmenter"]),
            learned,
            center,
            scale,
            scales,
            float(doc["threshold"]),
            float(doc["pixel_threshold"]),
            [float(v) for v in doc.get("calibration_scores", [])],
            meta,
        )


def _segmenter_ious(learned: LearnedSegmenter | None, samples: list[Sample]) -> dict[str, float]:
    """Mean IoU of each segmenter's filled part region with the outline, on held-out layers."""
    rows = [s for s in samples if s.reference.outline is not None]
    if not rows:
        return {}
    out = {
        "classical": float(
            np.mean(
                [
                    iou(
                        _fill(classical_part(s.image, s.reference.outline)),
                        _fill(s.reference.outline),
                    )
                    for s in rows
                ]
            )
        )
    }
    if learned is not None:
        out["learned"] = float(
            np.mean(
                [iou(_fill(learned.probability(s.image)), _fill(s.reference.outline)) for s in rows]
            )
        )
    return out


def analyse(
    image: np.ndarray,
    ref: LayerReference,
    part_of: Any,
    config: GeometryConfig,
    proxy: bool = False,
) -> Analysis:
    """Features and raw maps of one layer, with ``part_of(image, outline)`` the segmenter.

    The job features need the job's normal placement (``ref.placement``, kept by the scorer
    over a stream); without it they are missing (NaN, counted as normal), unless ``proxy``:
    then the previous layer's placement stands in. Fitting uses the proxy, so the features'
    normal spread is that of one layer against another, wider than against a median of many
    layers (the reference a stream has): conservative. Thresholds are calibrated without them,
    as single held-out layers have no job."""
    g = grey(image)
    h, w = g.shape
    nan = float("nan")
    feats = dict.fromkeys(FEATURES, nan)
    zeros = np.zeros((h, w), np.float32)
    maps = dict.fromkeys(MAPS, zeros)
    outline = None if ref.outline is None else (np.asarray(ref.outline) > 0).astype(np.uint8)
    previous = ref.previous
    part = _fill(part_of(image, outline))
    area = float(part.sum())
    tol = config.tolerance_px
    shift = (0.0, 0.0)
    state = None
    o = None
    if outline is not None:
        o = _fill(outline)
        o_area = max(float(o.sum()), 1.0)
        feats["area_outline"] = abs(area - o_area) / o_area
        dev = _deviation(part, o, tol)
        feats["boundary_outline"] = _top_mean(dev)
        maps["boundary_outline"] = dev
        state = _placement(part, o, config)
        feats["shift_outline"] = float(np.hypot(state[0], state[1]))
    placement = ref.placement
    if previous is not None:
        gp = grey(previous)
        s = estimate_shift(g, gp)
        shift = (s.dx, s.dy)
        feats["shift_previous"] = s.magnitude
        p = _fill(part_of(previous, outline))
        p_area = max(float(p.sum()), 1.0)
        feats["area_previous"] = abs(area - p_area) / p_area
        dev = _deviation(part, p, tol)
        feats["boundary_previous"] = _top_mean(dev)
        maps["boundary_previous"] = dev
        # a layer shift moves every pixel of the part: the displacement, over the part
        maps["displacement"] = (np.float32(s.magnitude) * np.maximum(part, p)).astype(np.float32)
        sig = config.change_sigma / 2  # at half resolution
        change = np.abs(
            cv2.GaussianBlur(half(g), (0, 0), sig) - cv2.GaussianBlur(half(gp), (0, 0), sig)
        )
        feats["change_previous"] = _top_mean(change, 64)
        maps["change_previous"] = cv2.resize(change, (w, h), interpolation=cv2.INTER_LINEAR)
        if outline is not None:
            feats["edge_blur"] = _edge_blur(g, gp, outline)
            if placement is None and proxy:  # the previous layer's stands in for the job's
                placement = _placement(p, o, config)
    if state is not None and placement is not None:
        feats["offset_job"] = float(np.hypot(state[0] - placement[0], state[1] - placement[1]))
        feats["shape_job"] = state[2] - placement[2]
    return Analysis(np.array([feats[f] for f in FEATURES]), maps, shift, state)


def _aligned_iou(part: np.ndarray, outline: np.ndarray, reach: int) -> float:
    """IoU of a region and an outline laid over it at their best offset (within ``reach``)."""
    off = mask_offset(part, outline, reach)
    a, b = float(part.sum()), float(outline.sum())
    overlap = off.response * min(a, b)
    return overlap / max(a + b - overlap, 1.0)


def _placement(
    part: np.ndarray, outline: np.ndarray, config: GeometryConfig
) -> tuple[float, float, float]:
    """A part region's OUTLINE_STATE against a (filled) outline."""
    h, w = outline.shape
    reach = max(2, round(config.outline_max_shift * max(h, w)))
    off = mask_offset(part, outline, reach)
    moved = cv2.warpAffine(
        outline.astype(np.float32), np.float32([[1, 0, off.dx], [0, 1, off.dy]]), (w, h)
    )
    dev = _deviation(part, (moved > 0.5).astype(np.uint8), config.tolerance_px)
    far = dev[dev > 0]
    shape = float(np.quantile(far, 0.9)) if far.size >= _MIN_SHAPE_PIXELS else 0.0
    return (off.dx, off.dy, shape)
