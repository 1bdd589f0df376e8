"""Malformed messages, each with the field its dead letter must name.

Layer messages (for the scorer): truncated and bit-flipped PNG and JPEG, decompression bombs,
missing and wrong headers, wrong contract versions, absurd sizes, payloads that are no image,
bad printer and job ids, layers older than a layer their job already has. Score messages (for
the monitor): NaN and infinite numbers, missing fields, wrong types, wrong contract versions,
no JSON, broken per-channel scores (score/2). A malformed expected outline (layer/2) is not
here: it is no reason to refuse the layer, which is scored without it (tests/ingest/
test_fuzz.py draws those). ``case(kind, rng)`` makes one; ``cases(n, seed)`` a mix of all
kinds. The test suite draws them with Hypothesis; ``python -m bench.fuzz`` streams a thousand
and more through the running services.

Not in here: a bit flipped in a JPEG's compressed pixels. JPEG carries no checksum, so such a
file decodes to an image with wrong pixels and no decoder can tell (measured: 283 of 300
random flips in a 64² JPEG decoded); ``jpeg_flip_any`` counts them apart from the bad ones.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from bench.faults.model import stripes
from bench.faults.rig import Bad
from ingest.images import encode_png
from ingest.messages import JPEG, LayerMessage
from scorer.messages import ScoreMessage

SIZE = 32


@dataclass(frozen=True)
class Case:
    bad: Bad
    topic: str  # "layers" | "scores"
    fields: tuple[str, ...]  # the dead letter's field must be one of these


def _good(rng: random.Random, printer: str = "p0", job: str = "fuzz") -> LayerMessage:
    img = stripes(np.random.default_rng(rng.randrange(2**32)), SIZE)
    return LayerMessage.from_image(printer, job, rng.randrange(1000), img)


def _jpeg(rng: random.Random, job: str = "fuzz") -> LayerMessage:
    m = _good(rng, "p0", job)
    img = stripes(np.random.default_rng(rng.randrange(2**32)), SIZE)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return replace(m, payload=buf.tobytes(), content_type=JPEG)


def _bad(m: LayerMessage, kind: str, payload: bytes | None = None, headers=None) -> Bad:
    hs = m.headers() if headers is None else headers
    return Bad(m.key, m.payload if payload is None else payload, list(hs), kind)


def _set(m: LayerMessage, name: str, value: bytes | None) -> list[tuple[str, bytes | None]]:
    return [(k, value if k == name else v) for k, v in m.headers()]


def _flip(data: bytes, rng: random.Random, lo: int = 0, hi: int | None = None) -> bytes:
    b = bytearray(data)
    pos = rng.randrange(lo, hi if hi is not None else len(b))
    b[pos] ^= 1 << rng.randrange(8)
    return bytes(b)


@lru_cache(maxsize=1)
def _zlib_bomb() -> tuple[bytes, int, int]:
    """A real decompression bomb: 8192×4096 black pixels, 33 M pixels in about 40 KB."""
    w, h = 8192, 4096
    return encode_png(np.zeros((h, w), np.uint8), compression=9), w, h


def _png_truncated(rng: random.Random) -> Case:
    m = _good(rng)
    return Case(_bad(m, "png_truncated", m.payload[: rng.randrange(1, len(m.payload))]),
                "layers", ("value",))  # fmt: skip


def _png_flip(rng: random.Random) -> Case:
    m = _good(rng)
    return Case(_bad(m, "png_bitflip", _flip(m.payload, rng)), "layers", ("value",))


def _jpeg_truncated(rng: random.Random) -> Case:
    m = _jpeg(rng)
    return Case(_bad(m, "jpeg_truncated", m.payload[: rng.randrange(1, len(m.payload) - 2)]),
                "layers", ("value",))  # fmt: skip


def _jpeg_structure_flip(rng: random.Random) -> Case:
    """A flip in the start marker or the frame header's size: what a decoder can notice."""
    m = _jpeg(rng)
    sof = m.payload.find(b"\xff\xc0")
    lo, hi = (0, 2) if sof < 0 or rng.random() < 0.5 else (sof + 5, sof + 9)
    return Case(_bad(m, "jpeg_header_bitflip", _flip(m.payload, rng, lo, hi)), "layers",
                ("value",))  # fmt: skip


def _bomb_header(rng: random.Random) -> Case:
    """A PNG whose header claims 60000×60000 (headers agree), a few bytes long."""
    m = _good(rng)
    p = bytearray(m.payload)
    p[16:24] = (60000).to_bytes(4, "big") * 2
    m = replace(m, payload=bytes(p), width=60000, height=60000)
    return Case(_bad(m, "bomb_header"), "layers", ("width",))


def _bomb_zlib(rng: random.Random) -> Case:
    png, w, h = _zlib_bomb()
    m = replace(_good(rng), payload=png, width=w, height=h)
    return Case(_bad(m, "bomb_zlib"), "layers", ("width",))


