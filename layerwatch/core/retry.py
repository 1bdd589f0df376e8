"""Back-off for a service that waits for a server it needs (PostgreSQL, the Kafka broker).

The services never skip a batch they could not make durable: they hold it and try again,
0.5 s after the first failure, then twice as long each time up to ``cap`` (so an outage of an
hour costs about 120 attempts, not a busy loop), with ±20 % jitter so that several services
do not hammer a server that just came back in lock-step.
"""

from __future__ import annotations

import random

from confluent_kafka import KafkaException


class Backoff:
    def __init__(self, first: float = 0.5, cap: float = 15.0, jitter: float = 0.2) -> None:
        self.first, self.cap, self.jitter = first, cap, jitter
        self.n = 0

    def next(self) -> float:
        """The wait before the next attempt (counts the attempt)."""
        base = min(self.first * 2**self.n, self.cap)
        self.n += 1
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


def outage_kind(exc: BaseException) -> str:
    """Which server a failed batch waits for: the broker for Kafka errors, else the database."""
    return "kafka" if isinstance(exc, KafkaException) else "database"
