"""`layerwatch grafana sync` and the alarm annotation against a loopback HTTP server that
answers like Grafana and records method, path, JSON body and the Authorization header."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from grafana_client import GrafanaApi
from typer.testing import CliRunner

from layerwatch.core.settings import get_settings
from layerwatch.grafana import DEFAULT_OUT
from layerwatch.grafana.cli import app
from monitor.actions.annotations import post_alarm_annotation

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "glsa_test_token"


@dataclass
class FakeGrafana:
    """Just enough of Grafana's HTTP API: data sources by uid, folders, dashboards."""

    requests: list[tuple[str, str, Any, str | None]] = field(default_factory=list)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = path.split("?")[0].strip("/").split("/")
        match method, parts:
            case "GET", ["api", "datasources", "uid", uid]:
                ds = self.datasources.get(uid)
                return (200, ds) if ds else (404, {"message": "Data source not found"})
            case "POST", ["api", "datasources"]:
                self.datasources[body["uid"]] = body
                return 200, {"id": 1, "message": "Datasource added", "name": body["name"]}
            case "PUT", ["api", "datasources", "uid", uid]:
                self.datasources[uid] = body
                return 200, {"id": 1, "message": "Datasource updated"}
            case "GET", ["api", "folders", uid]:
                f = self.folders.get(uid)
                return (200, f) if f else (404, {"message": "folder not found"})
            case "POST", ["api", "folders"]:
                self.folders[body["uid"]] = body
                return 200, {"uid": body["uid"], "title": body["title"], "id": 7}
            case "POST", ["api", "dashboards", "db"]:
                uid = body["dashboard"]["uid"]
                self.dashboards[uid] = body
                return 200, {"status": "success", "uid": uid, "url": f"/d/{uid}/x", "version": 1}
            case "POST", ["api", "annotations"]:
                return 200, {"id": 17, "message": "Annotation added"}
        return 404, {"message": "Not found"}


@pytest.fixture
def grafana() -> Iterator[tuple[str, FakeGrafana]]:
    fake = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else None
            fake.requests.append((self.command, self.path, body, self.headers["Authorization"]))
            status, answer = fake.answer(self.command, self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for k in ("LAYERWATCH_GRAFANA_URL", "LAYERWATCH_GRAFANA_TOKEN", "LAYERWATCH_DATABASE_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LAYERWATCH_GRAFANA_DB_PASSWORD", "s3cret-reader")
    get_settings.cache_clear()
    yield "s3cret-reader"
    get_settings.cache_clear()


def _sync(url: str) -> Any:
    args = [
        "sync",
        "--url",
        url,
        "--token",
        TOKEN,
        "--db-host",
        "db.internal:5432",
        "--db-name",
        "layerwatch",
    ]
    return CliRunner().invoke(app, args)


def test_sync_creates_then_updates(grafana: tuple[str, FakeGrafana], password: str) -> None:
    url, fake = grafana
    res = _sync(url)
    assert res.exit_code == 0, res.output
    calls = [(m, p) for m, p, _b, _a in fake.requests]
    assert calls == [
        ("GET", "/api/datasources/uid/layerwatch-pg"),
        ("POST", "/api/datasources"),
        ("GET", "/api/folders/layerwatch"),
        ("POST", "/api/folders"),
        ("POST", "/api/dashboards/db"),
        ("POST", "/api/dashboards/db"),
    ]
    assert {a for *_x, a in fake.requests} == {f"Bearer {TOKEN}"}

    ds = fake.datasources["layerwatch-pg"]
    assert ds["type"] == "grafana-postgresql-datasource" and ds["user"] == "layerwatch_grafana"
    assert ds["url"] == "db.internal:5432" and ds["jsonData"]["database"] == "layerwatch"
    assert ds["jsonData"]["sslmode"] == "require"  # not the embedded server
    assert ds["secureJsonData"] == {"password": password}
    assert fake.folders["layerwatch"]["title"] == "LayerWatch"
    for uid, body in fake.dashboards.items():
        assert body["overwrite"] is True and body["folderUid"] == "layerwatch"
        checked_in = json.loads((ROOT / DEFAULT_OUT / f"{uid}.json").read_text())
        assert body["dashboard"] == checked_in
    assert set(fake.dashboards) == {"layerwatch-job", "layerwatch-fleet"}
    assert "/d/layerwatch-job/x" in res.output

    fake.requests.clear()
    assert _sync(url).exit_code == 0
    calls = [(m, p) for m, p, _b, _a in fake.requests]
    assert calls[:3] == [
        ("GET", "/api/datasources/uid/layerwatch-pg"),
        ("PUT", "/api/datasources/uid/layerwatch-pg"),
        ("GET", "/api/folders/layerwatch"),
    ]
    assert ("POST", "/api/folders") not in calls and ("POST", "/api/datasources") not in calls


def test_sync_reports_grafana_errors(grafana: tuple[str, FakeGrafana], password: str) -> None:
    url, fake = grafana
    fake.answer = lambda *_a: (401, {"message": "invalid API key"})  # type: ignore[method-assign]
    res = _sync(url)
    assert res.exit_code == 1
    assert "Unauthorized" in res.output or "invalid API key" in res.output


def test_sync_needs_a_url_and_token(password: str) -> None:
    res = CliRunner().invoke(app, ["sync"])
    assert res.exit_code == 1 and "--url" in res.output


def test_alarm_annotation(grafana: tuple[str, FakeGrafana]) -> None:
    url, fake = grafana
    api = GrafanaApi.from_url(url, credential=TOKEN)
    at = datetime(2025, 3, 1, 8, 20, tzinfo=UTC)
    alarm = {
        "printer": "prusa-01",
        "job": "benchy & co",
        "layer": 40,
        "chart": "cusum",
        "level": "stop",
        "rule": "h_stop",
        "statistic": 5.25,
        "limit": 4.0,
        "action": "pause",
        "captured_at": at,
    }
    assert post_alarm_annotation(api, alarm) == 17
    ((method, path, body, auth),) = fake.requests
    assert (method, path, auth) == ("POST", "/api/annotations", f"Bearer {TOKEN}")
    assert body["time"] == int(at.timestamp() * 1000) and body["timeEnd"] is None
    assert body["tags"] == [
        "layerwatch-alarm",
        "stop",
        "cusum",
        "printer:prusa-01",
        "job:benchy & co",
    ]
    assert body["text"].startswith("STOP cusum alarm: printer prusa-01, job benchy &amp; co")
    assert "statistic 5.25 vs limit 4" in body["text"]
    assert 'href="/d/layerwatch-job?var-printer=prusa-01&amp;var-job=benchy+%26+co"' in body["text"]
