"""Idempotent writes: every insert is an upsert on the table's natural key.

One generic :func:`upsert` serves all tables (scores, maps, chart points, layers, …), in one
``INSERT … ON CONFLICT`` statement per batch; nothing issues a query per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert

from storage.models import (
    Action,
    Alarm,
    AnomalyMap,
    Base,
    ChartPoint,
    DeadLetter,
    Job,
    Layer,
    LayerImage,
    PrintCalibration,
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

    Returns the number of rows sent. ``keys`` defaults to the primary key. Rows with the same
    key in one call are sent once (the last wins): PostgreSQL refuses an ``ON CONFLICT DO
    UPDATE`` that touches a row twice, so a layer repeated within one micro-batch (a camera
    that sent it twice) failed the whole batch, and the scorer with it, on every replay.
    """
    if not rows:
        return 0
    table = _table(model)
    key_cols = list(keys) if keys else [c.name for c in table.primary_key.columns]
    rows = list({tuple(r.get(k) for k in key_cols): r for r in rows}.values())
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


def out_of_order(
    conn: Connection, keys: Sequence[tuple[str, str, int]]
) -> dict[tuple[str, str, int], int]:
    """Layers (printer, job, layer), in arrival order, that come after a later layer of their
    job was stored and were never stored themselves → the later layer. A replayed layer is
    stored already, so it is not late; one query per table for the whole batch."""
    if not keys:
        return {}
    t = _table(Layer)
    pairs = sorted({(p, j) for p, j, _ in keys})
    highest: dict[tuple[str, str], int] = {
        (p, j): int(m)
        for p, j, m in conn.execute(
            select(t.c.printer, t.c.job, func.max(t.c.layer))
            .where(tuple_(t.c.printer, t.c.job).in_(pairs))
            .group_by(t.c.printer, t.c.job)
        )
    }
    stored = {
        tuple(r)
        for r in conn.execute(
            select(t.c.printer, t.c.job, t.c.layer).where(
                tuple_(t.c.printer, t.c.job, t.c.layer).in_(sorted(set(keys)))
            )
        )
    }
    late: dict[tuple[str, str, int], int] = {}
    for key in keys:
        pj, hi = key[:2], highest.get(key[:2])
        if hi is not None and key[2] < hi and key not in stored:
            late[key] = hi
        else:
            highest[pj] = key[2] if hi is None else max(hi, key[2])
    return late


