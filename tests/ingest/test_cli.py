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


def ingest(kafka_bootstrap: str, prefix: str, home: Path, *args: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERWATCH_")}
    env |= {
        "LAYERWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LAYERWATCH_DATABASE_URL": "postgresql://unused@127.0.0.1:1/x",
        "LAYERWATCH_TOPIC_PREFIX": prefix,
        "LAYERWATCH_HOME": str(home),
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
