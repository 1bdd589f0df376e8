"""The score message (topic ``layerwatch.scores``): JSON, versioned, one per scored layer.

Key: printer id. Header ``lw-schema`` = ``score/1``. The value is a JSON object with the
fields of :class:`ScoreMessage`; unknown fields are ignored so minor versions can add some.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from datetime import datetime

from layerwatch.core.wire import SCHEMA_HEADER, MessageError, check_schema, header_map

KIND = "score"
VERSION = 1


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

    @property
    def key(self) -> bytes:
        return self.printer.encode()

    def headers(self) -> list[tuple[str, bytes]]:
        return [(SCHEMA_HEADER, f"{KIND}/{VERSION}".encode())]

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes | None, headers: object) -> ScoreMessage:
        check_schema(header_map(headers), KIND, (VERSION,))  # type: ignore[arg-type]
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
            if f.name not in obj:
                if f.name == "largest_area":
                    continue
                raise MessageError(f.name, "missing field")
            kwargs[f.name] = _coerce(f.name, f.type, obj[f.name])
        return cls(**kwargs)


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
