"""The `layerwatch` command. Each package contributes its own sub-commands; this file only
wires them together and holds the platform commands (config, servers, db, topics)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.table import Table

from layerwatch.core.console import console, endpoints, fail
from layerwatch.core.settings import get_settings

app = typer.Typer(
    name="layerwatch",
    help="LayerWatch: in-situ layer monitoring for 3D printers "
    "(Kafka → RADAR diffusion scorer → SPC monitor → PostgreSQL/Grafana).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _main(
    log_level: str = typer.Option(None, help="Log level (default from settings: INFO)."),
    log_json: bool = typer.Option(None, "--log-json", help="JSON log lines."),
) -> None:
    from pydantic import ValidationError

    from layerwatch.core.logs import setup_logging

    try:
        s = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise fail(f"invalid configuration (LAYERWATCH_* or layerwatch.toml): {problems}") from None
    setup_logging(log_level or s.log_level, s.log_json if log_json is None else log_json)


# --------------------------------------------------------------------------- config

config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Print the effective configuration (defaults < layerwatch.toml < LAYERWATCH_* env),
    secrets masked."""
    values = get_settings().masked()
    if as_json:
        console.print_json(json.dumps(values, default=str))
        return
    from layerwatch.core.settings import Settings

    table = Table("setting", "environment variable", "value", "meaning", title="LayerWatch")
    for name, value in values.items():
        field = Settings.model_fields[name]
        table.add_row(
            name, f"LAYERWATCH_{name.upper()}", "" if value is None else str(value),
            field.description or "",
        )  # fmt: skip
    console.print(table)


# --------------------------------------------------------------------------- servers

servers_app = typer.Typer(
    help="Embedded Kafka (Tansu) and PostgreSQL for a laptop, CI or the demo.",
    no_args_is_help=True,
)
app.add_typer(servers_app, name="servers")


@servers_app.command("start")
def servers_start() -> None:
    """Start the embedded broker and database (unless external ones are configured); they keep
    running until `layerwatch servers stop`."""
    from layerwatch.core.embedded import EmbeddedServerError, servers

    s = get_settings()
    kafka, pg = servers(s)
    try:
        if s.uses_embedded_kafka:
            st = kafka.start()
            console.print(f"kafka     [green]running[/] {st.address} (pid {st.pid})")
        else:
            console.print(f"kafka     external {s.kafka_bootstrap}")
        if s.uses_embedded_database:
            st = pg.start()
            console.print(f"postgres  [green]running[/] 127.0.0.1:{st.port} (pid {st.pid})")
        else:
            console.print("postgres  external (LAYERWATCH_DATABASE_URL)")
    except EmbeddedServerError as exc:
        raise fail(str(exc)) from exc
    console.print(f"state in {(s.home / 'servers.json').resolve()}")


@servers_app.command("status")
def servers_status() -> None:
    """Show whether the embedded servers run, and where. Exit 1 if one is down."""
    from layerwatch.core.embedded import servers

    s = get_settings()
    kafka, pg = servers(s)
    table = Table("server", "state", "address", "pid", "log")
    down = False
    for srv, external in ((kafka, s.kafka_bootstrap), (pg, s.database_url)):
        if external:
            table.add_row(srv.name, "external", "(from settings)", "", "")
            continue
        st = srv.running()
        if st is None:
            down = True
            table.add_row(srv.name, "[red]stopped[/]", "", "", "")
        else:
            addr = st.address if srv.name == "kafka" else f"127.0.0.1:{st.port}"
            table.add_row(srv.name, "[green]running[/]", addr, str(st.pid), st.log_file)
    console.print(table)
    if down:
        raise typer.Exit(1)


@servers_app.command("stop")
def servers_stop() -> None:
    """Stop the embedded servers (the broker's in-memory topics are dropped)."""
    from layerwatch.core.embedded import servers

    for srv in servers(get_settings()):
        stopped = srv.stop()
        console.print(f"{srv.name:9} {'stopped' if stopped else 'was not running'}")


