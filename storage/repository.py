"""Idempotent writes: every insert is an upsert on the table's natural key.

One generic :func:`upsert` serves all tables (scores, maps, chart points, layers, …), in one
``INSERT … ON CONFLICT`` statement per batch; nothing issues a query per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert

from storage.models import (
    AnomalyMap,
    Base,
    ChartPoint,
    DeadLetter,
    Job,
    Layer,
    Printer,
    Score,
)


def _table(model: type[Base]) -> Table:
    return model.__table__  # type: ignore[return-value]


def upsert(
    conn: Connection,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    keys: Iterable[str] | None = None,
    update: bool = True,
) -> int:
    """Insert ``rows``; on a natural-key conflict update the other columns (or do nothing).

    Returns the number of rows sent. ``keys`` defaults to the primary key.
    """
    if not rows:
        return 0
    table = _table(model)
    key_cols = list(keys) if keys else [c.name for c in table.primary_key.columns]
    stmt = insert(table)
    present = set().union(*(r.keys() for r in rows))
    if update:
        cols = {c: stmt.excluded[c] for c in present if c not in key_cols}
        stmt = stmt.on_conflict_do_update(index_elements=key_cols, set_=cols) if cols else (
            stmt.on_conflict_do_nothing(index_elements=key_cols)
        )  # fmt: skip
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=key_cols)
    conn.execute(stmt, list(rows))
    return len(rows)


def register_jobs(conn: Connection, pairs: Iterable[tuple[str, str]]) -> None:
    """Make sure printers and jobs exist (first sight of a job starts it)."""
    pairs = sorted(set(pairs))
    if not pairs:
        return
    upsert(conn, Printer, [{"printer": p} for p in sorted({p for p, _ in pairs})], update=False)
    upsert(conn, Job, [{"printer": p, "job": j} for p, j in pairs], update=False)
    conn.execute(
        _table(Job)
        .update()
        .where(tuple_(_table(Job).c.printer, _table(Job).c.job).in_(pairs))
        .values(last_layer_at=func.now())
    )


def upsert_layers(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    return upsert(conn, Layer, rows)


def upsert_scores(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    return upsert(conn, Score, rows)


def upsert_maps(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    return upsert(conn, AnomalyMap, rows)


def upsert_chart_points(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    return upsert(conn, ChartPoint, rows)


def add_dead_letters(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Keep bad records; a replayed one (same source) is stored once."""
    return upsert(conn, DeadLetter, rows, keys=["source"], update=False)


def job_scores(conn: Connection, printer: str | None, job: str) -> list[dict[str, Any]]:
    """A job's scores in layer order (all model versions), for export and the monitor."""
    t = _table(Score)
    q = select(t).where(t.c.job == job).order_by(t.c.printer, t.c.layer, t.c.model_version)
    if printer is not None:
        q = q.where(t.c.printer == printer)
    return [dict(r._mapping) for r in conn.execute(q)]
