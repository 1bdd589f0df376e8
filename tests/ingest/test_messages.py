"""The layer wire contract: round trips, clear errors, and fuzzing that finds no other error."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.images import ImageError, decode_image, encode_png, image_size
from ingest.messages import RAW, LayerMessage
from layerwatch.core.wire import MessageError

IMG = (np.arange(24 * 16) % 251).astype(np.uint8).reshape(16, 24)


def _good() -> LayerMessage:
    return LayerMessage.from_image("printer-1", "job-7", 12, IMG, z_mm=2.4)


def test_round_trip_keeps_every_field() -> None:
    m = _good()
    d = LayerMessage.decode(m.key, m.payload, m.headers())
    assert (d.printer, d.job, d.layer, d.z_mm, d.width, d.height) == (
        "printer-1",
        "job-7",
        12,
        2.4,
        24,
        16,
    )
    assert d.captured_at == m.captured_at
    assert np.array_equal(d.image(10_000), IMG)


def test_rgb_and_raw_payloads() -> None:
    rgb = np.dstack([IMG, IMG // 2, 255 - IMG])
    m = LayerMessage.from_image("p", "j", 0, rgb)
    assert np.array_equal(LayerMessage.decode(m.key, m.payload, m.headers()).image(10_000), rgb)
    raw = LayerMessage("p", "j", 1, IMG.tobytes(), 24, 16, 1, RAW, None, datetime.now(UTC))
    d = LayerMessage.decode(raw.key, raw.payload, raw.headers())
    assert np.array_equal(d.image(10_000), IMG)


def _with(headers: list[tuple[str, bytes]], name: str, value: bytes | None) -> list:
    return [(k, value if k == name else v) for k, v in headers if not (k == name and value is None)]


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("lw-schema", b"layer/9", "lw-schema"),
        ("lw-schema", b"score/1", "lw-schema"),
        ("layer", b"-1", "layer"),
        ("layer", b"twelve", "layer"),
        ("width", b"0", "width"),
        ("channels", b"2", "channels"),
        ("content-type", b"image/gif", "content-type"),
        ("captured-at", b"yesterday", "captured-at"),
        ("captured-at", b"2026-01-01T00:00:00", "captured-at"),
        ("job", None, "job"),
        ("job", b"\xff\xfe", "job"),
        ("z", b"nan", "z"),
    ],
)
def test_wrong_header_names_the_field(name: str, value: bytes | None, field: str) -> None:
    m = _good()
    with pytest.raises(MessageError) as info:
        LayerMessage.decode(m.key, m.payload, _with(m.headers(), name, value))
    assert info.value.field == field


def test_key_must_match_printer() -> None:
    m = _good()
    with pytest.raises(MessageError, match="key"):
        LayerMessage.decode(b"other", m.payload, m.headers())


def test_truncated_and_corrupt_images() -> None:
    m = _good()
    truncated = LayerMessage.decode(m.key, m.payload[: len(m.payload) // 2], m.headers())
    with pytest.raises(MessageError) as info:
        truncated.image(10_000)
    assert info.value.field == "value"
    with pytest.raises(MessageError, match="value"):
        LayerMessage.decode(m.key, b"", m.headers())
    garbage = LayerMessage.decode(m.key, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, m.headers())
    with pytest.raises(MessageError):
        garbage.image(10_000)


def test_size_mismatch_between_header_and_image() -> None:
    m = _good()
    lying = _with(m.headers(), "width", b"25")
    with pytest.raises(MessageError, match="differs"):
        LayerMessage.decode(m.key, m.payload, lying).image(10_000)


def test_image_bomb_is_refused_before_decoding() -> None:
    # A PNG header claiming 50000 x 50000 pixels: refused from the header alone.
    png = bytearray(encode_png(IMG))
    png[16:24] = (50_000).to_bytes(4, "big") * 2
    assert image_size(bytes(png)) == (50_000, 50_000)
    with pytest.raises(ImageError, match="exceeds the limit"):
        decode_image(bytes(png), max_pixels=16_777_216)
    m = _good()
    with pytest.raises(MessageError, match="exceeds"):
        LayerMessage.decode(m.key, m.payload, m.headers()).image(max_pixels=100)


def test_jpeg_size_is_read_from_its_frame_header() -> None:
    ok, buf = cv2.imencode(".jpg", IMG)
    assert ok
    assert image_size(buf.tobytes()) == (24, 16)
    assert decode_image(buf.tobytes(), 10_000).shape == (16, 24)


header_values = st.one_of(st.none(), st.binary(max_size=40), st.text(max_size=30).map(str.encode))
header_names = st.sampled_from(
    ["lw-schema", "printer", "job", "layer", "z", "captured-at", "content-type", "width",
     "height", "channels", "other"]
)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.one_of(st.none(), st.binary(max_size=20)),
    value=st.one_of(st.none(), st.binary(max_size=300)),
    mutations=st.lists(st.tuples(header_names, header_values), max_size=6),
    drop=st.sets(header_names, max_size=3),
    cut=st.integers(min_value=0, max_value=400),
)
def test_fuzzed_layer_messages_raise_only_message_error(key, value, mutations, drop, cut) -> None:
    m = _good()
    headers = [(k, v) for k, v in m.headers() if k not in drop] + list(mutations)
    payload = value if value is not None and cut % 3 == 0 else m.payload[: cut or None]
    try:
        d = LayerMessage.decode(m.key if key is None else key, payload, headers)
        d.image(max_pixels=100_000)
    except MessageError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8"])
)
def test_fuzzed_image_bytes_raise_only_image_error(data: bytes, prefix: bytes) -> None:
    with contextlib.suppress(ImageError):
        decode_image(prefix + data, max_pixels=100_000)
