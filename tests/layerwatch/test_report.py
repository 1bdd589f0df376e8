"""`layerwatch report`: a self-contained HTML report of the sample job, read as the
read-only role (the sample comes from test_grafana_sql.py)."""

from __future__ import annotations

import base64
import importlib.util
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
import typer
from sqlalchemy import create_engine
from typer.testing import CliRunner

from layerwatch.core.settings import get_settings
from layerwatch.grafana.charts import CHARTS
from layerwatch.report import render_report
from layerwatch.report.cli import report
from layerwatch.report.data import ReportError
from storage.models import Job
from storage.repository import upsert


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"_lw_{name}", Path(__file__).with_name(name))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


grafana_sql = _sibling("test_grafana_sql.py")
sample = grafana_sql.sample  # the fixture
PRINTER, JOB, N_LAYERS = grafana_sql.PRINTER, grafana_sql.JOB, grafana_sql.N_LAYERS


class Page(HTMLParser):
    """Collects images and text, and checks that every opened element is closed."""

    VOID: ClassVar[set[str]] = {"meta", "img", "br", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack.pop() == tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> tuple[Page, str]:
    assert html.startswith("<!DOCTYPE html>")
    p = Page()
    p.feed(html)
    p.close()
    assert p.stack == []
    return p, " ".join(" ".join(p.text).split())


def test_report_of_the_sample_job(sample, tmp_path: Path) -> None:
    url, s = sample
    html = render_report(url, JOB)  # printer found from the job
    (tmp_path / "report.html").write_text(html)
    page, text = _parse(html)

    assert len(page.images) == len(CHARTS) + 6  # every chart, six worst layers
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100

    summary = s.scores
    first_alarm = min(a["layer"] for a in s.alarms)
    assert f"{N_LAYERS} layers scored" in text
    assert f"{sum(x['anomalous'] for x in summary)} anomalous layers" in text
    assert f"{first_alarm} first alarm at layer" in text
    p95 = float(np.percentile([x["latency_ms"] for x in summary], 95))
    assert f"{p95:,.1f} ms model latency p95" in text

    # the channels that fired on the alarm's layers (issue 18): geometry for the stop, none
    assert "cusum stop h_stop geometry open" in text and "ewma warn upper – acknowledged" in text
    assert "channels fired" in text and "fired: geometry" in text
    assert "octoprint pause #1 failed (503) octoprint answered 503: busy" in text
    assert "octoprint pause #2 ok (204) paused" in text
    assert "acknowledged by ana" in text

    worst = sorted(summary, key=lambda x: (-x["score"], x["layer"]))[:6]
    captions = re.findall(r"layer (\d+): score", text)
    assert [int(c) for c in captions] == [w["layer"] for w in worst]
    assert "as a heat map" in text


def test_maps_over_layer_images_when_a_pattern_is_given(sample, tmp_path: Path) -> None:
    url, _s = sample
    for layer in range(N_LAYERS):
        cv2.imwrite(
            str(tmp_path / f"layer_{layer:04d}.png"), np.full((128, 128), 90 + layer, np.uint8)
        )
    html = render_report(url, JOB, PRINTER, images=str(tmp_path / "layer_{layer:04d}.png"))
    assert "anomaly map over the layer image" in _parse(html)[1]


def test_unknown_and_ambiguous_jobs(sample, migrated_database) -> None:
    url, _s = sample
    with pytest.raises(ReportError, match="no job 'nope'"):
        render_report(url, "nope")
    engine = create_engine(migrated_database[0])
    with engine.begin() as conn:
        upsert(conn, Job, [{"printer": "voron-02", "job": JOB}])
    engine.dispose()
    with pytest.raises(ReportError, match="pass --printer"):
        render_report(url, JOB)
    assert "benchy" in render_report(url, JOB, PRINTER)


def test_report_command(sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _s = sample
    monkeypatch.setenv("LAYERWATCH_DATABASE_URL", url)
    get_settings.cache_clear()
    app = typer.Typer()
    app.command()(report)
    try:
        out = tmp_path / "out" / "report.html"
        res = CliRunner().invoke(app, [JOB, "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert out.read_text().count("data:image/png;base64,") == len(CHARTS) + 6
        res = CliRunner().invoke(app, ["missing-job", "--out", str(out)])
        assert res.exit_code == 1 and "no job 'missing-job'" in res.output
    finally:
        get_settings.cache_clear()
