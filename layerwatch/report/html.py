"""The report page: one self-contained HTML file (inline CSS, images as data: URIs), so it can
be mailed, attached to a ticket or archived with the part without anything else."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

from layerwatch.report.data import JobReport

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#202124;
  margin:0;background:#f6f7f9}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 10px;
  border-bottom:1px solid #e0e0e0;padding-bottom:4px}
.meta{color:#5f6368;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}
.card{border:1px solid #e0e0e0;border-radius:6px;padding:10px 12px}
.card .v{font-size:22px;font-weight:600}.card .k{color:#5f6368;font-size:12px}
.card.bad .v{color:#c62828}
img{max-width:100%;display:block}.chart{margin:6px 0 14px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{background:#fafafa;font-weight:600}
.badge{border-radius:3px;padding:1px 6px;font-size:12px;font-weight:600;color:#fff}
.stop,.open,.failed{background:#c62828}.warn,.acknowledged{background:#ef6c00}
.resolved,.ok{background:#2e7d32}
ul.actions{margin:0;padding-left:16px}
.grid{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}
.grid figure{margin:0;border:1px solid #e0e0e0;border-radius:6px;padding:6px}
figcaption{font-size:12px;color:#5f6368;padding:2px 4px}
.none{color:#5f6368;font-style:italic}
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{escape(alt)}">'


def _time(t: datetime | None) -> str:
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _num(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}"
    return f"{v:,}{unit}"


def _badge(value: str) -> str:
    return f'<span class="badge {escape(value)}">{escape(value)}</span>'


def _summary(r: JobReport) -> str:
    s = r.summary
    cards = [
        ("layers scored", _num(s["layers"]), False),
        ("anomalous layers", _num(s["anomalous layers"]), bool(s["anomalous layers"])),
        ("alarms", _num(s["alarms"]), bool(s["alarms"])),
        ("first alarm at layer", _num(s["first alarm layer"]), s["first alarm layer"] is not None),
        ("model latency p50", _num(s["model p50"], " ms"), False),
        ("model latency p95", _num(s["model p95"], " ms"), False),
        ("end-to-end p50", _num(s["end-to-end p50"], " ms"), False),
        ("end-to-end p95", _num(s["end-to-end p95"], " ms"), False),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card{" bad" if bad else ""}"><div class="v">{v}</div>'
            f'<div class="k">{escape(k)}</div></div>'
            for k, v, bad in cards
        )
        + "</div>"
    )


def _action(a: dict[str, Any]) -> str:
    outcome = "ok" if a["ok"] else "failed"
    status = f" ({a['status_code']})" if a["status_code"] is not None else ""
    return (
        f"<li>{escape(a['target'])} {escape(a['command'])} #{a['attempt']} "
        f"{_badge(outcome)}{status} {escape(a['result'] or '')} "
        f'<span class="meta">{_time(a["created_at"])}</span></li>'
    )


def _alarms(r: JobReport) -> str:
    if not r.alarms:
        return '<p class="none">No alarm during this job.</p>'
    columns = (
        "layer", "chart", "level", "rule", "channels fired", "state", "opened", "handled",
        "actions",
    )  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in columns)
    rows = []
    for a in r.alarms:
        handled = []
        if a["acknowledged_at"]:
            by = f" by {escape(a['acknowledged_by'])}" if a["acknowledged_by"] else ""
            handled.append(f"acknowledged{by} {_time(a['acknowledged_at'])}")
        if a["resolved_at"]:
            handled.append(f"resolved {_time(a['resolved_at'])}")
        if a["note"]:
            handled.append(escape(a["note"]))
        actions = (
            '<ul class="actions">' + "".join(_action(x) for x in a["actions"]) + "</ul>"
            if a["actions"]
            else '<span class="none">none</span>'
        )
        rows.append(
            f"<tr><td>{a['layer']}</td><td>{escape(a['chart'])}</td><td>{_badge(a['level'])}</td>"
            f"<td>{escape(a['rule'] or '')}</td><td>{escape(a.get('channels') or '–')}</td>"
            f"<td>{_badge(a['state'])}</td>"
            f"<td>{_time(a['opened_at'])}</td><td>{'<br>'.join(handled)}</td><td>{actions}</td></tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def page(
    r: JobReport,
    charts: Sequence[tuple[str, bytes]],
    maps: Sequence[tuple[str, bytes]],
    generated: datetime,
    overlay: bool,
) -> str:
    """``charts`` and ``maps``: (caption, PNG) in display order."""
    title = f"LayerWatch report — {r.job} on {r.printer}"
    span = " – ".join(x for x in (_time(r.started_at), _time(r.ended_at)) if x)
    meta = " · ".join(
        x
        for x in (
            f"status {escape(r.status)}",
            span,
            f"model {escape(', '.join(r.model_versions))}" if r.model_versions else "",
            f"generated {_time(generated)}",
        )
        if x
    )
    chart_html = "".join(f'<div class="chart">{_img(png, cap)}</div>' for cap, png in charts) or (
        '<p class="none">No chart points were stored for this job (still in Phase I?).</p>'
    )
    what = "over the layer image" if overlay else "as a heat map (no layer image given)"
    maps_html = (
        '<div class="grid">'
        + "".join(
            f"<figure>{_img(png, cap)}<figcaption>{escape(cap)}</figcaption></figure>"
            for cap, png in maps
        )
        + "</div>"
        if maps
        else '<p class="none">No scored layer.</p>'
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{escape(title)}</h1><p class="meta">{meta}</p>'
        f"<h2>Summary</h2>{_summary(r)}"
        f"<h2>Control charts</h2>{chart_html}"
        f"<h2>Alarms and printer actions</h2>{_alarms(r)}"
        f'<h2>Worst layers</h2><p class="meta">Highest anomaly scores; anomaly map {what}.</p>'
        f"{maps_html}"
        "</main></body></html>\n"
    )
