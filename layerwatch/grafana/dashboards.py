"""The LayerWatch dashboards, built with grafana-foundation-sdk.

* **Print job** (``layerwatch-job``): for one ``$printer``/``$job``, every control chart with
  its stored centre line and limits (over capture time, with alarm annotations, and over the
  layer index), the alarms with their printer actions, the raw score and the latencies.
* **Fleet** (``layerwatch-fleet``): active jobs, open alarms by printer, throughput, scorer
  latency percentiles and dead letters.

``layerwatch grafana export`` writes :func:`render` of each to JSON; a test keeps the checked-in
files equal to it and another runs every query on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import barchart, stat, table, timeseries, trend
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from layerwatch.grafana import sql
from layerwatch.grafana.charts import CHARTS, ChartSpec
from layerwatch.grafana.sdk import DATASOURCE, SQL, Format
from monitor.actions.annotations import ALARM_TAG, JOB_UID

FLEET_UID = "layerwatch-fleet"
TAG = "layerwatch"

P = TypeVar("P", timeseries.Panel, trend.Panel, table.Panel, stat.Panel, barchart.Panel)


@dataclass
class DashboardSpec:
    """An SDK dashboard plus what the SDK cannot model: SQL annotations (name → SQL)."""

    builder: db.Dashboard
    sql_annotations: dict[str, str] = field(default_factory=dict)


# --- field styling ------------------------------------------------------------------------


def _prop(id_: str, value: Any) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val=id_, value=value)


def _color(c: str) -> dm.DynamicConfigValue:
    return _prop("color", {"mode": "fixed", "fixedColor": c})


DASHED = _prop("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})
NO_POINTS = _prop("custom.showPoints", "never")
THIN = _prop("custom.lineWidth", 1)


def _control_styles(panel: P, statistic: str) -> P:
    """Statistic in blue, centre line solid green, limits dashed red, signals as red dots."""
    return (
        panel.override_by_name("statistic", [_prop("displayName", statistic), _color("blue")])
        .override_by_name("centre", [_color("green"), THIN, NO_POINTS])
        .override_by_name("LCL", [_color("red"), DASHED, THIN, NO_POINTS])
        .override_by_name("UCL", [_color("red"), DASHED, THIN, NO_POINTS])
        .override_by_name(
            "signal",
            [
                _color("red"),
                _prop("custom.drawStyle", "points"),
                _prop("custom.pointSize", 9),
                _prop("custom.showPoints", "always"),
            ],
        )
    )


def _legend() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .display_mode(cm.LegendDisplayMode.LIST)
        .placement(cm.LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def _tooltip() -> cb.VizTooltipOptions:
    return cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.NONE)


def _panel(
    kind: type[P],
    title: str,
    query: str,
    fmt: Format = "table",
    description: str = "",
    height: int = 8,
    width: int = 12,
) -> P:
    panel = kind().title(title).datasource(DATASOURCE).with_target(SQL(query, fmt))
    if description:
        panel = panel.description(description)
    return panel.height(height).span(width)


def _table(title: str, query: str, description: str, width: int = 12) -> table.Panel:
    panel = _panel(table.Panel, title, query, description=description, width=width)
    return panel.show_header(True).cell_height(cm.TableCellHeight.SM)


def _lines(kind: type[P], title: str, query: str, fmt: Format, description: str = "") -> P:
    """A time series or trend panel: lines with points, legend and shared tooltip."""
    return (
        _panel(kind, title, query, fmt, description)
        .legend(_legend())
        .tooltip(_tooltip())
        .line_width(2)
        .show_points(cm.VisibilityMode.AUTO)
        .point_size(4)
        .span_nulls(True)
    )


def control_chart(spec: ChartSpec, axis: sql.Axis) -> timeseries.Panel | trend.Panel:
    """One control chart panel; the same SQL pattern for every chart and both axes."""
    query = sql.chart(spec.name, axis=axis)
    if axis == "time":
        panel = _lines(timeseries.Panel, spec.title, query, "time_series", spec.description)
    else:
        title = f"{spec.title} (by layer)"
        panel = _lines(trend.Panel, title, query, "table", spec.description).x_field("layer")
    return _control_styles(panel.axis_label(spec.statistic), spec.statistic)


def _mapping(values: dict[str, tuple[str, str]]) -> dm.ValueMap:
    return dm.ValueMap({k: dm.ValueMappingResult(text=t, color=c) for k, (t, c) in values.items()})


COLOR_TEXT = _prop("custom.cellOptions", {"type": "color-text"})
LEVELS = _mapping({"warn": ("warn", "orange"), "stop": ("STOP", "red")})
STATES = _mapping(
    {
        "open": ("open", "red"),
        "acknowledged": ("acknowledged", "orange"),
        "resolved": ("resolved", "green"),
    }
)
OK = _mapping({"true": ("ok", "green"), "false": ("failed", "red")})


def _mapped(panel: P, column: str, mapping: dm.ValueMap) -> P:
    return panel.override_by_name(column, [_prop("mappings", [mapping]), COLOR_TEXT])


def _stat(title: str, query: str, height: int = 4) -> stat.Panel:
    return (
        _panel(stat.Panel, title, query, height=height, width=24)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.NONE)
        .thresholds(
            db.ThresholdsConfig()
            .mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(None, "text")])
        )
    )


def _alarm_thresholds(panel: P, *columns: str) -> P:
    steps = [dm.Threshold(None, "green"), dm.Threshold(1, "red")]
    config = {"mode": dm.ThresholdsMode.ABSOLUTE, "steps": steps}
    for c in columns:
        panel = panel.override_by_name(c, [_prop("thresholds", config)])
    return panel


def _variable(name: str, label: str, query: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dm.VariableSort.DISABLED)
    )


def _link(title: str, uid: str) -> db.DashboardLink:
    return (
        db.DashboardLink(title)
        .type(dm.DashboardLinkType.LINK)
        .url(f"/d/{uid}")
        .icon("dashboard")
        .keep_time(True)
        .include_vars(False)
        .target_blank(False)
        .as_dropdown(False)
    )


def _base(uid: str, title: str, description: str, time_from: str, link: db.DashboardLink):
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .readonly()
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .time(time_from, "now")
        .refresh("30s")
        .link(link)
    )


# --- print job ----------------------------------------------------------------------------


def job_dashboard() -> DashboardSpec:
    d = (
        _base(
            JOB_UID,
            "LayerWatch — print job",
            "Control charts, alarms and latencies of one print job. Set the time range to the "
            "job (open it from the Fleet dashboard's active jobs to get it set).",
            "now-12h",
            _link("Fleet", FLEET_UID),
        )
        .with_variable(_variable("printer", "Printer", sql.PRINTERS_WITH_JOBS))
        .with_variable(_variable("job", "Job", sql.JOBS_OF_PRINTER))
        .annotation(
            db.AnnotationQuery()
            .name("Alarms")
            .datasource(DATASOURCE)
            .enable(True)
            .hide(False)
            .icon_color("red")
        )
    )
    summary = _alarm_thresholds(
        _stat("Job summary", sql.job_summary()), "alarms", "anomalous layers"
    ).override_by_regexp(".* p(50|95)", [_prop("unit", "ms"), _prop("decimals", 1)])
    d = d.with_panel(summary)
    d = d.with_row(db.Row("Control charts over time"))
    for spec in CHARTS:
        d = d.with_panel(control_chart(spec, "time"))
    by_layer = db.Row("Control charts by layer").collapsed(True)
    for spec in CHARTS:
        by_layer = by_layer.with_panel(control_chart(spec, "layer"))
    d = d.with_row(by_layer)
    alarms = _table(
        "Alarms and printer actions",
        sql.alarm_table(),
        "Every alarm of the job with its state and the newest attempt of its printer action "
        "(attempts counts all of them).",
        width=24,
    )
    for column, mapping in (("level", LEVELS), ("state", STATES), ("action ok", OK)):
        alarms = _mapped(alarms, column, mapping)
    d = d.with_row(db.Row("Alarms")).with_panel(alarms)
    score = _lines(
        timeseries.Panel,
        "Anomaly score (raw)",
        sql.per_layer(["s.score", "CASE WHEN s.anomalous THEN s.score END AS anomalous"]),
        "time_series",
        "The scorer's per-layer score; red dots are layers it flagged.",
    ).override_by_name(
        "anomalous",
        [_color("red"), _prop("custom.drawStyle", "points"), _prop("custom.pointSize", 8)],
    )
    latency = _lines(
        timeseries.Panel,
        "Latency per layer",
        sql.per_layer([f's.{col} AS "{name}"' for name, col in sql.LATENCY_COLUMNS.items()]),
        "time_series",
        "Model time for the layer, and capture → score stored (end to end).",
    ).unit("ms")
    fired = _table(
        "Layers flagged, by channel",
        sql.fired_layers(),
        "Layers a detector channel flagged: texture (RADAR) or geometry (the layer compared "
        "with the previous layer and the expected outline), with each channel's score. Empty "
        "for a model without references.",
        width=24,
    )
    d = d.with_row(db.Row("Scorer")).with_panel(score).with_panel(latency).with_panel(fired)
    return DashboardSpec(d, {"Alarms": sql.alarm_annotations()})


# --- fleet --------------------------------------------------------------------------------


def fleet_dashboard() -> DashboardSpec:
    printer = (
        _variable("printer", "Printer", sql.ALL_PRINTERS)
        .multi(True)
        .include_all(True)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )
    d = (
        _base(
            FLEET_UID,
            "LayerWatch — fleet",
            "All printers: active jobs, open alarms, throughput, scorer latency, dead letters.",
            "now-6h",
            _link("Print job", JOB_UID),
        )
        .with_variable(printer)
        .annotation(
            db.AnnotationQuery()
            .name("Alarms (posted by the monitor)")
            .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(False)
            .icon_color("red")
            .target(
                db.AnnotationTarget().type("tags").tags([ALARM_TAG]).match_any(False).limit(500)
            )
        )
    )
    summary = _alarm_thresholds(
        _stat("Fleet", sql.fleet_summary()), "open stop alarms", "open warn alarms", "dead letters"
    )
    job_link = {
        "title": "Open the print job",
        "url": f"/d/{JOB_UID}?var-printer=${{__data.fields.printer}}"
        "&var-job=${__value.raw}&from=${__data.fields.from_ms}&to=now",
    }
    jobs = (
        _table(
            "Active jobs",
            sql.active_jobs(),
            "Running jobs; click a job to open its dashboard over its run.",
            width=14,
        )
        .override_by_name("job", [_prop("links", [job_link])])
        .override_by_name("from_ms", [_prop("custom.hidden", True)])
    )
    jobs = _alarm_thresholds(jobs, "open alarms").override_by_name(
        "open alarms", [_prop("custom.cellOptions", {"type": "color-background"})]
    )
    alarms = (
        _panel(barchart.Panel, "Open alarms by printer", sql.open_alarms_by_printer(), width=10)
        .x_field("printer")
        .stacking(cm.StackingMode.NORMAL)
        .legend(_legend())
        .tooltip(_tooltip())
        .override_by_name("warn", [_color("orange")])
        .override_by_name("stop", [_color("red")])
    )
    throughput = _lines(
        timeseries.Panel,
        "Layers per minute",
        sql.layers_per_minute(),
        "time_series",
        "Layers captured per minute and printer.",
    ).interval("1m")
    latency = _lines(
        timeseries.Panel,
        "Scorer latency",
        sql.scorer_latency(),
        "time_series",
        "p50/p95 of the model time and of capture → score stored, per interval.",
    ).unit("ms")
    dead = (
        _lines(
            timeseries.Panel,
            "Dead letters per stage",
            sql.dead_letters_per_stage(),
            "time_series",
            "Records that could not be processed, by stage.",
        )
        .draw_style(cm.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    )
    latest = _table(
        "Latest dead letters",
        sql.latest_dead_letters(),
        "Newest 50 in the time range, with the reason.",
    )
    d = (
        d.with_panel(summary)
        .with_panel(jobs)
        .with_panel(alarms)
        .with_panel(throughput)
        .with_panel(latency)
        .with_panel(dead)
        .with_panel(latest)
    )
    return DashboardSpec(d)


DASHBOARDS: dict[str, Callable[[], DashboardSpec]] = {
    JOB_UID: job_dashboard,
    FLEET_UID: fleet_dashboard,
}


# --- JSON ---------------------------------------------------------------------------------


def _number_panels(panels: Sequence[dict[str, Any]], start: int = 1) -> int:
    """Stable panel ids in layout order (rows and the panels inside collapsed rows)."""
    n = start
    for p in panels:
        p["id"] = n
        n += 1
        n = _number_panels(p.get("panels", []), n)
    return n


def render(spec: DashboardSpec) -> dict[str, Any]:
    """The dashboard model as Grafana stores it (no API wrapper)."""
    d: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(spec.builder.build()))
    _number_panels(d["panels"])
    for ann in d.get("annotations", {}).get("list", []):
        if (query := spec.sql_annotations.get(ann["name"])) is not None:
            ann["target"] = SQL(query, "table").ref_id("Anno").build().to_json()
    return d


def dump(d: dict[str, Any]) -> str:
    return json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def all_dashboards() -> dict[str, dict[str, Any]]:
    return {uid: render(make()) for uid, make in DASHBOARDS.items()}
