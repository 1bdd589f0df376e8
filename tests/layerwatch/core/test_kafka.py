"""The real broker: topics, produce, consume in a group, commit, resume after a restart."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from ingest.messages import LayerMessage
from ingest.producer import LayerProducer, ProduceError
from layerwatch.core.kafka import (
    Topics,
    close_producer,
    consumer_config,
    ensure_topics,
    producer_config,
)


def _drain(consumer: Consumer, want: int, timeout: float = 30.0) -> list:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and not msg.error():
            got.append(msg)
    return got


def test_ensure_topics_is_idempotent(kafka_bootstrap: str, topic_prefix: str) -> None:
    topics = Topics(topic_prefix)
    created = ensure_topics(kafka_bootstrap, topics, default_partitions=3)
    assert sorted(created) == sorted(topics.partitions(3))
    assert ensure_topics(kafka_bootstrap, topics, default_partitions=3) == []
    meta = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=5).topics
    assert len(meta[topics.layers].partitions) == 3
    assert len(meta[topics.dlq].partitions) == 1


def test_produce_consume_commit_resume(kafka_bootstrap: str, topic_prefix: str) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics, default_partitions=2)
    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    with LayerProducer(kafka_bootstrap, 1 << 20, topics.layers) as producer:
        for i in range(10):
            producer.send(LayerMessage.from_image(f"p{i % 2}", "job", i, img, z_mm=0.2 * i))
    assert producer.stats.confirmed == 10

    group = f"{topic_prefix}-g"
    c = Consumer(consumer_config(kafka_bootstrap, group))
    c.subscribe([topics.layers])
    first = _drain(c, 10)
    assert len(first) == 10
    decoded = [LayerMessage.decode(m.key(), m.value(), m.headers()) for m in first]
    assert sorted(d.layer for d in decoded) == list(range(10))
    assert all(np.array_equal(d.image(1000), img) for d in decoded)
    # Per printer (= per key = per partition) the layers keep their order.
    for printer in ("p0", "p1"):
        layers = [d.layer for d in decoded if d.printer == printer]
        assert layers == sorted(layers)
    # Commit only the first 6 by their offsets, then leave: exactly the rest comes back.
    committed = {(m.partition(), m.offset()) for m in first if m.value() and _layer(m) < 6}
    for m in first:
        if (m.partition(), m.offset()) in committed:
            c.commit(message=m, asynchronous=False)
    c.close()

    c2 = Consumer(consumer_config(kafka_bootstrap, group))
    c2.subscribe([topics.layers])
    again = _drain(c2, 4, timeout=30)
    extra = _drain(c2, 1, timeout=2)
    c2.close()
    assert sorted(_layer(m) for m in again) == [6, 7, 8, 9]
    assert extra == []


def _layer(m) -> int:
    return LayerMessage.decode(m.key(), m.value(), m.headers()).layer


def test_oversize_message_is_refused_clearly(kafka_bootstrap: str, topic_prefix: str) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)
    producer = LayerProducer(kafka_bootstrap, 10_000, Topics(topic_prefix).layers)
    try:
        producer.send(LayerMessage.from_image("p", "j", 1, noise))
    except ProduceError as exc:
        assert "over the 10000-byte limit" in str(exc)
        assert "layer 1 of p/j" in str(exc)
    else:
        raise AssertionError("oversize layer was accepted")
    assert producer.stats.sent == 0


def test_close_producer_delivers_then_shuts_the_client_down(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics, 1)
    producer = Producer(producer_config(kafka_bootstrap, 1 << 20))
    producer.produce(topics.layers, b"last words", b"k")
    assert close_producer(producer) == 0
    with pytest.raises(RuntimeError, match="closed"):
        producer.produce(topics.layers, b"after close")
    consumer = Consumer(consumer_config(kafka_bootstrap, f"{topic_prefix}-close"))
    consumer.subscribe([topics.layers])
    try:
        deadline, got = time.monotonic() + 30, []
        while not got and time.monotonic() < deadline:
            got = [m.value() for m in consumer.consume(10, 1.0) if m.error() is None]
    finally:
        consumer.close()
    assert got == [b"last words"]


def test_close_producer_with_the_broker_gone_drops_and_still_closes() -> None:
    # A port nothing listens on: the message can never be confirmed, and closing must not hang.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    producer = Producer(producer_config(f"127.0.0.1:{port}", 1 << 20))
    producer.produce("nowhere", b"x")
    assert close_producer(producer, timeout=0.5) == 1
    with pytest.raises(RuntimeError, match="closed"):
        producer.produce("nowhere", b"y")


def test_outbox_confirms_each_message_once_and_requeues_on_a_new_producer(
    kafka_bootstrap: str,
) -> None:
    from confluent_kafka import KafkaError, KafkaException

    from layerwatch.core.kafka import Outbox, Outgoing, producer_dead

    topic = f"outbox-{time.time_ns()}"
    box = Outbox([Outgoing(topic, f"m{i}".encode(), b"k") for i in range(3)])
    producer = Producer(producer_config(kafka_bootstrap, 1 << 20))
    box.send(producer)
    assert box.done
    box.send(producer)  # nothing left to send: a retry after success sends nothing again
    box.items[1].state = "sent"  # as if its report never came (its producer died)
    box.requeue()
    assert [it.state for it in box.items] == ["delivered", "new", "delivered"]
    fresh = Producer(producer_config(kafka_bootstrap, 1 << 20))
    box.send(fresh)
    assert box.done
    close_producer(producer)
    close_producer(fresh)
    consumer = Consumer(consumer_config(kafka_bootstrap, f"g-{topic}"))
    consumer.subscribe([topic])
    got = sorted(m.value() for m in _drain(consumer, 4, timeout=15))
    consumer.close()
    assert got == [b"m0", b"m1", b"m1", b"m2"]  # only the unconfirmed one went twice
    dead = KafkaException(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    assert producer_dead(dead)
    assert not producer_dead(KafkaException(KafkaError(KafkaError._TIMED_OUT, "slow")))
