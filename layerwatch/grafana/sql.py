"""The SQL behind every panel, written once for Grafana and for the HTML report.

Job-scoped queries take a :class:`JobFilter`: the dashboards use Grafana's template variables
(``'$printer'``), the report uses bind parameters (``:printer``), so both read the same rows
the same way. Macros (``$__timeFilter`` …) appear only in the dashboard-only queries, and only
on plain columns: Grafana's macro regex stops at the first ``)`` and splits arguments on ``,``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Axis = Literal["time", "layer"]


@dataclass(frozen=True)
class JobFilter:
    """How a query names the printer and the job: SQL expressions, not values."""

    printer: str
    job: str

    def on(self, alias: str) -> str:
        return f"{alias}.printer = {self.printer} AND {alias}.job = {self.job}"


GRAFANA_JOB = JobFilter("'$printer'", "'$job'")  # single-value variables: Grafana escapes ' only
BOUND_JOB = JobFilter(":printer", ":job")  # SQLAlchemy text() parameters
FLEET_PRINTERS = "IN ($printer)"  # multi-value variable: Grafana quotes and joins the values

LATENCY_COLUMNS = {"model": "latency_ms", "end-to-end": "e2e_latency_ms"}


def percentile(q: float, column: str, alias: str) -> str:
    return f'percentile_cont({q:g}) WITHIN GROUP (ORDER BY {column}) AS "{alias}"'


def latency_percentiles(alias: str) -> list[str]:
    """p50 and p95 of model and end-to-end latency, named like "model p95"."""
    return [
        percentile(q, f"{alias}.{col}", f"{name} p{round(q * 100)}")
        for name, col in LATENCY_COLUMNS.items()
        for q in (0.5, 0.95)
    ]


def latest_scores(f: JobFilter) -> str:
    """One score row per layer: the newest model version's, when a layer was re-scored."""
    return (
        "SELECT DISTINCT ON (s.layer) s.* FROM scores s\n"
        f"  WHERE {f.on('s')}\n"
        "  ORDER BY s.layer, s.scored_at DESC"
    )


def per_layer(columns: Sequence[str], f: JobFilter = GRAFANA_JOB, axis: Axis = "time") -> str:
    """Per-layer series from the job's scores (alias ``s``), on the capture time or the layer."""
    x = 's.captured_at AS "time"' if axis == "time" else "s.layer"
    return f"SELECT {', '.join([x, *columns])}\nFROM ({latest_scores(f)}) s\nORDER BY 1"


def chart(name: str, f: JobFilter = GRAFANA_JOB, axis: Axis = "time") -> str:
    """One control chart: statistic, centre, LCL, UCL (as stored per layer: limits may move)
    and the statistic again where the point signalled, so signals can be drawn apart."""
    columns = (
        'c.statistic, c.center AS centre, c.lcl AS "LCL", c.ucl AS "UCL", '
        "CASE WHEN c.signal THEN c.statistic END AS signal"
    )
    where = f"WHERE {f.on('c')} AND c.chart = '{name}'"
    if axis == "layer":
        return f"SELECT c.layer, {columns}\nFROM chart_points c\n{where}\nORDER BY c.layer"
    return (
        f'SELECT COALESCE(l.captured_at, c.created_at) AS "time", {columns}\n'
        "FROM chart_points c\n"
        "LEFT JOIN layers l ON l.printer = c.printer AND l.job = c.job AND l.layer = c.layer\n"
        f"{where}\n"
        "ORDER BY 1"
    )


def job_summary(f: JobFilter = GRAFANA_JOB) -> str:
    latency = ",\n  ".join(latency_percentiles("s"))
    return (
        f"WITH s AS ({latest_scores(f)}),\n"
        f"  a AS (SELECT a.* FROM alarms a WHERE {f.on('a')})\n"
        "SELECT count(*) AS layers,\n"
        '  count(*) FILTER (WHERE s.anomalous) AS "anomalous layers",\n'
        "  (SELECT count(*) FROM a) AS alarms,\n"
        '  (SELECT min(a.layer) FROM a) AS "first alarm layer",\n'
        f"  {latency}\n"
        "FROM s"
    )


def alarm_table(f: JobFilter = GRAFANA_JOB) -> str:
    """Alarms with their state and the newest action attempt's outcome."""
    return (
        "SELECT a.opened_at AS opened, a.layer, a.chart, a.level, a.rule,\n"
        '  a.channels AS "channels fired", a.state,\n'
        '  a.acknowledged_by AS "acknowledged by", a.resolved_at AS resolved,\n'
        "  act.target || ' ' || act.command AS action, act.attempts,\n"
        '  act.ok AS "action ok", act.status_code AS status, act.result AS "action result"\n'
        "FROM alarms a\n"
        "LEFT JOIN LATERAL (\n"
        "  SELECT x.target, x.command, x.ok, x.status_code, x.result,\n"
        "    count(*) OVER () AS attempts\n"
        "  FROM actions x WHERE x.alarm_id = a.id\n"
        "  ORDER BY x.created_at DESC, x.attempt DESC LIMIT 1\n"
        ") act ON true\n"
        f"WHERE {f.on('a')}\n"
        "ORDER BY a.layer, a.id"
    )


def fired_layers(f: JobFilter = GRAFANA_JOB) -> str:
    """Layers a detector channel flagged (issue 18): which channel(s), and each channel's
    score on the scale of its own threshold (texture = RADAR, geometry = the layer-aware
    channel)."""
    return (
        'SELECT s.layer, s.captured_at AS captured, s.fired AS "channels fired", s.score,\n'
        "  (s.channel_scores->>'texture')::float AS texture,\n"
        "  (s.channel_scores->>'geometry')::float AS geometry\n"
        f"FROM ({latest_scores(f)}) s\n"
        "WHERE s.fired <> ''\n"
        "ORDER BY s.layer"
    )


