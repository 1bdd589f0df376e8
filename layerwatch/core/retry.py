"""Back-off for a service that waits for a server it needs (PostgreSQL, the Kafka broker).

The services never skip a batch they could not make durable: they hold it and try again,
0.5 s after the first failure, then twice as long each time up to ``cap`` (so an outage of an
hour costs about 120 attempts, not a busy loop), with ±20 % jitter so that several services
do not hammer a server that just came back in lock-step.
"""

from __future__ import annotations

import random
import re

from confluent_kafka import KafkaException

DISK_FULL = "53100"  # PostgreSQL's SQLSTATE disk_full: a write could not extend a file
_TABLE = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.IGNORECASE)


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


def disk_full(exc: BaseException) -> bool:
    """PostgreSQL refused a write because its disk (or the table's tablespace) is full."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == DISK_FULL


def describe_outage(exc: BaseException) -> str:
    """One line that says what is wrong. A full database disk names itself and the table the
    write went to (PostgreSQL's message names only a file: 'could not extend file
    "pg_tblspc/…/16390"'); anything else is the error's first line."""
    orig = getattr(exc, "orig", None)
    first = str(orig if orig is not None else exc).strip().splitlines()
    text = first[0] if first else type(exc).__name__
    if disk_full(exc):
        m = _TABLE.search(str(getattr(exc, "statement", "") or ""))
        table = f" writing table {m.group(1)}" if m else ""
        return f"the database's disk is full{table} (SQLSTATE {DISK_FULL}): {text}"
    return text
