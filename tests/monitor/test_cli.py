"""The monitor CLI: design table and offline replay of a scores CSV."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from monitor.cli import ALARM_COLUMNS, POINT_COLUMNS, app

runner = CliRunner()


def _write_scores(path: Path, extra: bool = False) -> None:
    rng = np.random.default_rng(11)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["printer", "job", "layer", "score", *(["f1", "f2", "defect_area"] if extra else [])]
        )
        for printer, job, shift in (("mk4-01", "job-a", 221), ("mk4-02", "job-b", None)):
            score = 0.5 + 0.05 * rng.gamma(4.0, 0.5, 300)
            if shift:
                score[shift - 1 :] += 0.3  # about 3 sigma of the score
            rows = list(range(1, 301))
            rng.shuffle(rows)  # replay sorts layers within a job
            for layer in rows:
                f = rng.standard_normal(2)
                area = rng.poisson(2.0)
                tail = (
                    [f"{f[0]:.5f}", f"{f[1]:.5f}", "" if layer % 50 == 0 else area] if extra else []
                )
                w.writerow([printer, job, layer, f"{score[layer - 1]:.6f}", *tail])


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_replay_writes_exact_columns_and_finds_the_shift(tmp_path: Path) -> None:
    scores, out = tmp_path / "scores.csv", tmp_path / "out"
    _write_scores(scores)
    res = runner.invoke(app, ["replay", str(scores), "--out", str(out)])
    assert res.exit_code == 0, res.output
    cols, points = _read(out / "chart_points.csv")
    assert tuple(cols) == POINT_COLUMNS == (
        "printer", "job", "layer", "chart", "statistic", "center", "lcl", "ucl", "signal"
    )  # fmt: skip
    acols, alarms = _read(out / "alarms.csv")
    assert tuple(acols) == ALARM_COLUMNS == ("printer", "job", "layer", "chart", "level", "rule")
    # Phase I = first 100 layers of each job; then 3 score charts per layer
    assert min(int(p["layer"]) for p in points) == 101
    assert len(points) == 2 * 200 * 3
    assert {p["signal"] for p in points} == {"true", "false"}
    assert alarms, "the planted shift was missed"
    assert {a["job"] for a in alarms} == {"job-a"}
    first = min(int(a["layer"]) for a in alarms)
    assert 221 <= first <= 225
    assert any(a["level"] == "stop" for a in alarms)


def test_replay_with_calibration_features_and_policy(tmp_path: Path) -> None:
    scores, out = tmp_path / "scores.csv", tmp_path / "out"
    _write_scores(scores, extra=True)
    cal = tmp_path / "cal.json"
    rng = np.random.default_rng(12)
    cal.write_text(json.dumps((0.5 + 0.05 * rng.gamma(4.0, 0.5, 1000)).tolist()))
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[warn]\ncharts = ["cusum", "mewma", "cluster"]\n[episode]\nreset_after = 0\n'
    )
    res = runner.invoke(
        app, ["replay", str(scores), "--out", str(out), "--calibration", str(cal),
              "--policy", str(policy), "--phase1-layers", "50"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    _, points = _read(out / "chart_points.csv")
    by_chart: dict[str, list[int]] = {}
    for p in points:
        by_chart.setdefault(p["chart"], []).append(int(p["layer"]))
    assert set(by_chart) == {"shewhart", "cusum", "mewma", "cluster"}  # shewhart: consecutive stop
    assert min(by_chart["cusum"]) == 1  # score Phase I from the calibration file
    assert min(by_chart["mewma"]) == 51  # features from the job's first 50 layers
    assert len(by_chart["cluster"]) < len(by_chart["mewma"])  # blank areas are skipped
    _, alarms = _read(out / "alarms.csv")
    warn = [a for a in alarms if a["level"] == "warn" and a["chart"] == "cusum"]
    assert len(warn) == 1 and warn[0]["job"] == "job-a" and int(warn[0]["layer"]) >= 221


def test_replay_with_a_model_config_charts_everything_from_layer_one(tmp_path: Path) -> None:
    """A model's config.json gives the score, feature and cluster-area Phase I the live monitor
    would use, so no job layer is spent on Phase I."""
    scores, out = tmp_path / "scores.csv", tmp_path / "out"
    _write_scores(scores, extra=True)
    rng = np.random.default_rng(13)
    model = tmp_path / "config.json"
    model.write_text(json.dumps({"method": "radar", "calibration": {
        "image_scores": (0.5 + 0.05 * rng.gamma(4.0, 0.5, 200)).tolist(),
        "features": rng.standard_normal((200, 2)).tolist(),
        "largest_areas": rng.poisson(2.0, 200).tolist(),
    }}))  # fmt: skip
    policy = tmp_path / "policy.toml"
    policy.write_text('[warn]\ncharts = ["cusum", "t2", "cluster"]\n')
    res = runner.invoke(
        app, ["replay", str(scores), "--out", str(out), "--calibration", str(model),
              "--policy", str(policy)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    _, points = _read(out / "chart_points.csv")
    first = {}
    for p in points:
        first[p["chart"]] = min(first.get(p["chart"], 10**9), int(p["layer"]))
    assert {first[c] for c in ("cusum", "t2", "cluster")} == {1}


def test_replay_reports_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("printer,job,score\np,j,0.1\n")
    res = runner.invoke(app, ["replay", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "missing column(s) ['layer']" in res.output
    policy = tmp_path / "p.toml"
    policy.write_text('[warn]\ncharts = ["ewmaa"]\n')
    scores = tmp_path / "s.csv"
    _write_scores(scores)
    res = runner.invoke(
        app, ["replay", str(scores), "--out", str(tmp_path / "o"), "--policy", str(policy)]
    )
    assert res.exit_code == 2 and "warn.charts.0" in res.output


def test_bad_input_message_survives_a_narrow_terminal_and_a_long_path(tmp_path: Path) -> None:
    """The regression of a fresh clone's `make test`: the same test, run as a user would in a
    24-column terminal from a folder with a 400-character path, still passes (the suite fixes
    its own terminal width; an error panel wrapped inside the asserted message failed it)."""
    deep = tmp_path.joinpath(*(["a-folder-with-a-long-name-" + "x" * 24] * 8))
    deep.mkdir(parents=True)
    assert len(str(deep)) > 400
    env = {**os.environ, "COLUMNS": "24", "TERMINAL_WIDTH": "24", "LINES": "20"}
    test = f"{Path(__file__).resolve()}::test_replay_reports_bad_input"
    cmd = [sys.executable, "-m", "pytest", test, "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*cmd, f"--basetemp={deep / 'tmp'}"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_design_table() -> None:
    res = runner.invoke(app, ["design", "--layers", "500", "--false-alarm-prob", "0.1"])
    assert res.exit_code == 0, res.output
    assert "build ARL0 4,746" in res.output  # 500 / -ln(0.9)
    for chart in ("shewhart", "ewma", "cusum", "t2", "cluster", "consecutive"):
        assert chart in res.output
    res = runner.invoke(
        app, ["design", "--arl0", "370", "--layers", "100", "--warn-false-alarm-prob", "0.9"]
    )
    assert res.exit_code == 0, res.output
    assert "build ARL0 370" in res.output


def test_alarm_annotations_need_both_grafana_url_and_token(tmp_path) -> None:
    from layerwatch.core.settings import Settings
    from monitor.cli import _grafana_hook

    assert _grafana_hook(Settings(home=tmp_path)) is None
    assert _grafana_hook(Settings(home=tmp_path, grafana_url="http://127.0.0.1:9")) is None
    hook = _grafana_hook(
        Settings(home=tmp_path, grafana_url="http://127.0.0.1:9", grafana_token="glsa_x")
    )
    assert callable(hook)
