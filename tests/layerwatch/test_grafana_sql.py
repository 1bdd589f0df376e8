"""Every query of the checked-in dashboards, expanded as Grafana expands it, run on a real
PostgreSQL filled like a monitored print job, as the read-only role Grafana uses.

The sample job (``sample`` fixture, also used by the report tests) has 60 layers scored 30 s
apart, a 5-sigma shift from layer 40, chart points from layer 20 for every chart with limits
that move (EWMA exact limits), a warn alarm and a stop alarm whose pause failed once and then
succeeded, three re-scored layers (two model versions) and dead letters.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from layerwatch.grafana import DEFAULT_OUT
from layerwatch.grafana.charts import CHARTS
from layerwatch.grafana.macros import QueryContext, Variable, expand
from scorer.maps import compress_map
from storage.models import (
    READER_ROLE,
    Action,
    Alarm,
    AnomalyMap,
    ChartPoint,
    DeadLetter,
    Job,
    Layer,
    Printer,
    Score,
)
from storage.repository import upsert

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / DEFAULT_OUT

PRINTER, JOB = "prusa-01", "benchy-0412"
OTHER_PRINTER, QUOTED_JOB = "voron-02", "bob's-bracket"
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
N_LAYERS, PHASE1, SHIFT_AT = 60, 20, 40
CADENCE = timedelta(seconds=30)
RESCORED = (10, 11, 12)  # layers scored by two model versions; the newer one counts
EWMA_LAMBDA, EWMA_L, CUSUM_K, CUSUM_H = 0.2, 2.86, 0.5, 4.0


@dataclass
class Sample:
    """What was written, for the expectations."""

    scores: list[dict[str, Any]]  # newest version per layer, in layer order
    points: dict[str, list[dict[str, Any]]]  # chart -> rows in layer order
    alarms: list[dict[str, Any]] = field(default_factory=list)
    captured: dict[int, datetime] = field(default_factory=dict)


def _charts(z: np.ndarray, f: np.ndarray, area: np.ndarray) -> dict[str, list[dict[str, Any]]]:
    """Chart statistics as the monitor computes them (plain formulas, layers PHASE1..end)."""
    out: dict[str, list[dict[str, Any]]] = {c.name: [] for c in CHARTS}
    ewma, cp, cm, mewma, level = 0.0, 0.0, 0.0, np.zeros(2), 0.0
    for t, layer in enumerate(range(PHASE1, N_LAYERS), start=1):
        x = float(z[layer])
        ewma = EWMA_LAMBDA * x + (1 - EWMA_LAMBDA) * ewma
        width = EWMA_L * math.sqrt(
            EWMA_LAMBDA / (2 - EWMA_LAMBDA) * (1 - (1 - EWMA_LAMBDA) ** (2 * t))
        )
        cp, cm = max(0.0, cp + x - CUSUM_K), max(0.0, cm - x - CUSUM_K)
        cusum = cp if cp >= cm else -cm
        mewma = 0.1 * f[layer] + 0.9 * mewma
        t2 = float(f[layer] @ f[layer])
        level += (x - level) / (t + 1)  # a centre learning the job's mean from a prior at 0
        stats = {
            "shewhart": (x, 0.0, -3.0, 3.0),
            "ewma": (ewma, 0.0, -width, width),
            "cusum": (cusum, 0.0, -CUSUM_H, CUSUM_H),
            "cluster": (float(area[layer]), 40.0, None, 150.0),
            "mewma": (float(mewma @ mewma) * 19.0, 2.0, None, 10.5),
            "t2": (t2, 2.0, None, 11.0),
            "level": (level, 0.0, -1.4, 1.4),
        }
        for chart, (stat, centre, lcl, ucl) in stats.items():
            signal = stat > ucl or (lcl is not None and stat < lcl)
            out[chart].append(
                {
                    "printer": PRINTER,
                    "job": JOB,
                    "layer": layer,
                    "chart": chart,
                    "statistic": stat,
                    "center": centre,
                    "lcl": lcl,
                    "ucl": ucl,
                    "signal": signal,
                    "rule": ("upper" if stat > ucl else "lower") if signal else None,
                }
            )
    return out


def fill_sample(url: str) -> Sample:
    rng = np.random.default_rng(7)
    raw = 0.10 + 0.01 * rng.standard_normal(N_LAYERS)
    raw[SHIFT_AT:] += 0.05
    z = (raw - raw[:PHASE1].mean()) / raw[:PHASE1].std(ddof=1)
    features = rng.standard_normal((N_LAYERS, 2)) + np.where(
        np.arange(N_LAYERS)[:, None] >= SHIFT_AT, 2.5, 0.0
    )
    area = np.where(np.arange(N_LAYERS) >= SHIFT_AT, 260.0, 35.0) + 5 * rng.random(N_LAYERS)
    captured = {i: T0 + i * CADENCE for i in range(N_LAYERS)}
    scores, layers, maps = [], [], []
    for i in range(N_LAYERS):
        row = {
            "printer": PRINTER,
            "job": JOB,
            "layer": i,
            "model_version": "radar-2",
            "score": float(raw[i]),
            "anomalous": bool(z[i] > 3.0),
            "f1": float(features[i, 0]),
            "f2": float(features[i, 1]),
            "defect_area": float(area[i] * 1.4),
            "largest_area": float(area[i]),
            "latency_ms": 38.0 + 0.5 * i,
            "e2e_latency_ms": 850.0 + 10.0 * (i % 7),
            "captured_at": captured[i],
            "scored_at": captured[i] + timedelta(seconds=0.9),
            # issue 18: a layer-aware model's channels; geometry fires from the shift on
            "channel_scores": {"texture": float(z[i]) / 3, "geometry": 1.5 * (i >= SHIFT_AT)},
            "fired": "geometry" if i >= SHIFT_AT else "",
        }
        scores.append(row)
        layers.append(
            {
                "printer": PRINTER,
                "job": JOB,
                "layer": i,
                "z_mm": 0.2 * (i + 1),
                "captured_at": captured[i],
                "width": 64,
                "height": 64,
            }
        )
        yy, xx = np.mgrid[0:64, 0:64]
        blob = np.exp(-((xx - 20 - i % 20) ** 2 + (yy - 40) ** 2) / 60.0) * raw[i] * 10
        png, scale = compress_map(blob.astype(np.float32))
        maps.append(
            {
                "printer": PRINTER,
                "job": JOB,
                "layer": i,
                "model_version": "radar-2",
                "width": 64,
                "height": 64,
                "scale": scale,
                "png": png,
            }
        )
    older = [
        {
            **scores[i],
            "model_version": "radar-1",
            "score": 0.5,
            "scored_at": captured[i] + timedelta(seconds=0.2),
        }
        for i in RESCORED
    ]
    other = [
        {**scores[i], "printer": OTHER_PRINTER, "job": QUOTED_JOB, "anomalous": False}
        for i in range(10)
    ]
    points = _charts(z, features, area)
    engine = create_engine(url)
    try:
        _write(engine, scores + older + other, layers, maps, points, captured)
        with engine.connect() as conn:
            alarms = [
                dict(r._mapping)
                for r in conn.execute(select(Alarm).order_by(Alarm.layer, Alarm.id))
            ]
    finally:
        engine.dispose()
    latest = {s["layer"]: s for s in scores}
    return Sample([latest[i] for i in range(N_LAYERS)], points, alarms, captured)


def _uniform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One executemany needs the same keys in every row."""
    keys = {k for r in rows for k in r}
    return [{k: r.get(k) for k in keys} for r in rows]


