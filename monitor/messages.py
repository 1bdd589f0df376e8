"""The alarm message (topic ``layerwatch.alarms``): JSON, versioned, one per opened alarm."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from layerwatch.core.wire import SCHEMA_HEADER, MessageError, check_schema, header_map

KIND = "alarm"
VERSION = 1


@dataclass(frozen=True)
class AlarmMessage:
    alarm_id: int
    printer: str
    job: str
    layer: int
    chart: str
    level: str
    rule: str | None
    episode: int
    statistic: float
    limit: float
    action: str | None
    opened_at: str

    @property
    def key(self) -> bytes:
        return self.printer.encode()

    def headers(self) -> list[tuple[str, bytes]]:
        return [(SCHEMA_HEADER, f"{KIND}/{VERSION}".encode())]

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes | None, headers: object) -> AlarmMessage:
        check_schema(header_map(headers), KIND, (VERSION,))  # type: ignore[arg-type]
        try:
            obj = json.loads(value or b"")
            return cls(**{k: obj[k] for k in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as exc:
            raise MessageError("value", f"not an alarm/1 object: {exc}") from exc
