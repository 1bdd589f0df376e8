"""Shared pieces of the versioned Kafka wire formats: the one decode error and header access.

Every message carries a ``lw-schema`` header (``<kind>/<major>``). A consumer accepts the
majors it knows and sends anything else to the dead-letter topic with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Headers = Sequence[tuple[str, bytes | None]]

SCHEMA_HEADER = "lw-schema"
DLQ_REASON_HEADER = "lw-dlq-reason"
DLQ_SOURCE_HEADER = "lw-dlq-source"


class MessageError(ValueError):
    """A message that cannot be decoded. ``field`` names the header or part at fault."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def header_map(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, bytes | None]:
    """Last value wins, as Kafka clients conventionally treat repeated headers."""
    out: dict[str, bytes | None] = {}
    for item in headers or ():
        try:
            k, v = item
        except (TypeError, ValueError) as exc:
            raise MessageError("headers", f"malformed header entry {item!r}") from exc
        if not isinstance(k, str):
            raise MessageError("headers", f"header name must be str, got {type(k).__name__}")
        if v is not None and not isinstance(v, bytes | bytearray):
            raise MessageError(k, f"header value must be bytes, got {type(v).__name__}")
        out[k] = bytes(v) if v is not None else None
    return out


def get_str(h: dict[str, bytes | None], name: str, required: bool = True) -> str | None:
    raw = h.get(name)
    if raw is None:
        if required:
            raise MessageError(name, "missing header")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MessageError(name, "not UTF-8") from exc
    if required and not text.strip():
        raise MessageError(name, "empty")
    return text


def get_int(h: dict[str, bytes | None], name: str, minimum: int = 0, required: bool = True):
    text = get_str(h, name, required)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError as exc:
        raise MessageError(name, f"not an integer: {text[:40]!r}") from exc
    if value < minimum:
        raise MessageError(name, f"must be >= {minimum}, got {value}")
    return value


def get_float(h: dict[str, bytes | None], name: str, required: bool = True) -> float | None:
    text = get_str(h, name, required)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise MessageError(name, f"not a number: {text[:40]!r}") from exc
    if value != value or value in (float("inf"), float("-inf")):
        raise MessageError(name, "not finite")
    return value


def check_schema(h: dict[str, bytes | None], kind: str, majors: Iterable[int]) -> int:
    """Validate ``lw-schema`` = ``kind/major`` and return the major version."""
    text = get_str(h, SCHEMA_HEADER)
    assert text is not None
    name, _, version = text.partition("/")
    if name != kind:
        raise MessageError(SCHEMA_HEADER, f"expected a {kind!r} message, got {text[:60]!r}")
    try:
        major = int(version.split(".")[0])
    except ValueError as exc:
        raise MessageError(SCHEMA_HEADER, f"bad version {version[:20]!r}") from exc
    if major not in set(majors):
        raise MessageError(SCHEMA_HEADER, f"unsupported {kind} version {major}")
    return major
