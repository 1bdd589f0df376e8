"""The layer message: the one wire contract for layer images (topic ``layerwatch.layers``).

Key: printer id (UTF-8) so each printer's layers stay in order on one partition.
Value: the image bytes (PNG, JPEG, or raw uint8 pixels for cameras that give raw frames).
Headers (all UTF-8 text): ``lw-schema`` = ``layer/2``, ``printer``, ``job``, ``layer``,
``z`` (mm, optional), ``captured-at`` (ISO 8601 with offset), ``content-type``, ``width``,
``height``, ``channels``.

``layer/2`` adds one optional binary header, ``outline``: the expected part section of the
layer (issue 18) as a PNG of the 0/1 mask, the image's size (``ingest.outline``). A header
rather than a second record keeps the layer and its reference in one atomic message, in order
on the printer's partition, and leaves the value (the image) as ``layer/1`` had it. The
outline is checked only when used (:meth:`LayerMessage.outline_mask`): a malformed outline is
an error about the outline, never a reason to lose the layer, which the scorer still scores
by texture. ``layer/1`` is still read (it has no outline).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np

from ingest.images import ImageError, decode_image, encode_png, image_size
from ingest.outline import OutlineError, decode_outline, encode_outline
from layerwatch.core.wire import (
    SCHEMA_HEADER,
    MessageError,
    check_schema,
    get_float,
    get_int,
    get_str,
    header_map,
)

KIND = "layer"
VERSION = 2
READS = (1, 2)  # layer/1 (no outline) is still read
OUTLINE_HEADER = "outline"
PNG = "image/png"
JPEG = "image/jpeg"
RAW = "image/x-raw-u8"  # row-major uint8, height × width × channels
CONTENT_TYPES = (PNG, JPEG, RAW)
MAX_ID_LEN = 200


@dataclass(frozen=True)
class LayerMessage:
    printer: str
    job: str
    layer: int
    payload: bytes
    width: int
    height: int
    channels: int = 1
    content_type: str = PNG
    z_mm: float | None = None
    captured_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    outline: bytes | None = None  # PNG of the expected-outline 0/1 mask (layer/2), unchecked

    @classmethod
    def from_image(
        cls, printer: str, job: str, layer: int, image: np.ndarray, *,
        z_mm: float | None = None, captured_at: datetime | None = None,
        outline: np.ndarray | None = None,
    ) -> LayerMessage:  # fmt: skip
        """Encode a uint8 gray/RGB array as PNG (lossless, 3-6× smaller than raw), and the
        expected outline (uint8 0/1 mask of the same size) when given."""
        h, w = image.shape[:2]
        msg = cls(
            printer=printer, job=job, layer=layer, payload=encode_png(image), width=w, height=h,
            channels=1 if image.ndim == 2 else image.shape[2], content_type=PNG, z_mm=z_mm,
            captured_at=captured_at or datetime.now(UTC),
        )  # fmt: skip
        return msg if outline is None else msg.with_outline(outline)

    def with_z(self, z_mm: float | None) -> LayerMessage:
        return replace(self, z_mm=z_mm)

    def with_outline(self, mask: np.ndarray) -> LayerMessage:
        """This layer with its expected outline (uint8 H×W, 1 = material, the image's size)."""
        if mask.shape != (self.height, self.width):
            raise OutlineError(
                f"outline is {mask.shape[1]}x{mask.shape[0]}, the layer image is "
                f"{self.width}x{self.height}"
            )
        return replace(self, outline=encode_outline(mask))

    @property
    def key(self) -> bytes:
        return self.printer.encode()

    def headers(self) -> list[tuple[str, bytes]]:
        hs = [
            (SCHEMA_HEADER, f"{KIND}/{VERSION}"),
            ("printer", self.printer),
            ("job", self.job),
            ("layer", str(self.layer)),
            ("captured-at", self.captured_at.isoformat()),
            ("content-type", self.content_type),
            ("width", str(self.width)),
            ("height", str(self.height)),
            ("channels", str(self.channels)),
        ]
        if self.z_mm is not None:
            hs.append(("z", repr(float(self.z_mm))))
        out = [(k, v.encode()) for k, v in hs]
        if self.outline is not None:
            out.append((OUTLINE_HEADER, self.outline))
        return out

    @classmethod
    def decode(cls, key: bytes | None, value: bytes | None, headers: object) -> LayerMessage:
        """Validate everything but the pixels; raises :class:`MessageError` naming the field."""
        h = header_map(headers)  # type: ignore[arg-type]
        major = check_schema(h, KIND, READS)
        printer = _ident(h, "printer")
        if key is not None and key != printer.encode():
            raise MessageError("key", f"key {key[:40]!r} differs from printer header {printer!r}")
        job = _ident(h, "job")
        layer = get_int(h, "layer")
        width = get_int(h, "width", minimum=1)
        height = get_int(h, "height", minimum=1)
        channels = get_int(h, "channels", minimum=1)
        if channels not in (1, 3):
            raise MessageError("channels", f"must be 1 or 3, got {channels}")
        content_type = get_str(h, "content-type")
        if content_type not in CONTENT_TYPES:
            raise MessageError("content-type", f"unsupported {content_type[:60]!r}")
        ts = get_str(h, "captured-at")
        try:
            captured_at = datetime.fromisoformat(ts)
        except ValueError as exc:
            raise MessageError("captured-at", f"not ISO 8601: {ts[:40]!r}") from exc
        if captured_at.tzinfo is None:
            raise MessageError("captured-at", "needs a UTC offset")
        if not value:
            raise MessageError("value", "empty payload")
        if content_type == RAW and len(value) != width * height * channels:
            raise MessageError(
                "value", f"raw payload has {len(value)} bytes, header says "
                f"{width}x{height}x{channels} = {width * height * channels}",
            )  # fmt: skip
        return cls(
            printer=printer, job=job, layer=layer, payload=bytes(value), width=width,
            height=height, channels=channels, content_type=content_type,
            z_mm=get_float(h, "z", required=False), captured_at=captured_at,
            outline=h.get(OUTLINE_HEADER) if major >= 2 else None,
        )  # fmt: skip

    def image(self, max_pixels: int) -> np.ndarray:
        """Decode the pixels, bounded by ``max_pixels``; raises :class:`MessageError`."""
        if self.width * self.height > max_pixels:
            raise MessageError(
                "width", f"{self.width}x{self.height} exceeds the limit of {max_pixels} pixels"
            )
        if self.content_type == RAW:
            arr = np.frombuffer(self.payload, np.uint8)
            shape = (self.height, self.width) + ((self.channels,) if self.channels > 1 else ())
            return arr.reshape(shape).copy()
        try:
            if image_size(self.payload) != (self.width, self.height):
                raise MessageError(
                    "value", f"image size {image_size(self.payload)} differs from the headers "
                    f"({self.width}, {self.height})",
                )  # fmt: skip
            return decode_image(self.payload, max_pixels, grayscale=self.channels == 1)
        except ImageError as exc:
            raise MessageError("value", str(exc)) from exc

    def outline_mask(self, max_pixels: int) -> np.ndarray | None:
        """The expected outline as a uint8 0/1 mask, or None when the layer carries none.

        Decoding is bounded like the image's; a malformed outline raises
        :class:`MessageError` with field ``outline`` (the layer itself is still good).
        """
        if self.outline is None:
            return None
        try:
            return decode_outline(self.outline, self.width, self.height, max_pixels)
        except OutlineError as exc:
            raise MessageError(OUTLINE_HEADER, str(exc)) from exc


def _ident(h: dict[str, bytes | None], name: str) -> str:
    text = get_str(h, name)
    assert text is not None
    if len(text) > MAX_ID_LEN or any(c in text for c in "\x00\n\r"):
        raise MessageError(name, "must be at most 200 printable characters")
    return text