def _write(
    engine: Any,
    scores: list[dict[str, Any]],
    layers: list[dict[str, Any]],
    maps: list[dict[str, Any]],
    points: dict[str, list[dict[str, Any]]],
    captured: dict[int, datetime],
) -> None:
    with engine.begin() as conn:
        upsert(
            conn,
            Printer,
            [{"printer": p, "kind": "octoprint"} for p in (PRINTER, OTHER_PRINTER, "spare-03")],
        )
        upsert(
            conn,
            Job,
            _uniform(
                [
                    {
                        "printer": PRINTER,
                        "job": "calib-cube",
                        "status": "completed",
                        "started_at": T0 - timedelta(days=1),
                        "ended_at": T0 - timedelta(hours=20),
                    },
                    {
                        "printer": PRINTER,
                        "job": JOB,
                        "status": "running",
                        "started_at": T0,
                        "last_layer_at": captured[N_LAYERS - 1],
                    },
                    {
                        "printer": OTHER_PRINTER,
                        "job": QUOTED_JOB,
                        "status": "running",
                        "started_at": T0 + timedelta(minutes=5),
                    },
                ]
            ),
        )
        upsert(conn, Layer, layers)
        upsert(
            conn, Layer, [{**r, "printer": OTHER_PRINTER, "job": QUOTED_JOB} for r in layers[:10]]
        )
        upsert(conn, Score, scores)
        upsert(conn, AnomalyMap, maps)
        upsert(conn, ChartPoint, [p for rows in points.values() for p in rows])
        first = {c: next(p["layer"] for p in points[c] if p["signal"]) for c in ("ewma", "cusum")}
        upsert(
            conn,
            Alarm,
            _uniform(
                [
                    {
                        "printer": PRINTER,
                        "job": JOB,
                        "chart": "ewma",
                        "episode": 1,
                        "layer": first["ewma"],
                        "level": "warn",
                        "rule": "upper",
                        "state": "acknowledged",
                        "opened_at": captured[first["ewma"]] + timedelta(seconds=2),
                        "acknowledged_at": captured[first["ewma"]] + timedelta(minutes=1),
                        "acknowledged_by": "ana",
                    },
                    {
                        "printer": PRINTER,
                        "job": JOB,
                        "chart": "cusum",
                        "episode": 1,
                        "layer": first["cusum"],
                        "level": "stop",
                        "rule": "h_stop",
                        "channels": "geometry",
                        "state": "open",
                        "opened_at": captured[first["cusum"]] + timedelta(seconds=2),
                    },
                ]
            ),
            keys=["printer", "job", "chart", "level", "episode"],
        )
        stop_id, opened = conn.execute(
            select(Alarm.id, Alarm.opened_at).where(Alarm.level == "stop")
        ).one()
        upsert(
            conn,
            Action,
            [
                {
                    "alarm_id": stop_id,
                    "target": "octoprint",
                    "command": "pause",
                    "attempt": 1,
                    "request": {"command": "pause", "action": "pause"},
                    "ok": False,
                    "status_code": 503,
                    "result": "octoprint answered 503: busy",
                    "created_at": opened + timedelta(seconds=1),
                },
                {
                    "alarm_id": stop_id,
                    "target": "octoprint",
                    "command": "pause",
                    "attempt": 2,
                    "request": {"command": "pause", "action": "pause"},
                    "ok": True,
                    "status_code": 204,
                    "result": "paused",
                    "created_at": opened + timedelta(seconds=3),
                },
            ],
            keys=["alarm_id", "target", "command", "attempt"],
        )
        upsert(
            conn,
            DeadLetter,
            [
                {
                    "source": f"layerwatch.layers:0:{n}",
                    "stage": stage,
                    "field": fld,
                    "reason": reason,
                    "key": PRINTER.encode(),
                    "headers": {"job": JOB},
                    "payload": b"\x89PNG broken",
                    "created_at": T0 + timedelta(minutes=n),
                }
                for n, (stage, fld, reason) in enumerate(
                    [
                        ("scorer", "image", "not a PNG"),
                        ("scorer", "layer", "missing header layer"),
                        ("monitor", "score", "score is NaN"),
                    ]
                )
            ],
            keys=["source"],
        )


