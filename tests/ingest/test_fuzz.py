"""Malformed messages, drawn by Hypothesis: every one is refused with a MessageError that
names what was wrong, and no input, however broken, raises anything else. The decoders are
what the scorer and the monitor run on every record; bench.fuzz streams the same cases
through the running services."""

from __future__ import annotations

import random

import numpy as np
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


OUTLINE_PREFIXES = st.sampled_from([b"", b"\x89PNG\r\n\x1a\n"])


@FAST
@given(outline=st.binary(max_size=300), prefix=OUTLINE_PREFIXES, schema=st.sampled_from([1, 2]))
def test_a_malformed_outline_costs_the_outline_never_the_layer(outline, prefix, schema) -> None:
    """layer/2's outline header, fuzzed: the layer still decodes with its image; the outline
    is a 0/1 mask of the image's size or a MessageError naming ``outline``. A layer/1 record
    never has one."""
    good = LayerMessage.from_image("p0", "j", 3, np.full((32, 32), 7, np.uint8))
    headers = [
        (k, f"layer/{schema}".encode() if k == "lw-schema" else v) for k, v in good.headers()
    ]
    m = LayerMessage.decode(good.key, good.payload, [*headers, ("outline", prefix + outline)])
    assert m.image(MAX_PIXELS).shape == (32, 32)
    if schema == 1:
        assert m.outline is None and m.outline_mask(MAX_PIXELS) is None
        return
    try:
        mask = m.outline_mask(MAX_PIXELS)
        assert mask is not None and mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1}
    except MessageError as exc:
        assert exc.field == "outline" and exc.reason.strip()


@FAST
@given(data=st.data())
def test_score_messages_round_trip_their_channels(data) -> None:
    names = st.text(min_size=1, max_size=12)
    scores = data.draw(st.dictionaries(names, st.floats(allow_nan=False, allow_infinity=False),
                                       max_size=4))  # fmt: skip
    fired = tuple(data.draw(st.lists(names, max_size=3)))
    sm = ScoreMessage(
        printer="p", job="j", layer=1, score=0.5, anomalous=bool(fired), f1=1.0, f2=2.0,
        defect_area=0.0, model_version="m", latency_ms=1.0,
        captured_at="2026-01-01T00:00:00+00:00", scored_at="2026-01-01T00:00:01+00:00",
        channel_scores=scores, fired=fired,
    )  # fmt: skip
    assert ScoreMessage.decode(sm.encode(), sm.headers()) == sm
