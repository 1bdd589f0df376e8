"""``layerwatch grafana``: export the provisioning files, or sync them to a running Grafana."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from layerwatch.grafana import DEFAULT_OUT

app = typer.Typer(
    help="Grafana dashboards as code: export the provisioning files, sync to a server.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(1)


@app.command()
def export(
    out: Path = typer.Option(
        DEFAULT_OUT,
        "--out",
        help="Dashboards directory; the data source goes to OUT/../datasources.",
    ),
    check: bool = typer.Option(
        False, "--check", help="Write nothing; exit 1 if a file differs from the code (for CI)."
    ),
) -> None:
    """Regenerate the dashboard JSON and the provisioning YAML from layerwatch/grafana/."""
    from layerwatch.grafana.export import provisioning_files, stale_files, write_files

    files = provisioning_files(out)
    if check:
        stale = stale_files(files)
        for p in stale:
            err.print(f"out of date: {p}")
        if stale:
            raise _fail("run `layerwatch grafana export` and commit the result")
        console.print(f"{len(files)} files up to date")
        return
    changed = write_files(files)
    for p in files:
        console.print(f"{'written ' if p in changed else 'same    '} {p}")


@app.command()
def sync(
    url: str | None = typer.Option(
        None, "--url", help="Grafana URL (default: settings grafana_url)."
    ),
    token: str | None = typer.Option(
        None, "--token", help="Service-account token (default: settings grafana_token)."
    ),
    db_host: str | None = typer.Option(
        None,
        "--db-host",
        help="host:port of PostgreSQL as Grafana reaches it (default: from the database URL).",
    ),
    db_name: str | None = typer.Option(None, "--db-name", help="Database (default: from the URL)."),
    sslmode: str | None = typer.Option(
        None,
        "--sslmode",
        help="disable|require|verify-ca|verify-full (default: disable for the embedded server, "
        "else require).",
    ),
) -> None:
    """Create or update the read-only PostgreSQL data source, the LayerWatch folder and the
    dashboards on a Grafana server. The data source password is LAYERWATCH_GRAFANA_DB_PASSWORD."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    from layerwatch.core.settings import get_settings
    from layerwatch.grafana.dashboards import all_dashboards
    from layerwatch.grafana.db import NoDatabaseError, service_database
    from layerwatch.grafana.provisioning import FOLDER_UID, datasource_model
    from layerwatch.grafana.sync import sync as run_sync

    s = get_settings()
    url = url or s.grafana_url
    token = token or (s.grafana_token.get_secret_value() if s.grafana_token else None)
    if not url or not token:
        raise _fail("need --url and --token (or LAYERWATCH_GRAFANA_URL / LAYERWATCH_GRAFANA_TOKEN)")
    embedded = False
    if not (db_host and db_name):
        try:
            db_url, embedded = service_database(s)
        except NoDatabaseError as exc:
            raise _fail(f"{exc}; or pass --db-host and --db-name") from None
        db_host = db_host or f"{db_url.host or 'localhost'}:{db_url.port or 5432}"
        db_name = db_name or db_url.database or "layerwatch"
    password = s.grafana_db_password.get_secret_value() if s.grafana_db_password else ""
    if not password:
        err.print(
            "[yellow]warning:[/] LAYERWATCH_GRAFANA_DB_PASSWORD is not set; the data source "
            "gets no password (works only where PostgreSQL trusts Grafana's host)"
        )
    ds = datasource_model(
        db_host, db_name, password, sslmode or ("disable" if embedded else "require")
    )
    try:
        api = GrafanaApi.from_url(url, credential=token)
        report = run_sync(api, ds, all_dashboards())
    except GrafanaException as exc:
        raise _fail(f"Grafana answered: {exc.message}") from None
    except OSError as exc:  # connection refused, DNS, TLS
        raise _fail(f"cannot reach Grafana at {url}: {exc}") from None
    console.print(f"data source {ds['uid']} ({db_host}/{db_name}) {report.datasource}")
    console.print(f"folder      {FOLDER_UID} {report.folder}")
    for where in report.dashboards:
        console.print(f"dashboard   {where}")