@pytest.fixture
def sample(migrated_database: tuple[str, str]) -> tuple[str, Sample]:
    """(read-only Grafana role URL, what was written)."""
    url, _admin = migrated_database
    written = fill_sample(url)
    reader = make_url(url).set(username=READER_ROLE).render_as_string(hide_password=False)
    return reader, written


# --- running the dashboards --------------------------------------------------------------


def _load(uid: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / f"{uid}.json").read_text(encoding="utf-8"))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def queries(d: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(kind, name, SQL) for every panel target, query variable and SQL annotation."""
    for p in _panels(d["panels"]):
        for t in p.get("targets", []):
            yield "panel", p["title"], t["rawSql"]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            yield "variable", v["name"], v["query"]
    for a in d["annotations"]["list"]:
        if "rawSql" in a.get("target", {}):
            yield "annotation", a["name"], a["target"]["rawSql"]


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def col(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def run_all(url: str, d: dict[str, Any], ctx: QueryContext) -> dict[tuple[str, str], Result]:
    """Each query as Grafana sends it: expanded text, no bind parameters (psycopg leaves ``%``
    alone without parameters), in a read-only role's session."""
    out = {}
    u = make_url(url)
    with psycopg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database
    ) as conn:
        for kind, name, raw in queries(d):
            sql = expand(raw, ctx)
            assert "$" not in sql, f"unexpanded macro or variable in {kind} {name}: {sql}"
            cur = conn.execute(sql)
            columns = [c.name for c in cur.description or []]
            out[kind, name] = Result(columns, [tuple(r) for r in cur.fetchall()])
    return out


