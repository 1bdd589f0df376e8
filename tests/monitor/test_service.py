"""The monitor service on the real broker, database and printers: an out-of-control stream
pauses a real OctoPrint print, alarms and actions are stored, restarts duplicate nothing."""

from __future__ import annotations

import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from sqlalchemy import text

from layerwatch.core.embedded import Endpoints, free_port
from layerwatch.core.health import fetch_health
from layerwatch.core.kafka import ensure_topics, producer_config
from layerwatch.core.topics import Topics
from layerwatch.virtual_printer import gcode_print
from monitor.actions.config import load_printers
from monitor.alarms import load_policy
from monitor.service import MonitorConfig, MonitorService
from scorer.messages import ScoreMessage
from storage import db, repository
from storage.models import ModelRecord

RNG = np.random.default_rng(7)
# Isolation-Forest-like calibration scores: right-skewed, around 0.45.
CAL_SCORES = (0.40 + RNG.gamma(4.0, 0.012, 400)).tolist()
CAL_FEATURES = np.column_stack([RNG.normal(1.0, 0.05, 400), RNG.normal(3.0, 0.2, 400)]).tolist()
# Largest defect cluster per calibration image: most have none.
CAL_AREAS = [0] * 300 + RNG.integers(10, 300, 100).tolist()
MODEL = "radar-test"


def _register_model(ep: Endpoints) -> None:
    cal = {"image_scores": CAL_SCORES, "features": CAL_FEATURES, "largest_areas": CAL_AREAS}
    with db.make_engine(ep.database_url).begin() as conn:
        repository.upsert(
            conn, ModelRecord,
            [{"version": MODEL, "method": "radar", "config": {"calibration": cal}, "metrics": {}}],
        )  # fmt: skip


def _layer_scores(n_ok: int, n_bad: int, seed: int = 0) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng(seed)
    ok = [(0.40 + rng.gamma(4.0, 0.012), rng.normal(1.0, 0.05), rng.normal(3.0, 0.2))
          for _ in range(n_ok)]  # fmt: skip
    bad = [(0.80, 2.5, 9.0)] * n_bad  # a defect: far beyond anything in Phase I
    return ok + bad


def _feed(ep: Endpoints, topics: Topics, printer: str, job: str, rows, start: int = 0) -> None:
    """What the scorer does per layer: a scores row, then a score message."""
    now = datetime.now(UTC)
    msgs, db_rows = [], []
    for i, (score, f1, f2) in enumerate(rows, start=start):
        sm = ScoreMessage(
            printer=printer, job=job, layer=i, score=score, anomalous=score > 0.6, f1=f1, f2=f2,
            defect_area=0.0, model_version=MODEL, latency_ms=10.0, captured_at=now.isoformat(),
            scored_at=now.isoformat(), largest_area=0.0,
        )  # fmt: skip
        msgs.append(sm)
        db_rows.append(
            {k: v for k, v in sm.__dict__.items()} | {"captured_at": now, "scored_at": now}
        )
    with db.make_engine(ep.database_url).begin() as conn:
        repository.register_jobs(conn, [(printer, job)])
        repository.upsert_scores(conn, db_rows)
    p = Producer(producer_config(ep.kafka_bootstrap, 1 << 20))
    for sm in msgs:
        p.produce(topics.scores, sm.encode(), sm.key, headers=sm.headers())
    assert p.flush(10) == 0


def _q(ep: Endpoints, sql: str, **kw):
    with db.make_engine(ep.database_url).connect() as conn:
        return conn.execute(text(sql), kw).all()


def _wait(pred, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.25)
    return False


def _service(
    ep: Endpoints, topics: Topics, policy: Path, **kw
) -> tuple[MonitorService, threading.Thread]:
    cfg = MonitorConfig(
        bootstrap=ep.kafka_bootstrap, database_url=ep.database_url, topics=topics,
        policies=load_policy(policy), printers=load_printers(policy), phase1_layers=20, **kw,
    )  # fmt: skip
    svc = MonitorService(cfg)
    th = threading.Thread(target=svc.run, daemon=True)
    th.start()
    return svc, th


