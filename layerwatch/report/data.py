"""What a job report shows, read from PostgreSQL with the dashboards' own SQL.

The summary, the control charts and the per-layer scores use :mod:`layerwatch.grafana.sql`
with bind parameters instead of Grafana variables, so the report and the dashboards agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, text

from layerwatch.grafana import sql
from layerwatch.grafana.charts import CHARTS, ChartSpec
from scorer.maps import decompress_map


class ReportError(LookupError):
    """The job cannot be reported: unknown, or its name is ambiguous across printers."""


@dataclass
class ChartSeries:
    spec: ChartSpec
    layer: np.ndarray
    statistic: np.ndarray
    centre: np.ndarray
    lcl: np.ndarray  # NaN where the chart has no lower limit
    ucl: np.ndarray
    signal: np.ndarray  # bool


@dataclass
class WorstLayer:
    layer: int
    score: float
    anomalous: bool
    defect_area: float
    largest_area: float
    model_version: str
    captured_at: datetime
    map: np.ndarray | None  # the anomaly map, if the scorer stored one
    fired: str = ""  # the detector channels that flagged the layer ("texture,geometry")


@dataclass
class JobReport:
    printer: str
    job: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    summary: dict[str, Any]
    charts: list[ChartSeries]
    alarms: list[dict[str, Any]]  # each with "actions": [attempts in order]
    worst: list[WorstLayer]
    model_versions: list[str] = field(default_factory=list)


def resolve_printer(conn: Connection, job: str, printer: str | None) -> str:
    q = "SELECT printer FROM jobs WHERE job = :job"
    params: dict[str, Any] = {"job": job}
    if printer is not None:
        q += " AND printer = :printer"
        params["printer"] = printer
    found = list(conn.execute(text(q + " ORDER BY printer"), params).scalars())
    if not found:
        where = f" on printer {printer!r}" if printer else ""
        raise ReportError(f"no job {job!r}{where} in the database")
    if len(found) > 1:
        raise ReportError(f"job {job!r} exists on printers {', '.join(found)}: pass --printer")
    return found[0]


def _array(rows: list[Any], key: str) -> np.ndarray:
    return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)


def _charts(conn: Connection, params: dict[str, str]) -> list[ChartSeries]:
    out = []
    for spec in CHARTS:
        rows = list(
            conn.execute(text(sql.chart(spec.name, sql.BOUND_JOB, "layer")), params).mappings()
        )
        if not rows:
            continue
        out.append(
            ChartSeries(
                spec,
                np.array([r["layer"] for r in rows]),
                _array(rows, "statistic"),
                _array(rows, "centre"),
                _array(rows, "LCL"),
                _array(rows, "UCL"),
                np.array([r["signal"] is not None for r in rows]),
            )
        )
    return out


def _alarms(conn: Connection, params: dict[str, str]) -> list[dict[str, Any]]:
    alarms = [
        dict(r)
        for r in conn.execute(
            text("SELECT * FROM alarms WHERE printer = :printer AND job = :job ORDER BY layer, id"),
            params,
        ).mappings()
    ]
    by_id = {a["id"]: {**a, "actions": []} for a in alarms}
    if by_id:
        actions = conn.execute(
            text("SELECT * FROM actions WHERE alarm_id = ANY(:ids) ORDER BY created_at, attempt"),
            {"ids": list(by_id)},
        ).mappings()
        for act in actions:
            by_id[act["alarm_id"]]["actions"].append(dict(act))
    return list(by_id.values())


def _worst(conn: Connection, params: dict[str, str], n: int) -> list[WorstLayer]:
    rows = conn.execute(
        text(
            f"SELECT s.*, m.png, m.scale FROM ({sql.latest_scores(sql.BOUND_JOB)}) s\n"
            "LEFT JOIN anomaly_maps m ON m.printer = s.printer AND m.job = s.job\n"
            "  AND m.layer = s.layer AND m.model_version = s.model_version\n"
            "ORDER BY s.score DESC, s.layer LIMIT :n"
        ),
        {**params, "n": n},
    ).mappings()
    return [
        WorstLayer(
            r["layer"],
            r["score"],
            r["anomalous"],
            r["defect_area"],
            r["largest_area"],
            r["model_version"],
            r["captured_at"],
            decompress_map(r["png"], r["scale"]) if r["png"] is not None else None,
            r.get("fired") or "",
        )
        for r in rows
    ]


def load_job(conn: Connection, job: str, printer: str | None = None, worst: int = 6) -> JobReport:
    printer = resolve_printer(conn, job, printer)
    params = {"printer": printer, "job": job}
    meta = conn.execute(
        text(
            "SELECT status, started_at, ended_at FROM jobs WHERE printer = :printer AND job = :job"
        ),
        params,
    ).one()
    summary = dict(conn.execute(text(sql.job_summary(sql.BOUND_JOB)), params).mappings().one())
    versions = list(
        conn.execute(
            text(
                "SELECT DISTINCT model_version FROM scores WHERE printer = :printer AND job = :job "
                "ORDER BY 1"
            ),
            params,
        ).scalars()
    )
    return JobReport(
        printer,
        job,
        meta.status,
        meta.started_at,
        meta.ended_at,
        summary,
        _charts(conn, params),
        _alarms(conn, params),
        _worst(conn, params, worst),
        versions,
    )
