"""`layerwatch monitor calibrate` and `monitor design --scores` on real data: the level model
stored in the real database and read back by the monitor's calibration path."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from monitor.calibration import Calibration, model_calibration, with_print_levels
from monitor.levels import LevelModel, simulate_levels
from storage import db, repository
from storage.models import ModelRecord, Score

BIN = Path(sys.executable).parent / "layerwatch"
TRUE = LevelModel(m0=0.0, kappa0=0.3, a0=4.0, b0=0.6, discount=0.97)
RNG_SCORES = np.random.default_rng(0).standard_normal(64)  # the model's Phase I: N(0, 1)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERWATCH_")}
    env |= {"LAYERWATCH_DATABASE_URL": url, "LAYERWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    return subprocess.run(
        [str(BIN), "monitor", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _register(url: str, version: str) -> None:
    config = {"calibration": {"image_scores": RNG_SCORES.tolist()}}
    with db.make_engine(url).begin() as conn:
        repository.upsert(conn, ModelRecord, [{"version": version, "method": "radar",
                                               "config": config, "metrics": {}}])  # fmt: skip


def _write_prints(path: Path, prints: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["printer", "job", "layer", "score"])
        for j, z in enumerate(prints):
            w.writerows(("p1", f"cal-{j}", layer, f"{v:.6f}") for layer, v in enumerate(z))


def test_calibrate_from_a_scores_csv_stores_what_the_monitor_uses(migrated_database, tmp_path):
    url, _ = migrated_database
    _register(url, "radar-test1")
    scores = tmp_path / "normal.csv"
    _write_prints(scores, simulate_levels(TRUE, 40, 60, np.random.default_rng(1)))
    res = _cli(url, "calibrate", "--model-version", "radar-test1", "--scores", str(scores))
    assert res.returncode == 0, res.stderr
    assert "between s.d." in res.stdout and "40 prints, 2400 layers" in res.stdout
    with db.make_engine(url).connect() as conn:
        prints = repository.print_calibration(conn, "radar-test1")
        config = (
            conn.execute(ModelRecord.__table__.select().where(ModelRecord.version == "radar-test1"))
            .one()
            .config
        )
    assert prints is not None and len(prints) == 40 and len(prints[0]) == 60
    first_score = float(scores.read_text().splitlines()[1].split(",")[3])
    assert prints[0][0][0] == pytest.approx(first_score) and np.isnan(prints[0][0][1])
    cal = with_print_levels(model_calibration(config), prints)
    assert cal.levels is not None
    # no features in the CSV: the level model runs on the score itself
    assert cal.levels.between_sd == pytest.approx(TRUE.between_sd, rel=0.35)
    assert cal.levels.within_sd == pytest.approx(TRUE.within_sd, rel=0.2)


def test_calibrate_refuses_an_unknown_model_and_a_missing_source(migrated_database, tmp_path):
    url, _ = migrated_database
    scores = tmp_path / "normal.csv"
    _write_prints(scores, simulate_levels(TRUE, 5, 20, np.random.default_rng(2)))
    res = _cli(url, "calibrate", "--model-version", "radar-nope", "--scores", str(scores))
    assert res.returncode == 1 and "radar-nope" in res.stderr and "models table" in res.stderr
    res = _cli(url, "calibrate", "--model-version", "radar-nope")
    assert res.returncode == 2 and "exactly one of --history, --scores, --simulate" in res.stderr


def test_calibrate_from_history_uses_only_long_jobs_without_a_stop(migrated_database):
    url, _ = migrated_database
    _register(url, "radar-test2")
    now = datetime.now(UTC)
    z = simulate_levels(TRUE, 6, 40, np.random.default_rng(3))
    rows = []
    for j, seq in enumerate(z):
        n = 10 if j == 5 else 40  # job 5 is too short
        rows += [{"printer": "p1", "job": f"j{j}", "layer": t, "model_version": "radar-test2",
                  "score": float(v), "anomalous": False, "f1": 0.0, "f2": 0.0,
                  "defect_area": 0.0, "latency_ms": 1.0, "captured_at": now, "scored_at": now}
                 for t, v in enumerate(seq[:n])]  # fmt: skip
    with db.make_engine(url).begin() as conn:
        repository.register_jobs(conn, {("p1", f"j{j}") for j in range(6)})
        repository.upsert(conn, Score, rows)
        repository.open_alarms(conn, [{"printer": "p1", "job": "j4", "chart": "cusum",
                                       "episode": 1, "layer": 30, "level": "stop",
                                       "rule": None, "state": "open"}])  # fmt: skip
        history = repository.normal_job_scores(conn, "radar-test2", 30, 100)
    assert sorted({row[0] for row in history}) == ["p1/j0", "p1/j1", "p1/j2", "p1/j3"]
    res = _cli(url, "calibrate", "--model-version", "radar-test2", "--history")
    assert res.returncode == 0, res.stderr
    assert "4 prints, 160 layers" in res.stdout


def test_design_on_a_score_stream_reports_the_false_stop_probability(tmp_path):
    scores = tmp_path / "normal.csv"
    _write_prints(scores, simulate_levels(TRUE, 30, 80, np.random.default_rng(4)))
    res = subprocess.run(
        [str(BIN), "monitor", "design", "--scores", str(scores), "--layers", "200",
         "--sim-runs", "40"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = " ".join(res.stdout.split())
    assert "level model" in out and "CUSUM k = 0.5" in out and "P(false stop) =" in out
    assert "on the 30 given prints" in out and "lag-1 autocorrelation" in out
    assert "the centre's memory" in out and "← chosen" in out


def test_without_calibration_prints_the_charts_keep_the_population_centre():
    cal = Calibration()
    assert with_print_levels(cal, None) is cal and with_print_levels(cal, [[0.1] * 5] * 4) is cal


def test_replay_charts_each_job_against_its_own_centre(tmp_path):
    import json

    from typer.testing import CliRunner

    from monitor.cli import app

    cal = tmp_path / "phase1.json"
    cal.write_text(json.dumps(RNG_SCORES.tolist()))
    prints = tmp_path / "normal.csv"
    _write_prints(prints, simulate_levels(TRUE, 20, 50, np.random.default_rng(5)))
    job = tmp_path / "job.csv"
    _write_prints(job, simulate_levels(TRUE, 1, 50, np.random.default_rng(6)) + 1.5)
    out = tmp_path / "out"
    args = ["replay", str(job), "--out", str(out), "--calibration", str(cal)]
    res = CliRunner().invoke(app, [*args, "--calibration-prints", str(prints)])
    assert res.exit_code == 0, res.output
    with (out / "chart_points.csv").open() as fh:
        charts = {row["chart"] for row in csv.DictReader(fh)}
    assert {"level", "cusum"} <= charts
    res = CliRunner().invoke(app, ["replay", str(job), "--out", str(out),
                                   "--calibration-prints", str(prints)])  # fmt: skip
    assert res.exit_code == 2 and "needs --calibration" in res.output
