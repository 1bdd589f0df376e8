"""`layerwatch ingest ...` against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer

from ingest.images import encode_png
from ingest.messages import LayerMessage
from layerwatch.core.kafka import consumer_config
from layerwatch.core.topics import Topics

BIN = Path(sys.executable).parent / "layerwatch"


def ingest(kafka_bootstrap: str, prefix: str, home: Path, *args: str, **env_extra: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERWATCH_")}
    env |= {
        "LAYERWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LAYERWATCH_DATABASE_URL": "postgresql://unused@127.0.0.1:1/x",
        "LAYERWATCH_TOPIC_PREFIX": prefix,
        "LAYERWATCH_HOME": str(home),
        **env_extra,
    }
    return subprocess.run(
        [str(BIN), "ingest", *args], env=env, capture_output=True, text=True, timeout=180
    )


def read_layers(kafka_bootstrap: str, topic: str, want: int, timeout: float = 30) -> list:
    c = Consumer(consumer_config(kafka_bootstrap, f"read-{time.time()}"))
    c.subscribe([topic])
    out, deadline = [], time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            out.append(LayerMessage.decode(m.key(), m.value(), m.headers()))
    c.close()
    return out


def test_ingest_folder_once_sends_every_file_once(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    import numpy as np

    inbox = tmp_path / "cam"
    inbox.mkdir()
    for i in range(5):
        (inbox / f"{i:04d}.png").write_bytes(encode_png(np.full((16, 16), 10 * i, np.uint8)))
    args = ("folder", str(inbox), "--printer", "mk4", "--job", "j1", "--once", "--settle", "0")
    res = ingest(kafka_bootstrap, topic_prefix, tmp_path / "home", *args)
    assert res.returncode == 0, res.stderr
    assert "confirmed 5" in res.stdout
    again = ingest(kafka_bootstrap, topic_prefix, tmp_path / "home", *args)
    assert again.returncode == 0 and "sent 0 layer(s)" in again.stdout
    msgs = read_layers(kafka_bootstrap, Topics(topic_prefix).layers, 5)
    assert [m.layer for m in msgs] == [0, 1, 2, 3, 4]
    assert {m.printer for m in msgs} == {"mk4"}
    assert [int(m.image(10_000)[0, 0]) for m in msgs] == [0, 10, 20, 30, 40]


def test_ingest_folder_sends_outlines_beside_their_images(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """layer_0001.outline.png goes with layer_0001.png (and is never a layer itself); a
    malformed one is reported with its path and the layer still goes out, without it."""
    import numpy as np

    inbox = tmp_path / "cam"
    inbox.mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 1
    for i in range(3):
        (inbox / f"layer_{i:04d}.png").write_bytes(encode_png(np.full((16, 16), 9, np.uint8)))
    (inbox / "layer_0000.outline.png").write_bytes(encode_png(mask * 255))
    (inbox / "layer_0001.outline.png").write_bytes(encode_png(np.full((8, 8), 1, np.uint8)))
    args = ("folder", str(inbox), "--printer", "mk4", "--job", "j2", "--once", "--settle", "0",
            "--outlines", "required")  # fmt: skip
    res = ingest(kafka_bootstrap, topic_prefix, tmp_path / "home", *args)
    assert res.returncode == 0, res.stderr
    assert "confirmed 3" in res.stdout  # three layers, no outline sent as a layer
    out = " ".join(res.stdout.split())  # the console may wrap a long path
    assert "layer_0001.outline.png: outline is 8x8, the layer image is 16x16" in out
    assert "layer_0002.outline.png: missing (--outlines required)" in out
    assert out.count("sent without an outline") == 2
    msgs = read_layers(kafka_bootstrap, Topics(topic_prefix).layers, 3)
    assert [m.layer for m in msgs] == [0, 1, 2]
    assert np.array_equal(msgs[0].outline_mask(10_000), mask)
    assert msgs[1].outline is None and msgs[2].outline is None


def test_ingest_simulate_sends_the_expected_outline(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    import numpy as np

    from ingest.simulate import expected_outline, make_renderer
    from ingest.simulate.categories import resolve_category

    args = ("simulate", "--printer", "sim", "--job", "j3", "--layers", "2", "--interval", "0",
            "--size", "64", "--seed", "5", "--category", "fdm_grid")  # fmt: skip
    res = ingest(kafka_bootstrap, topic_prefix, tmp_path / "home", *args)
    assert res.returncode == 0, res.stderr
    msgs = read_layers(kafka_bootstrap, Topics(topic_prefix).layers, 2)
    renderer = make_renderer(resolve_category("fdm_grid", "fdm"), 5, 64, 2)
    for m in msgs:
        assert np.array_equal(m.outline_mask(10_000), expected_outline(renderer, m.layer))
    off = ingest(kafka_bootstrap, f"{topic_prefix}-off", tmp_path / "home", *args, "--no-outline")
    assert off.returncode == 0, off.stderr
    plain = read_layers(kafka_bootstrap, Topics(f"{topic_prefix}-off").layers, 2)
    assert len(plain) == 2 and all(m.outline is None for m in plain)


def test_ingest_simulate_renders_outlines_from_gcode(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    """--gcode with the shipped file and its homography: the outline sent for each layer is the
    G-code's, which matches the simulator's designed section of the same job."""
    import json

    from ingest.simulate import expected_outline, make_renderer
    from ingest.simulate.categories import resolve_category

    data = Path(__file__).resolve().parents[1] / "data"
    meta = json.loads((data / "fdm_grid_seed1.homography.json").read_text())
    args = ("simulate", "--printer", "sim", "--job", "j4", "--layers", "2", "--interval", "0",
            "--size", "256", "--seed", "1", "--category", "fdm_grid",
            "--gcode", str(data / "fdm_grid_seed1.gcode"))  # fmt: skip
    unset = ingest(kafka_bootstrap, topic_prefix, tmp_path / "home", *args)
    assert unset.returncode != 0 and "gcode_homography" in unset.stderr + unset.stdout
    homography = json.dumps(meta["homography"])
    res = ingest(kafka_bootstrap, topic_prefix, tmp_path / "home", *args,
                 LAYERWATCH_GCODE_HOMOGRAPHY=homography)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "without an outline" not in res.stdout
    msgs = read_layers(kafka_bootstrap, Topics(topic_prefix).layers, 2)
    # the designed section of the job the G-code was written for (60 layers)
    renderer = make_renderer(resolve_category("fdm_grid", "fdm"), 1, 256, meta["layers"])
    for m in msgs:
        got, want = m.outline_mask(1 << 20), expected_outline(renderer, m.layer)
        assert (got & want).sum() / (got | want).sum() >= 0.9