REQUIRED = ("lw-schema", "printer", "job", "layer", "captured-at", "content-type", "width",
            "height", "channels")  # fmt: skip


def _missing_header(rng: random.Random) -> Case:
    m = _good(rng)
    name = rng.choice(REQUIRED)
    headers = [(k, v) for k, v in m.headers() if k != name]
    return Case(_bad(m, "missing_header", headers=headers), "layers", (name,))


WRONG = {
    "layer": [b"abc", b"-3", b"1e9x", b""],
    "width": [b"0", b"-5", b"wide"],
    "height": [b"0", b"tall"],
    "channels": [b"2", b"4", b"x"],
    "content-type": [b"image/gif", b"text/plain", b""],
    "captured-at": [b"yesterday", b"2026-01-01T00:00:00", b""],
    "z": [b"nan", b"inf", b"high"],
}


def _wrong_header(rng: random.Random) -> Case:
    m = _good(rng)
    name = rng.choice(sorted(WRONG))
    value = rng.choice(WRONG[name])
    headers = _set(m, name, value) if name != "z" else [*m.headers(), ("z", value)]
    return Case(_bad(m, "wrong_header", headers=headers), "layers", (name,))


def _non_utf8_header(rng: random.Random) -> Case:
    m = _good(rng)
    name = rng.choice(("printer", "job", "layer", "captured-at"))
    return Case(_bad(m, "non_utf8_header", headers=_set(m, name, b"\xff\xfe\x80")), "layers",
                (name,))  # fmt: skip


def _wrong_version(rng: random.Random) -> Case:
    m = _good(rng)
    value = rng.choice([b"layer/3", b"layer/0", b"score/1", b"layer/x", b"", b"layer"])
    return Case(_bad(m, "wrong_version", headers=_set(m, "lw-schema", value)), "layers",
                ("lw-schema",))  # fmt: skip


def _absurd_size(rng: random.Random) -> Case:
    m = _good(rng)
    if rng.random() < 0.5:  # the headers lie about the image's size
        w = rng.choice([SIZE + 1, SIZE * 2, 1])
        return Case(_bad(m, "size_mismatch", headers=_set(m, "width", str(w).encode())),
                    "layers", ("value",))  # fmt: skip
    big = str(rng.choice([10**6, 10**9, 2**40])).encode()
    return Case(_bad(m, "absurd_size", headers=_set(_set_msg(m, "height", big), "width", big)),
                "layers", ("width",))  # fmt: skip


def _set_msg(m: LayerMessage, name: str, value: bytes) -> LayerMessage:
    return replace(m, **{name: int(value)})


def _not_an_image(rng: random.Random) -> Case:
    m = _good(rng)
    payload = rng.choice([
        b"GIF89a" + bytes(rng.randrange(256) for _ in range(40)),
        b"ceci n'est pas une image",
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))),
        b"",
        b"\x89PNG\r\n\x1a\n",
    ])  # fmt: skip
    return Case(_bad(m, "not_an_image", payload), "layers", ("value",))


def _raw_wrong_length(rng: random.Random) -> Case:
    m = _good(rng)
    headers = _set(m, "content-type", b"image/x-raw-u8")
    n = SIZE * SIZE + rng.choice([-1, 1, -SIZE, 7])
    return Case(_bad(m, "raw_wrong_length", bytes(n), headers), "layers", ("value",))


def _bad_ids(rng: random.Random) -> Case:
    m = _good(rng)
    choice = rng.randrange(5)
    if choice == 0:
        return Case(_bad(m, "empty_printer", headers=_set(m, "printer", b"   ")), "layers",
                    ("printer", "key"))  # fmt: skip
    if choice == 1:
        return Case(_bad(m, "long_printer", headers=_set(m, "printer", b"p" * 300)), "layers",
                    ("printer", "key"))  # fmt: skip
    if choice == 2:
        return Case(_bad(m, "job_control_chars", headers=_set(m, "job", b"job\n1")), "layers",
                    ("job",))  # fmt: skip
    if choice == 3:
        return Case(Bad(b"someone-else", m.payload, m.headers(), "key_mismatch"), "layers",
                    ("key",))  # fmt: skip
    return Case(_bad(m, "empty_job", headers=_set(m, "job", b"")), "layers", ("job",))


def _out_of_order(rng: random.Random) -> Case:
    """Layer N of a job, then a layer below N that the job never had: the later one is good,
    the late one a dead letter (the monitor charts a job in layer order)."""
    job = f"late-{rng.randrange(10**9)}"
    anchor = _good(rng, "p0", job)
    anchor = replace(anchor, layer=10 + rng.randrange(50))
    late = replace(_good(rng, "p0", job), layer=rng.randrange(anchor.layer))
    lead = _bad(anchor, "good_anchor")
    return Case(replace(_bad(late, "layer_out_of_order"), lead=(lead,)), "layers", ("layer",))


