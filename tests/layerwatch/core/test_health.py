"""The health and metrics endpoint both services serve: what /health says, and when."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from layerwatch.core.embedded import free_port
from layerwatch.core.health import MetricsServer, ServiceMetrics, fetch_health, serve_metrics
from layerwatch.core.retry import Backoff


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def served():
    metrics = ServiceMetrics("svc")
    server = MetricsServer(metrics, free_port(), "127.0.0.1")
    try:
        yield metrics, server.port
    finally:
        server.close()


def test_health_follows_the_service_through_an_outage(served) -> None:
    metrics, port = served
    code, body = _get(port, "/health")
    assert code == 503 and json.loads(body)["status"] == "starting"
    metrics.health.running()
    metrics.set_lag({0: 3, 1: 4})
    code, body = _get(port, "/health")
    snap = json.loads(body)
    assert code == 200 and snap["ok"] and snap["lag"] == 7 and snap["service"] == "svc"
    assert metrics.waiting("database", "connection refused") is True
    assert metrics.waiting("database", "connection refused") is False  # same outage: not first
    snap = fetch_health(port)
    assert snap["status"] == "waiting" and snap["waiting_for"] == "database"
    assert "connection refused" in snap["last_error"]
    assert metrics.progress() is not None  # the outage ended, with its length
    assert fetch_health(port)["ok"]
    code, text = _get(port, "/metrics")
    text = text.decode()
    assert code == 200
    assert "layerwatch_db_errors_total 2.0" in text
    assert 'layerwatch_consumer_lag{partition="1"} 4.0' in text
    assert "layerwatch_service_ok 1.0" in text


def test_nothing_listening_is_down_and_port_zero_serves_nothing() -> None:
    port = free_port()
    snap = fetch_health(port, timeout=1)
    assert snap["status"] == "down" and not snap["ok"]
    assert serve_metrics(ServiceMetrics("x"), 0, "127.0.0.1") is None


def test_closed_server_frees_its_port() -> None:
    metrics = ServiceMetrics("again")
    port = free_port()
    MetricsServer(metrics, port, "127.0.0.1").close()
    MetricsServer(metrics, port, "127.0.0.1").close()  # the port is free again


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(first=0.5, cap=4.0, jitter=0.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    jittered = Backoff(first=1.0, jitter=0.2)
    assert 0.8 <= jittered.next() <= 1.2
