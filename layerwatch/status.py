"""`layerwatch status`: the servers and the services, their health and lag, in one table.

`layerwatch up` gives every service its health port (the scorers from ``metrics_port`` up,
the monitor ``monitor_metrics_port``) and records them in ``$LAYERWATCH_HOME/services.json``;
without that file the status looks where the settings say one scorer and the monitor listen.
The services answer on 127.0.0.1: this is the view of one machine (a cluster has Prometheus).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from layerwatch.core.embedded import servers
from layerwatch.core.health import fetch_health
from layerwatch.core.settings import Settings, mask_url


@dataclass
class Row:
    kind: str  # server | service
    name: str
    state: str
    address: str
    lag: str = ""
    detail: str = ""
    ok: bool = True


def service_ports(settings: Settings, scorers: int, monitor: bool = True) -> dict[str, int]:
    """The health port of each service `up` starts (0 = off); scorers skip the monitor's."""
    ports: dict[str, int] = {}
    taken = {settings.monitor_metrics_port} if monitor else set()
    port = settings.metrics_port
    for i in range(scorers):
        if settings.metrics_port:
            while port in taken:
                port += 1
            taken.add(port)
        ports[f"scorer-{i}"] = port if settings.metrics_port else 0
        port += 1
    if monitor:
        ports["monitor"] = settings.monitor_metrics_port
    return ports


class ServicesFile:
    """``$LAYERWATCH_HOME/services.json``: the services `up` runs and their health ports."""

    def __init__(self, home: Path) -> None:
        self.path = home / "services.json"

    def write(self, ports: dict[str, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ports, indent=2))
        tmp.replace(self.path)

    def read(self) -> dict[str, int] | None:
        try:
            return {str(k): int(v) for k, v in json.loads(self.path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return None

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)


def _kafka_reachable(bootstrap: str) -> str | None:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=3.0)
        return None
    except Exception as exc:
        return str(exc)[:120]


def _database_reachable(url: str) -> str | None:
    from sqlalchemy import create_engine, text

    from storage.db import normalise_url

    engine = create_engine(normalise_url(url), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:
        return str(getattr(exc, "orig", exc)).splitlines()[0][:120]
    finally:
        engine.dispose()


def server_rows(settings: Settings) -> list[Row]:
    kafka, pg = servers(settings)
    rows = []
    if settings.kafka_bootstrap:
        error = _kafka_reachable(settings.kafka_bootstrap)
        state = "external" if error is None else "unreachable"
        addr = settings.kafka_bootstrap
        rows.append(Row("server", "kafka", state, addr, detail=error or "", ok=error is None))
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
        error = _database_reachable(url)
        state = "external" if error is None else "unreachable"
        rows.append(
            Row("server", "postgres", state, mask_url(url), detail=error or "", ok=not error)
        )
    for srv, external in ((kafka, settings.kafka_bootstrap), (pg, settings.database_url)):
        if external:
            continue
        st = srv.running()
        if st is None:
            rows.append(Row("server", srv.name, "stopped", "", ok=False))
        else:
            addr = st.address if srv.name == "kafka" else f"127.0.0.1:{st.port}"
            rows.append(Row("server", srv.name, "running", addr, detail=f"pid {st.pid}"))
    return rows


def service_rows(settings: Settings) -> list[Row]:
    ports = ServicesFile(settings.home).read()
    if ports is None:
        ports = {"scorer-0": settings.metrics_port, "monitor": settings.monitor_metrics_port}
    rows = []
    for name, port in ports.items():
        if not port:
            rows.append(Row("service", name, "unknown", "", detail="no health port", ok=False))
            continue
        h = fetch_health(port)
        state = str(h.get("status", "down"))
        rows.append(Row("service", name, state, f"127.0.0.1:{port}",
                        lag="" if h.get("lag") is None else str(h["lag"]),
                        detail=_service_detail(h), ok=bool(h.get("ok"))))  # fmt: skip
    return rows


def _service_detail(h: dict) -> str:
    if h.get("status") == "down":
        return f"no answer ({h.get('last_error', '')})"[:120]
    if h.get("waiting_for"):
        return f"waiting for {h['waiting_for']} {h.get('waiting_s') or 0:.0f}s: {h['last_error']}"
    parts = [f"{h.get('batches', 0)} batches"]
    if (age := h.get("last_batch_age_s")) is not None:
        parts.append(f"last {age:.0f}s ago")
    if jobs := h.get("last_layer"):
        parts.append(", ".join(f"{j} layer {n}" for j, n in list(jobs.items())[-3:]))
    return "; ".join(parts)


def status_table(rows: list[Row]) -> Table:
    table = Table("", "name", "state", "address", "lag", "detail", title="LayerWatch status")
    for r in rows:
        colour = "green" if r.ok else ("yellow" if r.state in ("waiting", "starting") else "red")
        table.add_row(r.kind, r.name, f"[{colour}]{r.state}[/]", r.address, r.lag, r.detail)
    return table