def _ctx(printer: str | list[str], job: str | None = None, **kw: Any) -> QueryContext:
    variables = {
        "printer": Variable(
            printer, multi=isinstance(printer, list), include_all=isinstance(printer, list)
        )
    }
    if job is not None:
        variables["job"] = Variable(job)
    return QueryContext(
        time_from=kw.get("time_from", T0 - timedelta(minutes=5)),
        time_to=kw.get("time_to", T0 + timedelta(hours=1)),
        interval=kw.get("interval", timedelta(minutes=1)),
        variables=variables,
    )


def _close(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and math.isclose(x, y))
        for x, y in zip(a, b, strict=True)
    )


def test_job_dashboard_queries_as_the_grafana_role(sample: tuple[str, Sample]) -> None:
    url, s = sample
    res = run_all(url, _load("layerwatch-job"), _ctx(PRINTER, JOB))
    assert all(r.rows for r in res.values()), [k for k, r in res.items() if not r.rows]

    assert res["variable", "printer"].col("printer") == [PRINTER, OTHER_PRINTER]
    jobs = res["variable", "job"]
    assert jobs.columns == ["__value", "__text"]
    assert jobs.col("__value") == [JOB, "calib-cube"]  # newest first
    assert jobs.col("__text")[1] == "calib-cube (completed)"

    for spec in CHARTS:
        pts = s.points[spec.name]
        over_time = res["panel", spec.title]
        assert over_time.columns == ["time", "statistic", "centre", "LCL", "UCL", "signal"]
        assert over_time.col("time") == [s.captured[p["layer"]] for p in pts]
        for column, key in (
            ("statistic", "statistic"),
            ("centre", "center"),
            ("LCL", "lcl"),
            ("UCL", "ucl"),
        ):
            assert _close(over_time.col(column), [p[key] for p in pts]), (spec.name, column)
        signals = [p["statistic"] if p["signal"] else None for p in pts]
        assert _close(over_time.col("signal"), signals)
        by_layer = res["panel", f"{spec.title} (by layer)"]
        assert by_layer.columns[0] == "layer"
        assert by_layer.col("layer") == list(range(PHASE1, N_LAYERS))
        assert by_layer.rows == [
            (p["layer"], *r[1:]) for r, p in zip(over_time.rows, pts, strict=True)
        ]
    ewma_ucl = res["panel", "EWMA of the score"].col("UCL")
    assert ewma_ucl[0] < ewma_ucl[-1]  # exact limits widen: read per layer, not a threshold
    assert any(res["panel", "CUSUM of the score"].col("signal"))

    summary = res["panel", "Job summary"]
    row = dict(zip(summary.columns, summary.rows[0], strict=True))
    assert row["layers"] == N_LAYERS
    assert row["anomalous layers"] == sum(x["anomalous"] for x in s.scores)
    assert row["alarms"] == 2
    assert row["first alarm layer"] == min(a["layer"] for a in s.alarms)
    for name, column in (("model", "latency_ms"), ("end-to-end", "e2e_latency_ms")):
        values = [x[column] for x in s.scores]
        for q in (50, 95):  # percentile_cont interpolates linearly, as numpy's default
            assert math.isclose(row[f"{name} p{q}"], float(np.percentile(values, q)))

    raw = res["panel", "Anomaly score (raw)"]
    assert _close(raw.col("score"), [x["score"] for x in s.scores])  # newest model version
    assert raw.col("anomalous").count(None) == sum(not x["anomalous"] for x in s.scores)
    latency = res["panel", "Latency per layer"]
    assert latency.columns == ["time", "model", "end-to-end"]

    table = res["panel", "Alarms and printer actions"]
    rows = [dict(zip(table.columns, r, strict=True)) for r in table.rows]
    assert [(r["layer"], r["chart"], r["level"], r["state"]) for r in rows] == [
        (a["layer"], a["chart"], a["level"], a["state"]) for a in s.alarms
    ]
    stop = next(r for r in rows if r["level"] == "stop")
    assert (
        stop["action"],
        stop["attempts"],
        stop["action ok"],
        stop["status"],
        stop["action result"],
    ) == ("octoprint pause", 2, True, 204, "paused")
    warn = next(r for r in rows if r["level"] == "warn")
    assert warn["acknowledged by"] == "ana" and warn["action"] is None
    assert (stop["channels fired"], warn["channels fired"]) == ("geometry", None)

    fired = res["panel", "Layers flagged, by channel"]
    assert fired.columns == ["layer", "captured", "channels fired", "score", "texture", "geometry"]
    assert fired.col("layer") == [x["layer"] for x in s.scores if x["fired"]]
    assert set(fired.col("channels fired")) == {"geometry"}
    assert _close(fired.col("geometry"), [1.5] * (N_LAYERS - SHIFT_AT))

    notes = res["annotation", "Alarms"]
    assert notes.columns == ["time", "timeend", "text", "tags"]
    by_layer_time = {s.captured[a["layer"]]: a for a in s.alarms}
    assert set(notes.col("time")) == set(by_layer_time)
    stop_note = next(r for r in notes.rows if "STOP" in r[2])
    assert stop_note[3] == "alarm,stop,cusum,open"
    assert f"layer {next(a['layer'] for a in s.alarms if a['level'] == 'stop')}" in stop_note[2]