def alarm_annotations(f: JobFilter = GRAFANA_JOB) -> str:
    """Alarms at the capture time of their layer (so they sit on the chart point), as a
    region until resolved; text and comma-separated tags as Grafana's SQL annotations read."""
    return (
        'SELECT t.at AS "time", t.resolved_at AS timeend, t.text, t.tags FROM (\n'
        "  SELECT COALESCE(l.captured_at, a.opened_at) AS at, a.resolved_at,\n"
        "    format('%s %s alarm at layer %s (%s): %s', upper(a.level), a.chart, a.layer,\n"
        "           COALESCE(a.rule, 'limit'), a.state) AS text,\n"
        "    concat_ws(',', 'alarm', a.level, a.chart, a.state) AS tags\n"
        "  FROM alarms a\n"
        "  LEFT JOIN layers l ON l.printer = a.printer AND l.job = a.job AND l.layer = a.layer\n"
        f"  WHERE {f.on('a')}\n"
        ") t\n"
        "WHERE $__timeFilter(t.at)\n"
        "ORDER BY 1"
    )


# --- template variables ------------------------------------------------------------------

PRINTERS_WITH_JOBS = "SELECT DISTINCT printer FROM jobs ORDER BY 1"
ALL_PRINTERS = "SELECT printer FROM printers ORDER BY 1"
JOBS_OF_PRINTER = (
    "SELECT job AS __value, job || ' (' || status || ')' AS __text\n"
    "FROM jobs WHERE printer = '$printer'\n"
    "ORDER BY started_at DESC"
)

# --- fleet -------------------------------------------------------------------------------


def _count(table: str, where: str, alias: str) -> str:
    return f'(SELECT count(*) FROM {table} WHERE {where}) AS "{alias}"'


def fleet_summary() -> str:
    items = [
        _count("jobs", f"status = 'running' AND printer {FLEET_PRINTERS}", "active jobs"),
        *(
            _count(
                "alarms",
                f"state = 'open' AND level = '{level}' AND printer {FLEET_PRINTERS}",
                f"open {level} alarms",
            )
            for level in ("stop", "warn")
        ),
        _count("scores", f"$__timeFilter(scored_at) AND printer {FLEET_PRINTERS}", "layers scored"),
        _count("dead_letters", "$__timeFilter(created_at)", "dead letters"),
    ]
    return "SELECT\n  " + ",\n  ".join(items)


def active_jobs() -> str:
    return (
        'SELECT j.printer, j.job, j.started_at AS started, j.last_layer_at AS "last layer at",\n'
        "  (SELECT max(l.layer) FROM layers l WHERE l.printer = j.printer AND l.job = j.job)\n"
        '    AS "last layer",\n'
        "  (SELECT count(*) FROM alarms a\n"
        "    WHERE a.printer = j.printer AND a.job = j.job AND a.state = 'open')\n"
        '    AS "open alarms",\n'
        "  floor(extract(epoch from j.started_at) * 1000) AS from_ms\n"
        "FROM jobs j\n"
        f"WHERE j.status = 'running' AND j.printer {FLEET_PRINTERS}\n"
        "ORDER BY j.started_at DESC"
    )


def open_alarms_by_printer() -> str:
    return (
        "SELECT p.printer,\n"
        "  count(a.id) FILTER (WHERE a.level = 'warn') AS warn,\n"
        "  count(a.id) FILTER (WHERE a.level = 'stop') AS stop\n"
        "FROM printers p\n"
        "LEFT JOIN alarms a ON a.printer = p.printer AND a.state = 'open'\n"
        f"WHERE p.printer {FLEET_PRINTERS}\n"
        "GROUP BY p.printer\n"
        "ORDER BY p.printer"
    )


def bucketed(
    time_column: str, table: str, values: Sequence[str], metric: str | None = None, where: str = ""
) -> str:
    """A time-series aggregate per ``$__interval`` bucket (one series per ``metric`` value)."""
    select = [f"$__timeGroupAlias({time_column}, $__interval)"]
    if metric:
        select.append(f"{metric} AS metric")
    conditions = [f"$__timeFilter({time_column})", *([where] if where else [])]
    group = "1, 2" if metric else "1"
    return (
        f"SELECT {', '.join(select)},\n  " + ",\n  ".join(values) + "\n"
        f"FROM {table}\n"
        f"WHERE {' AND '.join(conditions)}\n"
        f"GROUP BY {group}\n"
        f"ORDER BY {group}"
    )


def layers_per_minute() -> str:
    return bucketed(
        "captured_at",
        "layers",
        ['count(*) * 60000.0 / $__interval_ms AS "layers/min"'],
        metric="printer",
        where=f"printer {FLEET_PRINTERS}",
    )


def scorer_latency() -> str:
    return bucketed(
        "s.scored_at", "scores s", latency_percentiles("s"), where=f"s.printer {FLEET_PRINTERS}"
    )


def dead_letters_per_stage() -> str:
    return bucketed("created_at", "dead_letters", ["count(*) AS letters"], metric="stage")


def latest_dead_letters() -> str:
    return (
        'SELECT created_at AS "time", stage, source, field, reason,\n'
        "  encode(key, 'escape') AS key\n"
        "FROM dead_letters\n"
        "WHERE $__timeFilter(created_at)\n"
        "ORDER BY created_at DESC\n"
        "LIMIT 50"
    )