def _score(rng: random.Random) -> dict:
    sm = ScoreMessage(
        printer="p0", job="fuzz", layer=rng.randrange(1000), score=0.5, anomalous=False, f1=1.0,
        f2=2.0, defect_area=0.0, model_version="m", latency_ms=1.0,
        captured_at="2026-01-01T00:00:00+00:00", scored_at="2026-01-01T00:00:01+00:00",
    )  # fmt: skip
    return json.loads(sm.encode())


def _score_case(obj: object, kind: str, fields: tuple[str, ...], schema=b"score/1") -> Case:
    value = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return Case(Bad(b"p0", value, [("lw-schema", schema)], kind), "scores", fields)


def _score_nan(rng: random.Random) -> Case:
    obj = _score(rng)
    name = rng.choice(("score", "f1", "f2", "defect_area", "latency_ms", "largest_area"))
    obj[name] = rng.choice([float("nan"), float("inf"), float("-inf")])
    return _score_case(obj, "score_nan", (name,))


def _score_wrong(rng: random.Random) -> Case:
    obj = _score(rng)
    choice = rng.randrange(5)
    if choice == 0:
        name = rng.choice(("score", "layer", "job", "printer", "model_version"))
        del obj[name]
        return _score_case(obj, "score_missing_field", (name,))
    if choice == 1:
        obj["layer"] = rng.choice([-1, 1.5, "7", True])
        return _score_case(obj, "score_wrong_type", ("layer",))
    if choice == 2:
        obj["anomalous"] = "yes"
        return _score_case(obj, "score_wrong_type", ("anomalous",))
    if choice == 3:
        return _score_case(rng.choice([b"{not json", b"[1,2]", b"", b"\xff"]), "score_not_json",
                           ("value",))  # fmt: skip
    return _score_case(obj, "score_wrong_version", ("lw-schema",),
                       schema=rng.choice([b"score/3", b"layer/1", b"score/"]))  # fmt: skip


def _score_channels(rng: random.Random) -> Case:
    """score/2's channel fields broken: a NaN or non-number channel score, a channel map that
    is no object, a ``fired`` that is no list of names."""
    obj = _score(rng)
    choice = rng.randrange(4)
    if choice == 0:
        obj["channel_scores"] = {"texture": 0.1, "geometry": rng.choice(["high", None, [1]])}
    elif choice == 1:
        obj["channel_scores"] = rng.choice([[0.1, 0.2], "texture", 3.0])
    elif choice == 2:
        obj["channel_scores"] = {"geometry": float("nan")}
    else:
        obj["fired"] = rng.choice(["geometry", [1, 2], [""], {"texture": True}])
        return _score_case(obj, "score_channels", ("fired",), schema=b"score/2")
    return _score_case(obj, "score_channels", ("channel_scores",), schema=b"score/2")


KINDS: dict[str, Callable[[random.Random], Case]] = {
    "png_truncated": _png_truncated,
    "png_bitflip": _png_flip,
    "jpeg_truncated": _jpeg_truncated,
    "jpeg_header_bitflip": _jpeg_structure_flip,
    "bomb_header": _bomb_header,
    "bomb_zlib": _bomb_zlib,
    "missing_header": _missing_header,
    "wrong_header": _wrong_header,
    "non_utf8_header": _non_utf8_header,
    "wrong_version": _wrong_version,
    "absurd_size": _absurd_size,
    "not_an_image": _not_an_image,
    "raw_wrong_length": _raw_wrong_length,
    "bad_ids": _bad_ids,
    "layer_out_of_order": _out_of_order,
    "score_nan": _score_nan,
    "score_wrong": _score_wrong,
    "score_channels": _score_channels,
}


# Kinds that are bad only in their stream (a message that is fine alone): the decoder tests
# leave them out; the stream tests and bench.fuzz send them.
IN_CONTEXT = frozenset({"layer_out_of_order"})

KIND_HEADER = "fuzz-kind"  # what the record is and which fields may be named: the dead
FIELDS_HEADER = "fuzz-fields"  # letter keeps the headers, so the check can match them


def case(kind: str, rng: random.Random) -> Case:
    """One malformed record of ``kind``, marked with its kind and the fields it may fail on."""
    c = KINDS[kind](rng)
    marks = [(KIND_HEADER, kind.encode()), (FIELDS_HEADER, ",".join(c.fields).encode())]
    return replace(c, bad=replace(c.bad, headers=[*c.bad.headers, *marks], topic=c.topic))


def cases(n: int, seed: int = 0) -> list[Case]:
    """``n`` cases, the kinds in turn (each kind about n / 16 times)."""
    rng = random.Random(seed)
    kinds = sorted(KINDS)
    return [case(kinds[i % len(kinds)], rng) for i in range(n)]


def jpeg_flip_any(rng: random.Random) -> Bad:
    """A flip anywhere in a JPEG: mostly undetectable (see the module's docstring). Each in a
    job of its own, so that only its bytes decide (not its layer number)."""
    m = _jpeg(rng, job=f"flip-{rng.randrange(10**9)}")
    return _bad(m, "jpeg_bitflip_anywhere", _flip(m.payload, rng))
