"""`layerwatch ingest`'s producer through a broker restart: the real embedded broker (keeping
its data, as Kafka does) stops mid-stream for longer than a message may wait, and starts
again on the same port. Every layer reaches the topic, in order per printer; none is lost."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.faults.rig import Rig, RigOptions
from ingest.messages import LayerMessage
from ingest.producer import LayerProducer
from layerwatch.core.kafka import consumer_config


@pytest.fixture
def rig(quick_model_dir: Path) -> Iterator[Rig]:
    with Rig(RigOptions(partitions=2), model_dir=quick_model_dir) as r:
        yield r


def _layers_on_topic(rig: Rig, want: int, limit_s: float = 30.0) -> dict[str, list[int]]:
    c = Consumer(consumer_config(rig.bootstrap, f"t-{time.time_ns()}"))
    topic = rig.topics.layers
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    got: dict[str, list[int]] = {}
    deadline = time.monotonic() + limit_s
    try:
        while sum(len(v) for v in got.values()) < want and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                lm = LayerMessage.decode(m.key(), m.value(), m.headers())
                got.setdefault(lm.printer, []).append(lm.layer)
    finally:
        c.close()
    return got


def test_layers_sent_through_a_broker_restart_all_arrive_in_order(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    img = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    # Messages give up after 2 s: the 5 s outage outlives them, so the producer must be
    # replaced and the layers it held sent again (an outage longer than the 5-minute default).
    producer = LayerProducer(
        rig.bootstrap, 1 << 20, rig.topics.layers, **{"message.timeout.ms": 2000}
    )
    with caplog.at_level(logging.INFO, logger="layerwatch.core.kafka"):
        for i in range(30):
            if i == 10:
                producer.flush(10)
                rig.stop_broker()
            if i == 20:
                time.sleep(3)  # the broker has been away 5 s, the held layers timed out
                rig.start_broker()
            for p in ("p0", "p1"):
                producer.send(LayerMessage.from_image(p, "job", i, img))
            time.sleep(0.2)
        producer.close(timeout=60)
    st = producer.stats
    assert st.sent == 60 and st.confirmed == 60 and st.failed == [], st
    assert st.renewals >= 1, st
    assert "Kafka producer unusable: replacing it" in caplog.text
    got = _layers_on_topic(rig, 60)
    for p in ("p0", "p1"):
        assert sorted(set(got[p])) == list(range(30)), got
        first_seen = list(dict.fromkeys(got[p]))
        assert first_seen == list(range(30)), f"{p}: a layer overtook an earlier one: {got[p]}"
