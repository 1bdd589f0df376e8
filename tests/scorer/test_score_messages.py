"""The score wire contract: JSON round trip, versioning, and fuzzing."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import asdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerwatch.core.wire import MessageError
from scorer.messages import ScoreMessage

GOOD = ScoreMessage(
    printer="p", job="j", layer=3, score=0.61, anomalous=True, f1=0.2, f2=1.5,
    defect_area=0.004, model_version="radar-abc", latency_ms=210.0,
    captured_at="2026-11-22T10:00:00+00:00", scored_at="2026-11-22T10:00:01+00:00",
)  # fmt: skip


def test_round_trip() -> None:
    assert ScoreMessage.decode(GOOD.encode(), GOOD.headers()) == GOOD


def test_unknown_fields_are_ignored_and_missing_ones_named() -> None:
    obj = asdict(GOOD) | {"future_field": 1}
    assert ScoreMessage.decode(json.dumps(obj).encode(), GOOD.headers()) == GOOD
    del obj["score"]
    with pytest.raises(MessageError) as info:
        ScoreMessage.decode(json.dumps(obj).encode(), GOOD.headers())
    assert info.value.field == "score"


@pytest.mark.parametrize(
    ("field", "value"),
    [("layer", -1), ("layer", 2.5), ("score", "high"), ("anomalous", 1), ("printer", ""),
     ("scored_at", "soon"), ("f1", None)],
)  # fmt: skip
def test_bad_field_is_named(field: str, value: object) -> None:
    obj = asdict(GOOD) | {field: value}
    with pytest.raises(MessageError) as info:
        ScoreMessage.decode(json.dumps(obj).encode(), GOOD.headers())
    assert info.value.field == field


def test_wrong_schema_version() -> None:
    with pytest.raises(MessageError, match="unsupported score version 3"):
        ScoreMessage.decode(GOOD.encode(), [("lw-schema", b"score/3")])


def test_score_2_carries_the_channels_and_score_1_is_still_read() -> None:
    two = dataclasses.replace(
        GOOD, channel_scores={"texture": 0.4, "geometry": 2.5}, fired=("geometry",)
    )
    assert two.headers() == [("lw-schema", b"score/2")]
    assert ScoreMessage.decode(two.encode(), two.headers()) == two
    old = {k: v for k, v in asdict(GOOD).items() if k not in ("channel_scores", "fired")}
    got = ScoreMessage.decode(json.dumps(old).encode(), [("lw-schema", b"score/1")])
    assert got == GOOD and got.channel_scores == {} and got.fired == ()
    # score/1 has no such fields: a producer's extra ones are ignored, as unknown fields are
    extra = ScoreMessage.decode(two.encode(), [("lw-schema", b"score/1")])
    assert extra.channel_scores == {} and extra.fired == ()


@pytest.mark.parametrize(
    ("field", "value"),
    [("channel_scores", {"geometry": "high"}), ("channel_scores", [1.0]),
     ("channel_scores", {"": 1.0}), ("fired", "geometry"), ("fired", [3])],
)  # fmt: skip
def test_bad_channel_fields_are_named(field: str, value: object) -> None:
    obj = asdict(GOOD) | {field: value}
    with pytest.raises(MessageError) as info:
        ScoreMessage.decode(json.dumps(obj).encode(), GOOD.headers())
    assert info.value.field == field


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.none(),
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(list(asdict(GOOD))),
            st.from_type(object).filter(lambda v: isinstance(v, int | float | str | bool | None)),
            max_size=14,
        ).map(lambda d: json.dumps(asdict(GOOD) | d, default=str).encode()),
    ),
    schema=st.one_of(st.none(), st.binary(max_size=12), st.just(b"score/1")),
)
def test_fuzzed_score_messages_raise_only_message_error(value, schema) -> None:
    with contextlib.suppress(MessageError):
        ScoreMessage.decode(value, [("lw-schema", schema)])
