"""The score message (topic ``layerwatch.scores``): JSON, versioned, one per scored layer.

Key: printer id. Header ``lw-schema`` = ``score/2``. The value is a JSON object with the
fields of :class:`ScoreMessage`; unknown fields are ignored so minor versions can add some.
``score/2`` (issue 18) adds ``channel_scores`` (an object of channel name → finite number,
e.g. ``{"texture": 0.4, "geometry": 2.1}``; empty for a single-channel method) and ``fired``
(the list of channels whose own decision flagged the layer). ``score/1`` is still read, with
both empty.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime

from layerwatch.core.wire import SCHEMA_HEADER, MessageError, check_schema, header_map

KIND = "score"
VERSION = 2
READS = (1, 2)
OPTIONAL = {"largest_area", "channel_scores", "fired"}  # absent in score/1 or older score/2
MAX_CHANNELS = 8


@dataclass(frozen=True)
class ScoreMessage:
    printer: str
    job: str
    layer: int
    score: float
    anomalous: bool
    f1: float
    f2: float
    defect_area: float
    model_version: str
    latency_ms: float
    captured_at: str
    scored_at: str
    largest_area: float = 0.0
    channel_scores: dict[str, float] = field(default_factory=dict)
    fired: tuple[str, ...] = ()

    @property
    def key(self) -> bytes:
        return self.printer.encode()

    def headers(self) -> list[tuple[str, bytes]]:
        return [(SCHEMA_HEADER, f"{KIND}/{VERSION}".encode())]

    def encode(self) -> bytes:
        obj = asdict(self)
        obj["fired"] = list(self.fired)
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes | None, headers: object) -> ScoreMessage:
        major = check_schema(header_map(headers), KIND, READS)  # type: ignore[arg-type]
        if not value:
            raise MessageError("value", "empty payload")
        try:
            obj = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageError("value", f"not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise MessageError("value", "expected a JSON object")
        kwargs: dict = {}
        for f in fields(cls):
            if major < 2 and f.name in ("channel_scores", "fired"):
                continue
            if f.name not in obj:
                if f.name in OPTIONAL:
                    continue
                raise MessageError(f.name, "missing field")
            if f.name == "channel_scores":
                kwargs[f.name] = _channel_scores(obj[f.name])
            elif f.name == "fired":
                kwargs[f.name] = _fired(obj[f.name])
            else:
                kwargs[f.name] = _coerce(f.name, f.type, obj[f.name])
        return cls(**kwargs)


def _channel_name(name: str, v: object) -> str:
    if not isinstance(v, str) or not v or len(v) > 40:
        raise MessageError(name, f"expected channel names (1-40 characters), got {v!r:.40}")
    return v


def _channel_scores(v: object) -> dict[str, float]:
    if not isinstance(v, dict) or len(v) > MAX_CHANNELS:
        raise MessageError("channel_scores", f"expected an object of at most {MAX_CHANNELS} "
                           f"channel → number, got {v!r:.40}")  # fmt: skip
    return {
        _channel_name("channel_scores", k): float(_coerce("channel_scores", "float", x))  # type: ignore[arg-type]
        for k, x in v.items()
    }


def _fired(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > MAX_CHANNELS:
        raise MessageError("fired", f"expected a list of channel names, got {v!r:.40}")
    return tuple(_channel_name("fired", x) for x in v)


def _coerce(name: str, typ: object, v: object) -> object:
    t = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    if t == "bool":
        if not isinstance(v, bool):
            raise MessageError(name, f"expected true/false, got {type(v).__name__}")
        return v
    if t == "int":
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise MessageError(name, f"expected a non-negative integer, got {v!r:.40}")
        return v
    if t == "float":
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise MessageError(name, f"expected a finite number, got {v!r:.40}")
        return float(v)
    if not isinstance(v, str) or not v:
        raise MessageError(name, f"expected a non-empty string, got {v!r:.40}")
    if name in ("captured_at", "scored_at"):
        try:
            datetime.fromisoformat(v)
        except ValueError as exc:
            raise MessageError(name, f"not ISO 8601: {v[:40]!r}") from exc
    return v
