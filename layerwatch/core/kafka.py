"""Kafka topics and client settings, defined once for every producer and consumer.

The settings follow KAFKA.md: they hold for real Kafka and for the embedded Tansu broker
(short session timeout so that group joins take seconds, manual commits after durable writes).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from layerwatch.core.topics import Topics

if TYPE_CHECKING:
    from layerwatch.core.settings import Settings

log = logging.getLogger(__name__)


SCORER_GROUP = "scorer"
MONITOR_GROUP = "monitor"


def producer_config(bootstrap: str, max_message_bytes: int, **extra: object) -> dict:
    """Idempotent, compressed, acks=all: a retried send never duplicates a layer."""
    cfg: dict = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": max_message_bytes,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    cfg.update(extra)
    return cfg


def close_producer(producer: Producer, timeout: float = 10.0) -> int:
    """Flush, drop what is still unconfirmed after ``timeout`` s, and shut the client down.

    A service's producer must not outlive its run: one that did kept reconnecting, and logging
    each refused connection, after the demo stopped the embedded broker. Returns how many
    messages were dropped (a service flushes every batch before committing its offsets, so
    anything dropped here is replayed from the input topic on the next start).
    """
    remaining = producer.flush(timeout)
    if remaining:
        producer.purge()
        producer.flush(0)
        log.warning("producer closed with unconfirmed messages", extra={"dropped": remaining})
    producer.close()
    return remaining


def consumer_config(bootstrap: str, group: str, **extra: object) -> dict:
    """Manual commits only after outputs are durable; short session for quick rebalances."""
    cfg: dict = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "cooperative-sticky",
        "fetch.message.max.bytes": 16 * 1024 * 1024,
    }
    cfg.update(extra)
    return cfg


def ensure_topics(
    bootstrap: str,
    topics: Topics,
    default_partitions: int,
    replication: int = 1,
    timeout: float = 15.0,
    max_message_bytes: int | None = None,
) -> list[str]:
    """Create the LayerWatch topics that are missing; returns the names created.

    Idempotent: existing topics are left as they are (Tansu refuses to add partitions, so
    topics are created with their final count). ``max_message_bytes`` sets the topics'
    ``max.message.bytes``: layer images exceed a real broker's 1 MiB default.
    """
    config = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else {}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [
        NewTopic(name, num_partitions=n, replication_factor=replication, config=config)
        for name, n in topics.partitions(default_partitions).items()
        if name not in existing
    ]
    created: list[str] = []
    if not new:
        return created
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    log.info("topics created", extra={"topics": created})
    return created


def ensure_configured_topics(settings: Settings, bootstrap: str) -> list[str]:
    """``ensure_topics`` with the partitions, replication and size limit from the settings."""
    return ensure_topics(
        bootstrap,
        settings.topics,
        settings.topic_partitions,
        settings.topic_replication,
        max_message_bytes=settings.max_message_bytes,
    )
