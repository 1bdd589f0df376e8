"""Expected outlines on the wire (layer/2) and on disk: round trips, layer/1 still read, and
a malformed outline refused with a clear reason that costs the outline, never the layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest.images import encode_png
from ingest.messages import LayerMessage
from ingest.outline import OutlineError, outline_path, read_outline_file
from layerwatch.core.wire import MessageError

IMG = (np.arange(24 * 16) % 251).astype(np.uint8).reshape(16, 24)
MASK = np.zeros((16, 24), np.uint8)
MASK[4:12, 6:18] = 1


def _decode(m: LayerMessage, **replace_headers: bytes) -> LayerMessage:
    hs = [(k, replace_headers.get(k.replace("-", "_"), v)) for k, v in m.headers()]
    return LayerMessage.decode(m.key, m.payload, hs)


def test_outline_round_trips_as_a_binary_header() -> None:
    m = LayerMessage.from_image("p", "j", 3, IMG, outline=MASK)
    assert dict(m.headers())["lw-schema"] == b"layer/2"
    d = _decode(m)
    assert np.array_equal(d.outline_mask(10_000), MASK)
    assert np.array_equal(d.image(10_000), IMG)
    assert len(m.outline or b"") < 200  # a 0/1 PNG is small


def test_layer_1_is_still_read_and_has_no_outline() -> None:
    m = LayerMessage.from_image("p", "j", 3, IMG, outline=MASK)
    d = _decode(m, lw_schema=b"layer/1")  # an old producer: an outline header is not its
    assert d.outline is None and d.outline_mask(10_000) is None
    assert np.array_equal(d.image(10_000), IMG)
    plain = LayerMessage.from_image("p", "j", 3, IMG)
    assert "outline" not in dict(plain.headers())


@pytest.mark.parametrize(
    ("outline", "reason"),
    [
        (b"", "empty outline"),
        (b"GIF89a....", "not a PNG"),
        (encode_png(np.ones((8, 8), np.uint8)), "outline is 8x8, the layer image is 24x16"),
        (encode_png(np.full((16, 24), 7, np.uint8)), "not a binary mask: pixel values 7"),
        (encode_png(np.ones((16, 24), np.uint8))[:40], "truncated"),
    ],
)
def test_a_malformed_outline_names_the_field_and_keeps_the_layer(outline, reason) -> None:
    m = LayerMessage.from_image("p", "j", 3, IMG, outline=MASK)
    d = _decode(m, outline=outline)
    with pytest.raises(MessageError, match=reason) as exc:
        d.outline_mask(10_000)
    assert exc.value.field == "outline"
    assert np.array_equal(d.image(10_000), IMG)  # the layer itself is fine


def test_outline_decoding_is_bounded() -> None:
    big = np.zeros((16, 24), np.uint8)
    d = _decode(LayerMessage.from_image("p", "j", 3, IMG, outline=big))
    with pytest.raises(MessageError, match="exceeds the limit"):
        d.outline_mask(100)


def test_an_outline_of_the_wrong_size_is_refused_when_attached() -> None:
    with pytest.raises(OutlineError, match="outline is 8x8, the layer image is 24x16"):
        LayerMessage.from_image("p", "j", 3, IMG, outline=np.ones((8, 8), np.uint8))


def test_outline_files_beside_their_images(tmp_path: Path) -> None:
    image = tmp_path / "layer_0042.png"
    assert outline_path(image) == tmp_path / "layer_0042.outline.png"
    assert outline_path(tmp_path / "cam.JPG") == tmp_path / "cam.outline.png"
    outline_path(image).write_bytes(encode_png(MASK * 255))  # 0/255, as editors save masks
    assert np.array_equal(read_outline_file(outline_path(image), 24, 16, 10_000), MASK)
    with pytest.raises(OutlineError, match=r"layer_0099\.outline\.png: cannot read"):
        read_outline_file(tmp_path / "layer_0099.outline.png", 24, 16, 10_000)
