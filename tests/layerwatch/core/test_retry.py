"""What a held batch says about its outage: a full database disk names itself and the table."""

from __future__ import annotations

import psycopg
from confluent_kafka import KafkaError, KafkaException
from sqlalchemy.exc import OperationalError

from layerwatch.core.retry import Backoff, describe_outage, disk_full, outage_kind


class _DiskFull(psycopg.errors.DiskFull):
    """psycopg's class for SQLSTATE 53100, with the message PostgreSQL sends."""

    def __str__(self) -> str:
        return 'could not extend file "pg_tblspc/16390/PG_16/5/16412": No space left on device'


def test_a_full_disk_is_named_with_its_table() -> None:
    exc = OperationalError("INSERT INTO scores (printer, job) VALUES (%s, %s)", {}, _DiskFull())
    assert disk_full(exc) and outage_kind(exc) == "database"
    text = describe_outage(exc)
    assert text.startswith("the database's disk is full writing table scores (SQLSTATE 53100)")
    assert "No space left on device" in text


def test_other_outages_keep_their_first_line() -> None:
    down = OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused\nHINT"))
    assert not disk_full(down)
    assert describe_outage(down) == "connection refused"
    kafka = KafkaException(KafkaError(KafkaError._TRANSPORT, "broker gone"))
    assert outage_kind(kafka) == "kafka" and not disk_full(kafka)


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    b = Backoff(first=0.5, cap=4.0, jitter=0.2)
    waits = [b.next() for _ in range(6)]
    for w, base in zip(waits, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert 0.8 * base <= w <= 1.2 * base
