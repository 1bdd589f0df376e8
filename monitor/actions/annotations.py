"""Alarms as Grafana annotations, posted by the monitor when ``grafana_url`` is set.

The dashboards (layerwatch.grafana, above the monitor) read their tag and the job dashboard's
uid from here, so the two sides cannot drift apart.

They are organisation annotations tagged ``layerwatch-alarm``: the Fleet dashboard shows them
through a tag query, on the time of the alarm's layer. The print-job dashboard does not need
them (it reads the alarms table with SQL), so they are not pinned to a dashboard.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from grafana_client import GrafanaApi

JOB_UID = "layerwatch-job"  # the print-job dashboard an annotation links to
ALARM_TAG = "layerwatch-alarm"  # the tag the Fleet dashboard's annotation query selects


def _epoch_ms(t: datetime | float | int | None) -> int:
    if t is None:
        return int(datetime.now(UTC).timestamp() * 1000)
    if isinstance(t, datetime):
        return int(t.timestamp() * 1000)
    return int(t)  # already epoch milliseconds


def alarm_text(alarm: Mapping[str, Any]) -> str:
    """One line a person on shift can act on, with a link to the job's dashboard."""
    level = str(alarm.get("level", "warn"))
    parts = [
        f"{level.upper()} {alarm['chart']} alarm: printer {alarm['printer']}, "
        f"job {alarm['job']}, layer {alarm['layer']}"
    ]
    if alarm.get("rule"):
        parts.append(f"rule {alarm['rule']}")
    if alarm.get("statistic") is not None and alarm.get("limit") is not None:
        parts.append(
            f"statistic {float(alarm['statistic']):.3g} vs limit {float(alarm['limit']):.3g}"
        )
    if alarm.get("action"):
        parts.append(f"action {alarm['action']}")
    query = urlencode({"var-printer": alarm["printer"], "var-job": alarm["job"]})
    link = f'<a href="/d/{JOB_UID}?{html.escape(query)}">open the job</a>'
    return html.escape("; ".join(parts)) + " — " + link


def alarm_tags(alarm: Mapping[str, Any]) -> list[str]:
    return [
        ALARM_TAG,
        str(alarm.get("level", "warn")),
        str(alarm["chart"]),
        f"printer:{alarm['printer']}",
        f"job:{alarm['job']}",
    ]


def post_alarm_annotation(api: GrafanaApi, alarm: Mapping[str, Any]) -> int | None:
    """Post ``alarm`` (an alarms row or AlarmEvent fields: printer, job, layer, chart, level,
    rule, optional statistic, limit, action, and captured_at or opened_at as datetime or epoch
    ms). Returns Grafana's annotation id. Grafana errors propagate: the caller decides whether a
    missing annotation may stop anything (the monitor logs and goes on)."""
    at = alarm.get("captured_at") or alarm.get("opened_at")
    answer = api.annotations.add_annotation(
        time_from=_epoch_ms(at), tags=alarm_tags(alarm), text=alarm_text(alarm)
    )
    return (answer or {}).get("id")


def alarm_annotation_hook(settings) -> Callable[[Mapping[str, Any]], None]:
    """The monitor's ``on_alarm`` hook: one annotation per opened alarm (the monitor logs and
    goes on when Grafana fails)."""
    token = settings.grafana_token.get_secret_value() if settings.grafana_token else None
    api = GrafanaApi.from_url(settings.grafana_url, credential=token)

    def hook(alarm: Mapping[str, Any]) -> None:
        row = dict(alarm)
        if isinstance(row.get("opened_at"), str):
            row["opened_at"] = datetime.fromisoformat(row["opened_at"])
        post_alarm_annotation(api, row)

    return hook
