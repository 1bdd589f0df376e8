"""`layerwatch alarms list|ack|resolve` on the real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from storage import db, repository

BIN = Path(sys.executable).parent / "layerwatch"


def _cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERWATCH_")}
    env |= {"LAYERWATCH_DATABASE_URL": url, "LAYERWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    return subprocess.run(
        [str(BIN), "alarms", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_alarm_lifecycle(migrated_database: tuple[str, str]) -> None:
    url, _ = migrated_database
    with db.make_engine(url).begin() as conn:
        [(alarm_id, new)] = repository.open_alarms(conn, [{
            "printer": "p1", "job": "j1", "chart": "cusum", "episode": 1, "layer": 31,
            "level": "stop", "rule": "h_stop", "state": "open", "channels": "geometry",
        }])  # fmt: skip
        repository.record_actions(conn, [{
            "alarm_id": alarm_id, "target": "octoprint", "command": "pause", "request": {},
            "ok": True, "status_code": 204, "result": "ok",
        }])  # fmt: skip
    assert new
    res = _cli(url, "list", "--state", "open")
    assert res.returncode == 0, res.stderr
    assert "cusum" in res.stdout and "ok: ok" in res.stdout
    assert "fired" in res.stdout and "geometry" in res.stdout  # the channel behind the alarm
    assert _cli(url, "ack", str(alarm_id), "--by", "ana").returncode == 0
    assert "acknowledged" in _cli(url, "list").stdout
    again = _cli(url, "ack", str(alarm_id))
    assert again.returncode == 1 and "cannot go from acknowledged to acknowledged" in again.stderr
    assert _cli(url, "resolve", str(alarm_id), "--note", "nozzle cleaned").returncode == 0
    with db.make_engine(url).connect() as conn:
        alarm = repository.get_alarm(conn, alarm_id)
    assert alarm["state"] == "resolved" and alarm["acknowledged_by"] == "ana"
    assert alarm["note"] == "nozzle cleaned" and alarm["resolved_at"] is not None
    assert _cli(url, "resolve", "999999").returncode == 1