def test_time_filter_and_quoting(sample: tuple[str, Sample]) -> None:
    url, _s = sample
    d = _load("layerwatch-job")
    later = _ctx(PRINTER, JOB, time_from=T0 + timedelta(hours=2), time_to=T0 + timedelta(hours=3))
    assert run_all(url, d, later)["annotation", "Alarms"].rows == []  # $__timeFilter applies
    quoted = run_all(url, d, _ctx(OTHER_PRINTER, QUOTED_JOB))  # "bob's": Grafana escapes '
    assert quoted["panel", "Job summary"].rows[0][0] == 10
    assert quoted["variable", "job"].col("__value") == [QUOTED_JOB]


def test_fleet_dashboard_queries_as_the_grafana_role(sample: tuple[str, Sample]) -> None:
    url, _s = sample
    printers = [PRINTER, OTHER_PRINTER, "spare-03"]
    res = run_all(url, _load("layerwatch-fleet"), _ctx(printers))
    assert res["variable", "printer"].col("printer") == sorted(printers)

    summary = res["panel", "Fleet"]
    assert dict(zip(summary.columns, summary.rows[0], strict=True)) == {
        "active jobs": 2,
        "open stop alarms": 1,
        "open warn alarms": 0,
        "layers scored": N_LAYERS + len(RESCORED) + 10,
        "dead letters": 3,
    }

    jobs = res["panel", "Active jobs"]
    active = {r[1]: dict(zip(jobs.columns, r, strict=True)) for r in jobs.rows}
    assert set(active) == {JOB, QUOTED_JOB}
    assert active[JOB]["open alarms"] == 1 and active[JOB]["last layer"] == N_LAYERS - 1
    assert active[JOB]["from_ms"] == T0.timestamp() * 1000

    by_printer = res["panel", "Open alarms by printer"]
    assert by_printer.rows == [(PRINTER, 0, 1), ("spare-03", 0, 0), (OTHER_PRINTER, 0, 0)]

    rate = res["panel", "Layers per minute"]
    assert rate.columns == ["time", "metric", "layers/min"]
    per_printer: dict[str, float] = {}
    for t, printer, value in rate.rows:
        assert t % 60 == 0  # $__timeGroup gives epoch seconds on the bucket start
        per_printer[printer] = per_printer.get(printer, 0.0) + float(value)
    assert per_printer == {PRINTER: N_LAYERS, OTHER_PRINTER: 10}  # 1 min buckets
    assert rate.col("time")[0] == (T0.timestamp() // 60) * 60

    latency = res["panel", "Scorer latency"]
    assert latency.columns == ["time", "model p50", "model p95", "end-to-end p50", "end-to-end p95"]
    assert all(r[2] >= r[1] and r[4] >= r[3] for r in latency.rows)

    dead = res["panel", "Dead letters per stage"]
    totals: dict[str, int] = {}
    for _t, stage, n in dead.rows:
        totals[stage] = totals.get(stage, 0) + n
    assert totals == {"scorer": 2, "monitor": 1}
    latest = res["panel", "Latest dead letters"]
    assert latest.col("reason")[0] == "score is NaN" and latest.col("key")[0] == PRINTER


def test_one_printer_selected_filters_the_fleet(sample: tuple[str, Sample]) -> None:
    url, _s = sample
    res = run_all(url, _load("layerwatch-fleet"), _ctx([OTHER_PRINTER]))
    assert res["panel", "Active jobs"].col("job") == [QUOTED_JOB]
    assert res["panel", "Fleet"].rows[0][:3] == (1, 0, 0)