def _stop(svc: MonitorService, th: threading.Thread) -> None:
    svc.stop_event.set()
    th.join(30)


@pytest.fixture
def policy(tmp_path: Path, virtual_printer, moonraker, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_OCTOPRINT_KEY", virtual_printer.api_key)
    p = tmp_path / "policy.toml"
    p.write_text(f"""
[stop]
action = "pause"

[printers.vp.target]
kind = "octoprint"
url = "{virtual_printer.url}"
api_key_env = "TEST_OCTOPRINT_KEY"

[printers.klipper.target]
kind = "moonraker"
url = "{moonraker.url}"
retries = 1
backoff_s = 0.1
""")
    return p


def _moves(vp) -> int:
    return vp.serial_log.read_text().count("G1 X")


def test_out_of_control_stream_pauses_a_real_octoprint(
    endpoints: Endpoints, topic_prefix: str, policy: Path, virtual_printer
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 2)
    _register_model(endpoints)
    virtual_printer.print_gcode("monitor.gcode", gcode_print(layers=40))
    svc, th = _service(endpoints, topics, policy)
    try:
        _feed(endpoints, topics, "vp", "job-1", _layer_scores(30, 6))
        assert _wait(lambda: _q(endpoints, "SELECT 1 FROM actions WHERE ok"), 90)
        with virtual_printer.client() as c:
            assert virtual_printer.wait_state(c, ("Paused",), 10) == "Paused"
        time.sleep(1.0)
        moves = _moves(virtual_printer)
        # More bad layers: further stop alarms send pause again; the print must stay paused.
        _feed(endpoints, topics, "vp", "job-1", _layer_scores(0, 4), start=36)
        assert _wait(lambda: len(_q(endpoints, "SELECT 1 FROM chart_points WHERE layer = 39")) > 0)
        time.sleep(2.0)
        assert virtual_printer.job()["state"] == "Paused"
        assert _moves(virtual_printer) == moves
    finally:
        _stop(svc, th)
        with virtual_printer.client() as c:
            c.post("/api/job", json={"command": "cancel"})
    with pytest.raises(RuntimeError, match="closed"):  # stopped: its producer is shut down
        svc._producer.produce(topics.alarms, b"")
    alarms = _q(endpoints, "SELECT id, chart, level, layer, state FROM alarms ORDER BY id")
    stops = [a for a in alarms if a.level == "stop"]
    assert stops and all(a.layer >= 30 for a in alarms), alarms  # nothing before the defect
    assert min(a.layer for a in stops) <= 32  # within 2 layers of the onset
    actions = _q(endpoints, "SELECT alarm_id, target, command, ok, status_code FROM actions")
    assert {a.alarm_id for a in actions} == {a.id for a in stops}
    assert all(a.target == "octoprint" and a.command == "pause" and a.ok for a in actions)
    points = _q(endpoints, "SELECT DISTINCT chart FROM chart_points WHERE job = 'job-1'")
    assert {"shewhart", "ewma", "cusum", "cluster"} <= {p.chart for p in points}
    # every Phase I, the cluster areas' too, came from the model: charts from the first layer
    sql = "SELECT chart, MIN(layer) AS l FROM chart_points WHERE job = 'job-1' GROUP BY chart"
    first = _q(endpoints, sql)
    assert {p.l for p in first} == {0}, first


def test_restart_rebuilds_state_and_duplicates_no_alarm(
    endpoints: Endpoints, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 1)
    _register_model(endpoints)
    policy = tmp_path / "p.toml"
    policy.write_text('[stop]\naction = "none"\n')
    rows = _layer_scores(30, 8)
    svc, th = _service(endpoints, topics, policy)
    try:
        _feed(endpoints, topics, "p", "job-r", rows[:34])
        assert _wait(lambda: _q(endpoints, "SELECT 1 FROM chart_points WHERE layer = 33"))
    finally:
        _stop(svc, th)
    first = _q(endpoints, "SELECT chart, level, episode, layer FROM alarms ORDER BY id")
    ewma_33 = _q(endpoints, "SELECT statistic FROM chart_points WHERE layer=33 AND chart='ewma'")
    assert first, "the shift at layer 30 raised no alarm"
    # A new process: the job's charts are rebuilt from the stored scores, the rest continues.
    svc, th = _service(endpoints, topics, policy)
    try:
        _feed(endpoints, topics, "p", "job-r", rows[34:36], start=34)
        assert _wait(lambda: _q(endpoints, "SELECT 1 FROM chart_points WHERE layer = 35"))
        svc._forget_jobs()  # what a rebalance does (on_revoke): state rebuilt again, no repeats
        assert not svc.jobs
        _feed(endpoints, topics, "p", "job-r", rows[36:], start=36)
        assert _wait(lambda: _q(endpoints, "SELECT 1 FROM chart_points WHERE layer = 37"))
    finally:
        _stop(svc, th)
    after = _q(endpoints, "SELECT chart, level, episode, layer FROM alarms ORDER BY id")
    assert after[: len(first)] == first
    assert len(after) == len({(a.chart, a.level, a.episode) for a in after})
    # Continuity: EWMA at 34 follows from EWMA at 33 as if nothing had happened.
    lam = 0.2
    e34 = _q(endpoints, "SELECT statistic FROM chart_points WHERE layer=34 AND chart='ewma'")
    z34 = (e34[0].statistic - (1 - lam) * ewma_33[0].statistic) / lam
    assert z34 > 3, "EWMA restarted from zero instead of its stored state"
    sql = "SELECT layer, statistic FROM chart_points WHERE chart='ewma' AND layer IN (35, 36)"
    e = {r.layer: r.statistic for r in _q(endpoints, sql)}
    assert (e[36] - (1 - lam) * e[35]) / lam > 3, "EWMA restarted after the revocation"


def test_moonraker_error_is_stored_and_the_alarm_kept(
    endpoints: Endpoints, topic_prefix: str, policy: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 1)
    _register_model(endpoints)
    svc, th = _service(endpoints, topics, policy)
    try:
        _feed(endpoints, topics, "klipper", "job-k", _layer_scores(30, 4))
        assert _wait(lambda: len(_q(endpoints, "SELECT 1 FROM actions")) >= 2, 90)
    finally:
        _stop(svc, th)
    actions = _q(endpoints, "SELECT target, ok, status_code, result, attempt FROM actions")
    first_alarm = [a for a in actions][:2]
    assert all(a.target == "moonraker" and not a.ok and a.status_code == 503 for a in actions)
    assert "Klippy Host not connected" in first_alarm[0].result
    assert sorted({a.attempt for a in actions}) == [1, 2]  # 1 retry configured
    states = _q(endpoints, "SELECT state FROM alarms WHERE level = 'stop'")
    assert states and all(s.state == "open" for s in states)


def _metrics(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }


def test_health_and_metrics_endpoint(
    endpoints: Endpoints, topic_prefix: str, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 2)
    _register_model(endpoints)
    policy = tmp_path / "p.toml"
    policy.write_text('[stop]\naction = "none"\n')
    port = free_port()
    svc, th = _service(endpoints, topics, policy, metrics_port=port)
    try:
        _feed(endpoints, topics, "pm", "job-m", _layer_scores(30, 6))
        assert _wait(lambda: _q(endpoints, "SELECT 1 FROM chart_points WHERE layer = 35"))
        assert _wait(lambda: fetch_health(port).get("last_layer", {}).get("pm/job-m") == 35)
        health = fetch_health(port)
        m = _metrics(port)
    finally:
        _stop(svc, th)
    assert health["ok"] and health["service"] == "monitor" and health["lag"] == 0
    assert m["layerwatch_layers_charted_total"] == 36
    assert m['layerwatch_last_layer{job="job-m",printer="pm"}'] == 35
    stops = _q(endpoints, "SELECT count(*) AS n FROM alarms WHERE level = 'stop'")[0].n
    opened = sum(v for k, v in m.items() if k.startswith("layerwatch_alarms_opened_total{"))
    assert stops > 0 and opened == len(_q(endpoints, "SELECT 1 FROM alarms"))
    assert m["layerwatch_db_errors_total"] == 0
    assert fetch_health(port)["status"] == "down"  # the endpoint stops with the service
