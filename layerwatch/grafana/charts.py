"""The control charts the monitor writes to ``chart_points``, in display order.

One list serves the dashboards and the HTML report, so a chart added to the monitor is added
here once. Names are the monitor's chart names (``monitor.design.WarnChart``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChartSpec:
    name: str  # chart_points.chart
    title: str
    statistic: str  # what the plotted statistic is, for axis labels and legends
    description: str


CHARTS: tuple[ChartSpec, ...] = (
    ChartSpec(
        "shewhart",
        "Anomaly score — individuals chart",
        "z",
        "The layer's anomaly score normalised by the Phase I mean and sigma (with a level "
        "model: its deviation from the job's own predicted score, in sigma of that prediction), "
        "against its centre line and control limits. Red points are signals (limit or run rule).",
    ),
    ChartSpec(
        "ewma",
        "EWMA of the score",
        "EWMA z",
        "Exponentially weighted moving average of z: detects small persistent shifts. The "
        "limits widen over the first layers (exact limits) and are read per layer.",
    ),
    ChartSpec(
        "cusum",
        "CUSUM of the score",
        "C+ / −C−",
        "Two-sided tabular CUSUM: the larger of C+ and −C− against ±h.",
    ),
    ChartSpec(
        "level",
        "The job's own centre",
        "level (z)",
        "Where this print's normal score sits (the level model's estimate after each layer, "
        "in z units), against the range of normal prints (mean ± 2 between-print s.d.). It "
        "starts at the model's prior, learns from the job's layers and is held while a chart "
        "is out of control. Only with a level model (`layerwatch monitor calibrate`).",
    ),
    ChartSpec(
        "cluster",
        "Largest defect cluster",
        "area (px)",
        "Area of the largest connected defect region of the layer against its upper limit.",
    ),
    ChartSpec(
        "mewma",
        "MEWMA of the features",
        "T² of EWMA",
        "Multivariate EWMA of the two RADAR features (f1, f2) against its upper limit h.",
    ),
    ChartSpec(
        "t2",
        "Hotelling T² of the features",
        "T²",
        "Hotelling T² of the two RADAR features against the Phase II upper limit.",
    ),
)

# Alarms named after a stop criterion rather than a chart, and the chart they come from.
ALARM_SOURCE = {"consecutive": "shewhart"}


def alarm_chart(alarm_chart_name: str) -> str:
    """The chart an alarm belongs on (``consecutive`` stop alarms sit on the Shewhart chart)."""
    return ALARM_SOURCE.get(alarm_chart_name, alarm_chart_name)