# --------------------------------------------------------------------------- db

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _admin_database_url() -> str:
    """The schema owner's URL; database commands need (and start) no Kafka."""
    from layerwatch.core.embedded import EmbeddedServerError, resolve_database

    try:
        return resolve_database(get_settings(), start=True)[1]
    except EmbeddedServerError as exc:
        raise fail(str(exc)) from exc


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply migrations up to REVISION (default: the newest). Starts the embedded database
    if none is configured."""
    from storage import db

    admin_url = _admin_database_url()
    try:
        db.upgrade(admin_url, revision)
        console.print(f"schema at [green]{db.current_revision(admin_url)}[/]")
    except db.SchemaError as exc:
        raise fail(str(exc)) from exc


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, or 'base'.")) -> None:
    """Revert migrations down to REVISION (destroys the data of the dropped tables)."""
    from storage import db

    admin_url = _admin_database_url()
    db.downgrade(admin_url, revision)
    console.print(f"schema at {db.current_revision(admin_url) or 'base'}")


@db_app.command("status")
def db_status() -> None:
    """Show the schema revision against the one this code needs. Exit 1 if behind."""
    from layerwatch.core.settings import mask_url
    from storage import db

    admin_url = _admin_database_url()
    try:
        current = db.current_revision(admin_url)
    except db.SchemaError as exc:
        raise fail(str(exc)) from exc
    head = db.head_revision()
    console.print(f"database  {mask_url(admin_url)}")
    console.print(f"current   {current or '(empty)'}")
    console.print(f"required  {head}")
    if current != head:
        console.print("[yellow]behind:[/] run `layerwatch db upgrade`")
        raise typer.Exit(1)
    console.print("[green]up to date[/]")


# --------------------------------------------------------------------------- topics

topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


@topics_app.command("create")
def topics_create() -> None:
    """Create the LayerWatch topics that are missing (idempotent)."""
    from layerwatch.core.embedded import EmbeddedServerError, resolve_kafka
    from layerwatch.core.kafka import ensure_configured_topics

    s = get_settings()
    try:
        bootstrap = resolve_kafka(s)  # Kafka only: no database needed (or started) for this
    except EmbeddedServerError as exc:
        raise fail(str(exc)) from exc
    created = ensure_configured_topics(s, bootstrap)
    for name, n in s.topics.partitions(s.topic_partitions).items():
        state = "created" if name in created else "exists"
        console.print(f"{name:24} {n:3d} partitions  {state}")


# --------------------------------------------------------------------------- up


@app.command("up")
def up(
    model: str = typer.Option(..., "--model", "-m", help="Model directory for the scorer."),
    scorers: int = typer.Option(1, min=1, help="Scorer processes in the consumer group."),
    monitor: bool = typer.Option(True, help="Run the monitor service too."),
    policy: str | None = typer.Option(None, help="Alarm policy TOML for the monitor."),
    phase1: str = typer.Option(
        "model", help="Monitor Phase I: 'model' (calibration scores) or 'job' (first layers)."
    ),
    phase1_layers: int = typer.Option(
        30, min=2, help="Layers of a job the monitor uses for Phase I where the model has none."
    ),
    stop_servers: bool = typer.Option(
        False, help="Stop the embedded servers on exit (default: leave them running)."
    ),
) -> None:
    """Start everything: embedded servers (unless external ones are configured), migrations,
    topics, the scorer(s) and the monitor as supervised processes, with a live status table.
    Ctrl-C stops the services cleanly."""
    if phase1 not in ("model", "job"):
        raise typer.BadParameter("must be 'model' or 'job'", param_hint="--phase1")
    from pathlib import Path

    from rich.live import Live

    from layerwatch.core.embedded import servers
    from layerwatch.core.health import fetch_health
    from layerwatch.core.kafka import ensure_configured_topics
    from layerwatch.status import ServicesFile, service_ports
    from layerwatch.supervisor import ProcessSpec, Supervisor, stop_signals_interrupt
    from storage import db

    s = get_settings()
    ep = endpoints()
    db.upgrade(ep.database_admin_url)
    ensure_configured_topics(s, ep.kafka_bootstrap)
    exe = [sys.executable, "-m", "layerwatch"]
    logs = Path(s.home) / "logs"
    ports = service_ports(s, scorers, monitor)
    specs = [
        ProcessSpec(
            f"scorer-{i}",
            [*exe, "scorer", "run", "--model", model, "--metrics-port", str(ports[f"scorer-{i}"])],
            logs / f"scorer-{i}.log",
        )
        for i in range(scorers)
    ]
    if monitor:
        argv = [*exe, "monitor", "run", "--phase1", phase1, "--phase1-layers", str(phase1_layers)]
        argv += ["--metrics-port", str(ports["monitor"])]
        argv += ["--policy", policy] if policy else []
        specs.append(ProcessSpec("monitor", argv, logs / "monitor.log"))
    sup = Supervisor(specs)
    services_file = ServicesFile(s.home)

    def where() -> list[tuple[str, str]]:
        health = []
        for name, port in ports.items():
            if port:
                h = fetch_health(port, timeout=0.3)
                health.append((f"{name} health", f"{h.get('status')} lag {h.get('lag', '-')}"))
        return [("kafka", ep.kafka_bootstrap), ("postgres", "ready"), *health]

    try:
        with (
            stop_signals_interrupt(),
            Live(sup.table(where), console=console, refresh_per_second=2) as live,
        ):
            sup.start_all()
            services_file.write(ports)
            while True:
                sup.tick()
                live.update(sup.table(where))
                time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping services …")
    finally:
        sup.stop_all()
        services_file.drop()
        if stop_servers:
            for srv in servers(s):
                srv.stop()
    console.print("all services stopped")


@app.command("status")
def status() -> None:
    """Show the servers (embedded or external) and the services with their health and
    consumer lag, from the services' health endpoints. Exit 1 if anything is down or
    waiting."""
    from layerwatch.status import server_rows, service_rows, status_table

    s = get_settings()
    rows = [*server_rows(s), *service_rows(s)]
    console.print(status_table(rows))
    if not all(r.ok for r in rows):
        raise typer.Exit(1)


# --------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    layers: int = typer.Option(40, "--layers", min=5, help="Layers in the simulated print."),
    defect_at: int = typer.Option(25, "--defect-at", min=1, help="Layer where the defect starts."),
    defect: str = typer.Option(
        "stringing",
        help="FDM defect kind (see `simulate gallery`).",
    ),
    severity: float = typer.Option(0.8, min=0.05, max=1.0, help="Defect severity."),
    interval: float = typer.Option(0.6, min=0.0, help="Seconds between layers."),
    size: int = typer.Option(128, help="Layer image size in pixels."),
    train_steps: int = typer.Option(400, min=10, help="Training steps on the first run."),
    train_minutes: float = typer.Option(6.0, help="Training time cap on the first run."),
    summary: Path | None = typer.Option(None, "--summary", help="Write the summary as JSON."),
    report: Path | None = typer.Option(None, "--report", help="HTML report path."),
    octoprint: str | None = typer.Option(
        None, help="Pause this OctoPrint instead of the built-in virtual printer."
    ),
    api_key: str | None = typer.Option(
        None, envvar="LAYERWATCH_OCTOPRINT_API_KEY", help="OctoPrint API key."
    ),
    keep_servers: bool = typer.Option(False, help="Leave the embedded servers running."),
) -> None:
    """Stream a simulated print through Kafka → scorer → monitor on the embedded servers;
    a defect appears at a known layer and the monitor stops the printer. Trains (first run)
    or reuses the cached demo model. Exit 0 when the defect is caught within 2 layers with no
    false alarm, 2 when the pipeline ran but missed that mark."""
    from layerwatch.demo import DemoOptions, run_demo

    if defect_at >= layers:
        raise typer.BadParameter("must be below --layers", param_hint="--defect-at")
    from ingest.simulate import DEFECT_KINDS

    if defect not in DEFECT_KINDS["fdm"]:
        known = ", ".join(DEFECT_KINDS["fdm"])
        raise typer.BadParameter(f"unknown {defect!r}; known: {known}", param_hint="--defect")
    if octoprint and not api_key:
        raise typer.BadParameter("needs --api-key", param_hint="--octoprint")
    opts = DemoOptions(
        layers=layers, defect_at=defect_at, defect=defect, severity=severity, interval=interval,
        size=size, train_steps=train_steps, train_minutes=train_minutes, summary=summary,
        report=report, octoprint=octoprint, api_key=api_key, keep_servers=keep_servers,
    )  # fmt: skip
    raise typer.Exit(run_demo(get_settings(), opts, console))


# --------------------------------------------------------------------------- packages


def _register_packages() -> None:
    """Sub-commands live with their packages; imports stay light (torch loads on use)."""
    from ingest.cli import app as ingest_app
    from ingest.simulate.cli import app as simulate_app
    from layerwatch.grafana.cli import app as grafana_app
    from layerwatch.report.cli import report
    from monitor.alarms_cli import app as alarms_app
    from monitor.cli import app as monitor_app
    from scorer.cli import register as register_scorer
    from scorer.compare import app as bench_app
    from scorer.service_cli import app as scorer_app
    from storage.cli import scores_app

    register_scorer(app)
    app.add_typer(simulate_app, name="simulate")
    app.add_typer(ingest_app, name="ingest")
    app.add_typer(monitor_app, name="monitor")
    app.add_typer(alarms_app, name="alarms")
    app.add_typer(grafana_app, name="grafana")
    app.command("report")(report)
    app.add_typer(scorer_app, name="scorer")
    app.add_typer(scores_app, name="scores")
    app.add_typer(bench_app, name="bench")


_register_packages()


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
