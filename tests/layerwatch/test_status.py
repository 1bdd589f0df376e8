"""`layerwatch status` against running services: both services and both servers, exit 0 while
all answer, exit 1 when one is down."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from layerwatch.core.embedded import Endpoints, free_port
from layerwatch.core.health import fetch_health
from layerwatch.core.kafka import ensure_topics
from layerwatch.core.settings import Settings
from layerwatch.core.topics import Topics
from layerwatch.status import ServicesFile, service_ports
from monitor.service import MonitorConfig, MonitorService
from scorer.service import ScorerService, ServiceConfig

BIN = Path(sys.executable).parent / "layerwatch"


def _status(env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LAYERWATCH_")} | env
    return subprocess.run(
        [str(BIN), "status"], capture_output=True, text=True, env=full, timeout=60
    )


def _wait_ok(port: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fetch_health(port, timeout=1).get("ok"):
            return True
        time.sleep(0.2)
    return False


def test_status_shows_both_services_and_fails_when_one_is_down(
    endpoints: Endpoints, topic_prefix: str, quick_model, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 2)
    ports = {"scorer-0": free_port(), "monitor": free_port()}
    scorer = ScorerService(quick_model, ServiceConfig(
        bootstrap=endpoints.kafka_bootstrap, database_url=endpoints.database_url, topics=topics,
        max_image_pixels=1 << 20, max_message_bytes=1 << 22, metrics_port=ports["scorer-0"],
    ))  # fmt: skip
    monitor = MonitorService(MonitorConfig(
        bootstrap=endpoints.kafka_bootstrap, database_url=endpoints.database_url, topics=topics,
        metrics_port=ports["monitor"],
    ))  # fmt: skip
    threads = {s: threading.Thread(target=s.run, daemon=True) for s in (scorer, monitor)}
    for th in threads.values():
        th.start()
    home = tmp_path / "home"
    ServicesFile(home).write(ports)
    env = {
        "LAYERWATCH_HOME": str(home), "LAYERWATCH_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "LAYERWATCH_DATABASE_URL": endpoints.database_url,
    }  # fmt: skip
    try:
        assert _wait_ok(ports["scorer-0"]) and _wait_ok(ports["monitor"])
        res = _status(env)
        assert res.returncode == 0, res.stdout + res.stderr
        lines = res.stdout.splitlines()
        for name in ("kafka", "postgres"):
            assert any(name in ln and "external" in ln for ln in lines), res.stdout
        for name, port in ports.items():
            assert any(name in ln and "ok" in ln and str(port) in ln for ln in lines), res.stdout
    finally:
        monitor.stop_event.set()
        threads[monitor].join(30)
    try:
        res = _status(env)
        assert res.returncode == 1
        assert any("monitor" in ln and "down" in ln for ln in res.stdout.splitlines()), res.stdout
        assert any("scorer-0" in ln and "ok" in ln for ln in res.stdout.splitlines())
    finally:
        scorer.stop_event.set()
        threads[scorer].join(30)


def test_status_without_servers_or_services_fails(tmp_path: Path) -> None:
    res = _status({"LAYERWATCH_HOME": str(tmp_path), "LAYERWATCH_METRICS_PORT": "0",
                   "LAYERWATCH_MONITOR_METRICS_PORT": "0"})  # fmt: skip
    assert res.returncode == 1
    assert res.stdout.count("stopped") == 2 and "Traceback" not in res.stderr


def test_up_gives_every_service_its_own_port() -> None:
    s = Settings(metrics_port=9464, monitor_metrics_port=9466)
    assert service_ports(s, 3) == {"scorer-0": 9464, "scorer-1": 9465, "scorer-2": 9467,
                                   "monitor": 9466}  # fmt: skip
    assert service_ports(Settings(metrics_port=0), 2, monitor=False) == {
        "scorer-0": 0, "scorer-1": 0,
    }  # fmt: skip