def upsert_layers(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    return upsert(conn, Layer, rows)


def upsert_scores(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    return upsert(conn, Score, rows)


def upsert_maps(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    return upsert(conn, AnomalyMap, rows)


def store_layer_images(conn: Connection, rows: Sequence[dict[str, Any]], keep: int) -> int:
    """Upsert layer images (printer, job, layer, image, channels) and delete each job's
    images older than its ``keep`` highest: the table stays a few rows per job."""
    n = upsert(conn, LayerImage, rows)
    t = _table(LayerImage)
    for printer, job in sorted({(r["printer"], r["job"]) for r in rows}):
        kept = (
            select(t.c.layer)
            .where(t.c.printer == printer, t.c.job == job)
            .order_by(t.c.layer.desc())
            .limit(keep)
        )
        conn.execute(
            t.delete().where(t.c.printer == printer, t.c.job == job, t.c.layer.not_in(kept))
        )
    return n


def recent_layer_images(
    conn: Connection, printer: str, job: str, before: int, limit: int
) -> list[tuple[int, bytes, int]]:
    """A job's stored layer images below layer ``before``, highest first (at most ``limit``):
    (layer, image file bytes, channels)."""
    t = _table(LayerImage)
    rows = conn.execute(
        select(t.c.layer, t.c.image, t.c.channels)
        .where(t.c.printer == printer, t.c.job == job, t.c.layer < before)
        .order_by(t.c.layer.desc())
        .limit(limit)
    )
    return [(int(r.layer), bytes(r.image), int(r.channels)) for r in rows]


def recent_outline_states(
    conn: Connection, printer: str, job: str, model_version: str, before: int, limit: int
) -> list[tuple[float, float, float]]:
    """The placements (scorer.geometry.OUTLINE_STATE) that ``model_version`` found on a job's
    last ``limit`` unflagged layers below ``before`` that have one, in layer order: the
    scorer's job reference (each model's segmenter places the part its own way)."""
    t = _table(Score)
    rows = conn.execute(
        select(t.c.outline_state)
        .where(
            t.c.printer == printer,
            t.c.job == job,
            t.c.model_version == model_version,
            t.c.layer < before,
            t.c.anomalous.is_(False),
            t.c.outline_state.is_not(None),
        )
        .order_by(t.c.layer.desc())
        .limit(limit)
    )
    return [(float(a), float(b), float(c)) for ((a, b, c),) in reversed(list(rows))]


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


ALARM_CHANNEL_LAYERS = 5  # the alarm's layer and the 4 before: the layers that triggered it


def fired_channels(conn: Connection, printer: str, job: str, layer: int) -> str | None:
    """The detector channels that fired on the layers behind an alarm at ``layer`` (it and
    the ``ALARM_CHANNEL_LAYERS - 1`` before), comma-separated and sorted; None if none did."""
    t = _table(Score)
    rows = conn.execute(
        select(t.c.fired).where(
            t.c.printer == printer, t.c.job == job,
            t.c.layer.between(layer - ALARM_CHANNEL_LAYERS + 1, layer),
        )
    )  # fmt: skip
    names = {c for (fired,) in rows for c in (fired or "").split(",") if c}
    return ",".join(sorted(names)) or None


def open_alarms(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[tuple[int, bool]]:
    """Insert alarms idempotently on (printer, job, chart, level, episode).

    Returns (id, newly_opened) per row, in order: a replayed alarm gets its existing id back.
    """
    out = []
    t = _table(Alarm)
    for r in rows:
        new_id = conn.execute(
            insert(t).values(**r).on_conflict_do_nothing(constraint="uq_alarms_episode")
            .returning(t.c.id)
        ).scalar()  # fmt: skip
        if new_id is not None:
            out.append((int(new_id), True))
            continue
        existing = conn.execute(
            select(t.c.id).where(
                t.c.printer == r["printer"], t.c.job == r["job"], t.c.chart == r["chart"],
                t.c.level == r["level"], t.c.episode == r["episode"],
            )
        ).scalar_one()  # fmt: skip
        out.append((int(existing), False))
    return out


def action_succeeded(conn: Connection, alarm_id: int) -> bool:
    t = _table(Action)
    q = select(func.count()).where(t.c.alarm_id == alarm_id, t.c.ok.is_(True))
    return conn.execute(q).scalar_one() > 0


def record_actions(conn: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Store action attempts; attempt numbers continue after the ones already stored."""
    if not rows:
        return 0
    t = _table(Action)
    alarm_id = rows[0]["alarm_id"]
    done = conn.execute(
        select(func.coalesce(func.max(t.c.attempt), 0)).where(t.c.alarm_id == alarm_id)
    ).scalar_one()
    rows = [dict(r, attempt=done + i + 1) for i, r in enumerate(rows)]
    return upsert(conn, Action, rows, keys=["alarm_id", "target", "command", "attempt"])


def job_history(
    conn: Connection, printer: str, job: str, model_version: str, before_layer: int
) -> list[tuple[int, float, float, float, float]]:
    """(layer, score, f1, f2, largest_area) of a job's already-scored layers, for rebuilding
    the monitor's chart state after a restart."""
    t = _table(Score)
    q = (
        select(t.c.layer, t.c.score, t.c.f1, t.c.f2, t.c.largest_area)
        .where(t.c.printer == printer, t.c.job == job, t.c.model_version == model_version)
        .where(t.c.layer < before_layer)
        .order_by(t.c.layer)
    )
    return [tuple(r) for r in conn.execute(q)]


def save_print_calibration(
    conn: Connection,
    model_version: str,
    source: str,
    prints: list[list[list[float]]],
    levels: dict,
) -> None:
    """Replace the model version's calibration prints (per print, per layer [score, f1, f2];
    NaN stored as null)."""
    clean = [[[v if v == v else None for v in row] for row in p] for p in prints]
    upsert(conn, PrintCalibration, [{"model_version": model_version, "source": source,
                                     "prints": clean, "levels": levels}])  # fmt: skip


def print_calibration(conn: Connection, model_version: str) -> list[list[list[float]]] | None:
    """The stored calibration prints of a model version (null → NaN)."""
    t = _table(PrintCalibration)
    prints = conn.execute(select(t.c.prints).where(t.c.model_version == model_version)).scalar()
    if prints is None:
        return None
    nan = float("nan")
    return [[[nan if v is None else float(v) for v in row] for row in p] for p in prints]


def normal_job_scores(
    conn: Connection, model_version: str, min_layers: int, limit: int
) -> list[tuple[str, int, float, float, float]]:
    """(job, layer, score, f1, f2) of the newest ``limit`` jobs scored by ``model_version`` with at
    least ``min_layers`` layers and no stop alarm: the history a level model is fitted on."""
    s, a = _table(Score), _table(Alarm)
    stopped = select(a.c.printer, a.c.job).where(a.c.level == "stop")
    jobs = (
        select(s.c.printer, s.c.job, func.max(s.c.scored_at).label("last"))
        .where(s.c.model_version == model_version)
        .where(tuple_(s.c.printer, s.c.job).not_in(stopped))
        .group_by(s.c.printer, s.c.job)
        .having(func.count() >= min_layers)
        .order_by(func.max(s.c.scored_at).desc())
        .limit(limit)
        .subquery()
    )
    q = (
        select(s.c.printer, s.c.job, s.c.layer, s.c.score, s.c.f1, s.c.f2)
        .join(jobs, (s.c.printer == jobs.c.printer) & (s.c.job == jobs.c.job))
        .where(s.c.model_version == model_version)
        .order_by(s.c.printer, s.c.job, s.c.layer)
    )
    return [(f"{r.printer}/{r.job}", r.layer, r.score, r.f1, r.f2) for r in conn.execute(q)]


def set_alarm_state(
    conn: Connection, alarm_id: int, state: str, by: str | None, note: str | None
) -> dict[str, Any]:
    """Move an alarm along its state machine (validated by the caller)."""
    t = _table(Alarm)
    values: dict[str, Any] = {"state": state}
    if state == "acknowledged":
        values |= {"acknowledged_at": func.now(), "acknowledged_by": by}
    elif state == "resolved":
        values |= {"resolved_at": func.now()}
    if note:
        values["note"] = note
    row = conn.execute(t.update().where(t.c.id == alarm_id).values(**values).returning(t))
    return dict(row.one()._mapping)


def get_alarm(conn: Connection, alarm_id: int) -> dict[str, Any] | None:
    t = _table(Alarm)
    row = conn.execute(select(t).where(t.c.id == alarm_id)).first()
    return dict(row._mapping) if row else None


def list_alarms(
    conn: Connection, state: str | None = None, job: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    t, a = _table(Alarm), _table(Action)
    last_action = (
        select(a.c.result, a.c.ok)
        .where(a.c.alarm_id == t.c.id)
        .order_by(a.c.id.desc())
        .limit(1)
        .lateral()
    )
    q = (
        select(t, last_action.c.result.label("action_result"), last_action.c.ok.label("action_ok"))
        .outerjoin(last_action, text("true"))
        .order_by(t.c.id.desc())
        .limit(limit)
    )
    if state:
        q = q.where(t.c.state == state)
    if job:
        q = q.where(t.c.job == job)
    return [dict(r._mapping) for r in conn.execute(q)]
