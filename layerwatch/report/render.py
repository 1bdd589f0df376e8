"""Assemble the job report: data from PostgreSQL, figures, one HTML string."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import create_engine

from layerwatch.grafana.charts import alarm_chart
from layerwatch.report import figures
from layerwatch.report.data import JobReport, WorstLayer, load_job
from layerwatch.report.html import page
from storage.db import normalise_url


def _layer_image(pattern: str | None, layer: int) -> np.ndarray | None:
    """The layer image named by ``pattern`` (``str.format`` with ``layer``), if readable."""
    if pattern is None:
        return None
    path = Path(pattern.format(layer=layer))
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None


def _caption(w: WorstLayer) -> str:
    return (
        f"layer {w.layer}: score {w.score:.4g}, defect area {w.defect_area:.2%} of the layer, "
        f"largest cluster {w.largest_area:,.0f} px"
        + (f", fired: {w.fired.replace(',', ', ')}" if w.fired else "")
        + f" ({w.model_version})"
    )


def build_html(data: JobReport, images: str | None = None) -> str:
    charts = []
    for series in data.charts:
        marks = [
            (a["layer"], a["level"])
            for a in data.alarms
            if alarm_chart(a["chart"]) == series.spec.name
        ]
        charts.append((series.spec.title, figures.control_chart(series, marks)))
    maps, overlay = [], False
    for w in data.worst:
        image = _layer_image(images, w.layer)
        overlay |= image is not None
        maps.append((_caption(w), figures.anomaly_map(w, image)))
    return page(data, charts, maps, datetime.now(UTC), overlay)


def render_report(
    database_url: str,
    job: str,
    printer: str | None = None,
    images: str | None = None,
    worst: int = 6,
) -> str:
    """The HTML report of ``job`` (on ``printer``, needed only if two printers share the job
    name). ``images``: a path pattern such as ``captures/{layer:05d}.png`` to draw the anomaly
    maps over the layer images, which the database does not keep."""
    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as conn:
            data = load_job(conn, job, printer, worst)
    finally:
        engine.dispose()
    return build_html(data, images)
