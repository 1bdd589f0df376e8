"""Layer producer: idempotent, compressed, size-bounded, every delivery confirmed.

A broker restart mid-print does not lose a layer: the messages live in a
:class:`~layerwatch.core.kafka.ResendingProducer` until the broker confirmed them, and a
producer the restart killed is replaced with the unconfirmed layers sent again, in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import Producer

from ingest.messages import LayerMessage
from layerwatch.core.kafka import ResendingProducer, producer_config

log = logging.getLogger(__name__)


class ProduceError(RuntimeError):
    """A layer could not be sent, or the broker did not confirm it."""


@dataclass
class DeliveryStats:
    sent: int = 0
    confirmed: int = 0
    failed: list[str] = field(default_factory=list)
    renewals: int = 0  # producers replaced after a broker restart


class LayerProducer:
    """Send :class:`LayerMessage` s keyed by printer; ``flush()`` waits for every confirmation."""

    def __init__(self, bootstrap: str, max_message_bytes: int, topic: str, **extra: object) -> None:
        self.topic = topic
        self.max_message_bytes = max_message_bytes
        self._producer = ResendingProducer(
            lambda: Producer(producer_config(bootstrap, max_message_bytes, **extra))
        )
        self._stats = DeliveryStats()

    @property
    def stats(self) -> DeliveryStats:
        p = self._producer
        s = self._stats
        s.confirmed, s.failed, s.renewals = p.confirmed, p.failed, p.renewals
        return s

    def send(self, msg: LayerMessage) -> None:
        size = len(msg.payload) + sum(len(k) + len(v) for k, v in msg.headers()) + len(msg.key)
        if size > self.max_message_bytes:
            raise ProduceError(
                f"layer {msg.layer} of {msg.printer}/{msg.job} is {size} bytes, over the "
                f"{self.max_message_bytes}-byte limit (LAYERWATCH_MAX_MESSAGE_BYTES)"
            )
        self._producer.produce(self.topic, msg.payload, msg.key, msg.headers())
        self._stats.sent += 1
        self._producer.poll(0)

    def flush(self, timeout: float = 300.0) -> None:
        """Wait until the broker confirmed every layer (through a restart of it, up to
        ``timeout`` s); ProduceError if some stay unconfirmed or were refused."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise ProduceError(f"{remaining} layer(s) still unconfirmed after {timeout:.0f}s")
        if self.stats.failed:
            raise ProduceError(f"{len(self.stats.failed)} layer(s) failed: {self.stats.failed[0]}")

    def close(self, timeout: float = 300.0) -> None:
        """``flush``, then shut the client down."""
        try:
            self.flush(timeout)
        finally:
            self.shutdown()

    def shutdown(self) -> int:
        """Shut the client down without waiting; returns the layers left unconfirmed."""
        return self._producer.close(timeout=0)

    def __enter__(self) -> LayerProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
