"""Layer producer: idempotent, compressed, size-bounded, every delivery report checked."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from ingest.messages import LayerMessage
from layerwatch.core.kafka import producer_config

log = logging.getLogger(__name__)


class ProduceError(RuntimeError):
    """A layer could not be sent, or the broker did not confirm it."""


@dataclass
class DeliveryStats:
    sent: int = 0
    confirmed: int = 0
    failed: list[str] = field(default_factory=list)


class LayerProducer:
    """Send :class:`LayerMessage` s keyed by printer; ``close()`` flushes and checks reports."""

    def __init__(self, bootstrap: str, max_message_bytes: int, topic: str, **extra: object) -> None:
        self.topic = topic
        self.max_message_bytes = max_message_bytes
        self._producer = Producer(producer_config(bootstrap, max_message_bytes, **extra))
        self.stats = DeliveryStats()

    def _on_delivery(self, error: KafkaError | None, msg: Message) -> None:
        if error is not None:
            where = f"{msg.topic()} key={msg.key()!r}"
            self.stats.failed.append(f"{where}: {error.str()}")
            log.error("delivery failed", extra={"topic": msg.topic(), "error": error.str()})
        else:
            self.stats.confirmed += 1

    def send(self, msg: LayerMessage) -> None:
        size = len(msg.payload) + sum(len(k) + len(v) for k, v in msg.headers()) + len(msg.key)
        if size > self.max_message_bytes:
            raise ProduceError(
                f"layer {msg.layer} of {msg.printer}/{msg.job} is {size} bytes, over the "
                f"{self.max_message_bytes}-byte limit (LAYERWATCH_MAX_MESSAGE_BYTES)"
            )
        while True:
            try:
                self._producer.produce(
                    self.topic, value=msg.payload, key=msg.key, headers=msg.headers(),
                    on_delivery=self._on_delivery,
                )  # fmt: skip
                break
            except BufferError:  # local queue full: serve callbacks and retry
                self._producer.poll(0.1)
        self.stats.sent += 1
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise ProduceError(f"{remaining} layer(s) still unconfirmed after {timeout:.0f}s")
        if self.stats.failed:
            raise ProduceError(f"{len(self.stats.failed)} layer(s) failed: {self.stats.failed[0]}")

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> LayerProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
