"""The method protocol and registry: train, score and evaluate go through here, by name.

The registry knows only the protocol. Methods are found through the ``layerwatch.methods``
entry points in pyproject.toml (as pytest finds its plugins), loaded on first use: a new method
is one new module and one line there, and this module imports none of them (which keeps the
method modules, which import this one, free of an import circle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from rich.console import Console

from scorer.artifact import Artifact, ArtifactError, load_artifact, save_artifact
from scorer.device import DeviceInfo


@dataclass
class ScoreResult:
    """One image's outcome. ``latency_ms`` is the batch's wall time divided by its image count
    (the network pass is shared by the whole batch, so that is the amortised per-image cost)."""

    score: float
    anomalous: bool
    f1: float
    f2: float
    defect_area: float
    largest_area: int
    bbox: tuple[int, int, int, int] | None
    anomaly_map: np.ndarray
    latency_ms: float
    # Per-channel image scores of a multi-channel method (e.g. {"texture": …, "geometry": …}),
    # each on the scale of its own threshold; empty for a single-channel method.
    channel_scores: dict[str, float] = field(default_factory=dict)
    # The channels whose own decision flagged this image ("texture", "geometry"); empty when
    # none did or the method has a single channel.
    fired: tuple[str, ...] = ()
    # Where the layer's part sits against its expected outline, (dx, dy, shape deviation)
    # in px (scorer.geometry.OUTLINE_STATE), when it may serve the job's normal placement (the
    # scorer keeps that from these); None without an outline or a geometry channel, or when
    # the layer is placed off the job's normal.
    outline_state: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class LayerReference:
    """What a layer can be compared with besides the model of normal layers (issue 18): the
    job's previous layer and the part outline the slicer expects. Either may be missing; a
    method that uses references scores a layer without them by its texture channel alone.
    """

    previous: np.ndarray | None = None  # the job's previous layer image, same H×W as the layer
    outline: np.ndarray | None = None  # expected part section, uint8 H×W, 1 = material
    outline_error: str | None = None  # why a sent outline could not be used (for the logs)
    # The job's normal placement of its part against the outline (the median outline state of
    # its earlier, unflagged layers; scorer.job_placement), or None: the job features are then
    # missing (a data set's single layers, a job's first layers).
    placement: tuple[float, float, float] | None = None


@dataclass
class TrainSettings:
    """Knobs common to the diffusion-based methods; each method reads the ones it uses."""

    seed: int = 0
    max_minutes: float = 10.0
    steps: int = 4000
    batch_size: int = 32
    # Width 16 (0.40 M params): within the 10-minute CPU budget it gets ~1000–1200 steps against
    # ~480 for width 32, and scored simulator fdm_rectilinear better (image AUROC at t=100:
    # 0.785 vs 0.744); it is also ~2.5× faster to score.
    width: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)
    attention_resolutions: tuple[int, ...] = (16, 8)
    patch: int = 64
    stride: int = 48
    lr: float = 1e-3
    weight_decay: float = 1e-4
    ema_decay: float = 0.995
    rotations: bool = True
    flips: bool = True
    jitter: float = 0.05
    holdout: float = 0.2
    # RADAR's t*. One fixed step by default: no criterion on normal images alone picked it well
    # (the default one picked the smallest candidate every time, up to 0.09 image AUROC below
    # t = 100), and t = 100 was the best candidate on FDM and LPBF development data (seed 0).
    t_candidates: tuple[int, ...] = (100,)
    # Training draws t uniformly below this (None: the method decides; RADAR uses
    # 2·max(t_candidates), the others the whole schedule).
    train_t_max: int | None = None
    show_progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainData:
    """Normal images split into weight-training and calibration hold-out sets."""

    train: list[np.ndarray]
    calibration: list[np.ndarray]
    channels: int
    source: str
    train_names: list[str] = field(default_factory=list)
    calibration_names: list[str] = field(default_factory=list)
    # Each image's references (previous layer, expected outline) when the data set has them
    # (`simulate dataset --reference`); empty lists when it has none. Same order as the images.
    train_references: list[LayerReference | None] = field(default_factory=list)
    calibration_references: list[LayerReference | None] = field(default_factory=list)


@runtime_checkable
class Method(Protocol):
    """What every scoring method provides."""

    name: ClassVar[str]

    @classmethod
    def fit(
        cls,
        data: TrainData,
        settings: TrainSettings,
        device: DeviceInfo,
        deadline: float,
        console: Console | None = None,
    ) -> Method: ...

    def score_batch(self, images: Sequence[np.ndarray]) -> list[ScoreResult]: ...

    def to_artifact(self) -> Artifact: ...

    @classmethod
    def from_artifact(cls, artifact: Artifact, device: DeviceInfo, where: Path) -> Method: ...

    @property
    def model_version(self) -> str: ...

    @property
    def channels(self) -> int: ...

    @property
    def pixel_threshold(self) -> float: ...


ENTRY_POINT_GROUP = "layerwatch.methods"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def method_names() -> list[str]:
    return sorted(_entry_points())


def get_method(name: str) -> type[Method]:
    """The method class registered under ``name`` (its module is imported here, on first use)."""
    found = _entry_points().get(name)
    if found is None:
        known = (
            ", ".join(method_names()) or f"none: is the package installed? ({ENTRY_POINT_GROUP})"
        )
        raise KeyError(f"unknown method {name!r}; known: {known}")
    cls = found.load()
    if getattr(cls, "name", None) != name:
        raise TypeError(f"entry point {name!r} = {found.value} names itself {cls.name!r}")
    return cls


def save_model(method: Method, directory: Path | str) -> str:
    return save_artifact(method.to_artifact(), directory)


def uses_references(method: object) -> bool:
    """Whether a method compares a layer with its references (``uses_references = True`` on
    the class); the others are scored on the image alone."""
    return bool(getattr(method, "uses_references", False))


def score_layers(
    method: Method,
    images: Sequence[np.ndarray],
    references: Sequence[LayerReference] | None = None,
) -> list[ScoreResult]:
    """Score a batch of layers, passing each layer's references to a method that uses them
    (``score_batch(images, references)``) and the images alone to one that does not."""
    if references is not None and len(references) != len(images):
        raise ValueError(f"{len(references)} references for {len(images)} images")
    if references is not None and uses_references(method):
        return method.score_batch(images, references)  # type: ignore[call-arg]
    return method.score_batch(images)


def load_model(directory: Path | str, device: DeviceInfo) -> Method:
    """Load any registered method's artifact; an unknown method name is an ArtifactError."""
    artifact = load_artifact(directory)
    if artifact.method not in _entry_points():
        raise ArtifactError(Path(directory) / "config.json", f"unknown method {artifact.method!r}")
    return get_method(artifact.method).from_artifact(artifact, device, Path(directory))
