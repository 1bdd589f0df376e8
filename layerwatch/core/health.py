"""The health and Prometheus endpoint every LayerWatch service serves (scorer and monitor).

One small HTTP server per process, on the port the settings give: ``/metrics`` is the
Prometheus text of the service's own registry, ``/health`` a JSON object saying whether the
service makes progress (200) or is waiting for a server it needs (503), with its consumer lag
and what it last did. ``layerwatch status`` and the fault benchmarks read ``/health``; a
readiness probe can read either. The state lives in :class:`Health`, which the service's loop
updates and the server thread only reads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)


class Health:
    """What a service reports about itself: running, or waiting for the database or Kafka.

    ``waiting(what, error)`` is called on each failed attempt while an outage lasts and logs
    only its first; ``progress()`` after each durable batch ends the outage (and logs how long
    it lasted), so a service that retries every few seconds writes two lines per outage.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self._lock = threading.Lock()
        self.state = "starting"
        self.waiting_for: str | None = None
        self.waiting_since: float | None = None
        self.last_error: str | None = None
        self.last_progress: float | None = None
        self.batches = 0
        self.lag: dict[int, int] = {}
        self.details: dict[str, Any] = {}

    def running(self) -> None:
        with self._lock:
            if self.state == "starting":
                self.state = "ok"

    def stopping(self) -> None:
        with self._lock:
            self.state = "stopping"

    def waiting(self, what: str, error: str) -> bool:
        """Record a failed attempt on ``what``; True on the first of an outage."""
        with self._lock:
            first = self.waiting_for != what
            if first:
                self.waiting_for, self.waiting_since = what, time.monotonic()
            self.state, self.last_error = "waiting", f"{what}: {error}"
        return first

    def progress(self) -> float | None:
        """A batch was made durable; returns how long the outage it ends lasted, if any."""
        with self._lock:
            self.last_progress = time.monotonic()
            self.batches += 1
            ended = None
            if self.waiting_since is not None:
                ended = self.last_progress - self.waiting_since
            self.waiting_for = self.waiting_since = None
            if self.state in ("starting", "waiting"):
                self.state = "ok"
        return ended

    def reachable(self, what: str) -> None:
        """``what`` answered again (without a batch to prove it, e.g. the broker while idle)."""
        with self._lock:
            if self.waiting_for == what:
                self.waiting_for = self.waiting_since = None
                self.state = "ok"

    def set_lag(self, lag: dict[int, int]) -> None:
        with self._lock:
            self.lag = dict(lag)

    def put(self, group: str, key: str, value: Any) -> None:
        """A per-item detail (e.g. the last layer of each job) under ``group``."""
        with self._lock:
            self.details.setdefault(group, {})[key] = value

    def drop(self, group: str, key: str) -> None:
        with self._lock:
            self.details.get(group, {}).pop(key, None)

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            return {
                "service": self.service,
                "status": self.state,
                "ok": self.state == "ok",
                "waiting_for": self.waiting_for,
                "waiting_s": None if self.waiting_since is None else now - self.waiting_since,
                "last_error": self.last_error,
                "batches": self.batches,
                "last_batch_age_s": (
                    None if self.last_progress is None else now - self.last_progress
                ),
                "lag": sum(self.lag.values()),
                "lag_by_partition": {str(p): n for p, n in sorted(self.lag.items())},
                **{k: dict(v) if isinstance(v, dict) else v for k, v in self.details.items()},
            }


class ServiceMetrics:
    """The metrics both services export, in a registry of their own (several per test)."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.health = Health(service)
        r = self.registry
        self.lag = Gauge("layerwatch_consumer_lag", "Messages behind", ["partition"], registry=r)
        self.db_errors = Counter(
            "layerwatch_db_errors", "Failed attempts to write to PostgreSQL", registry=r
        )
        self.kafka_errors = Counter(
            "layerwatch_kafka_errors", "Failed Kafka deliveries and consumer errors", registry=r
        )
        self.up = Gauge("layerwatch_service_ok", "1 while the service makes progress", registry=r)

    def set_lag(self, lag: dict[int, int]) -> None:
        for p, n in lag.items():
            self.lag.labels(str(p)).set(n)
        self.health.set_lag(lag)

    def waiting(self, what: str, error: str) -> bool:
        (self.db_errors if what == "database" else self.kafka_errors).inc()
        self.up.set(0)
        return self.health.waiting(what, error)

    def progress(self) -> float | None:
        self.up.set(1)
        return self.health.progress()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """``/metrics`` and ``/health`` on one port, served from a daemon thread until ``close``."""

    def __init__(self, metrics: ServiceMetrics, port: int, host: str = "0.0.0.0") -> None:
        prometheus = make_wsgi_app(metrics.registry)
        health = metrics.health

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            if environ.get("PATH_INFO", "").rstrip("/") == "/health":
                snap = health.snapshot()
                body = json.dumps(snap).encode()
                code = "200 OK" if snap["ok"] else "503 Service Unavailable"
                start_response(code, [("Content-Type", "application/json")])
                return [body]
            return prometheus(environ, start_response)

        self._server: WSGIServer = make_server(
            host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"{health.service}-metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(metrics: ServiceMetrics, port: int, host: str) -> MetricsServer | None:
    """Start the endpoint unless ``port`` is 0 (metrics off)."""
    if not port:
        return None
    server = MetricsServer(metrics, port, host)
    log.info("metrics and health endpoint", extra={"address": f"{host}:{server.port}"})
    return server


def fetch_health(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> dict[str, Any]:
    """A service's ``/health`` answer; ``{"status": "down", ...}`` when nothing answers."""
    url = f"http://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503: the body still says why
        try:
            return json.loads(exc.read())
        except ValueError:
            return {"status": "down", "ok": False, "last_error": f"HTTP {exc.code}"}
    except (OSError, ValueError) as exc:
        return {"status": "down", "ok": False, "last_error": str(exc)}
