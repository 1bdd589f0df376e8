"""Malformed messages, drawn by Hypothesis: every one is refused with a MessageError that
names what was wrong, and no input, however broken, raises anything else. The decoders are
what the scorer and the monitor run on every record; bench.fuzz streams the same cases
through the running services."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.faults.fuzz import IN_CONTEXT, KINDS, REQUIRED, case, jpeg_flip_any
from ingest.messages import LayerMessage
from layerwatch.core.wire import MessageError
from scorer.messages import ScoreMessage

MAX_PIXELS = 1 << 20
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode(c) -> None:
    b = c.bad
    if c.topic == "layers":
        LayerMessage.decode(b.key, b.value, b.headers).image(MAX_PIXELS)
    else:
        ScoreMessage.decode(b.value, b.headers)


@FAST
@given(kind=st.sampled_from(sorted(set(KINDS) - IN_CONTEXT)), seed=st.integers(0, 2**32 - 1))
def test_every_malformed_message_is_refused_naming_its_field(kind: str, seed: int) -> None:
    c = case(kind, random.Random(seed))
    try:
        _decode(c)
    except MessageError as exc:
        assert exc.field in c.fields, f"{kind}: named {exc.field!r} ({exc.reason})"
        assert exc.reason.strip()
    else:
        raise AssertionError(f"{kind} was accepted")


HEADER_NAMES = st.sampled_from([*REQUIRED, "z", "x-other"])


@FAST
@given(
    key=st.none() | st.binary(max_size=40),
    value=st.none() | st.binary(max_size=300),
    headers=st.lists(st.tuples(HEADER_NAMES, st.none() | st.binary(max_size=40)), max_size=14),
)
def test_arbitrary_layer_records_never_crash_the_decoder(key, value, headers) -> None:
    try:
        LayerMessage.decode(key, value, headers).image(MAX_PIXELS)
    except MessageError as exc:
        assert exc.field and exc.reason.strip()


@FAST
@given(value=st.none() | st.binary(max_size=300), schema=st.binary(max_size=12))
def test_arbitrary_score_records_never_crash_the_decoder(value, schema) -> None:
    try:
        ScoreMessage.decode(value, [("lw-schema", schema)])
    except MessageError as exc:
        assert exc.field and exc.reason.strip()


@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_a_flipped_jpeg_bit_decodes_or_is_refused_but_never_crashes(seed: int) -> None:
    """JPEG has no checksum: a flip in its compressed pixels may decode (bench.fuzz counts
    how often); what must not happen is anything but an image or a MessageError."""
    b = jpeg_flip_any(random.Random(seed))
    try:
        img = LayerMessage.decode(b.key, b.value, b.headers).image(MAX_PIXELS)
        assert img.shape == (32, 32)
    except MessageError as exc:
        assert exc.reason.strip()
