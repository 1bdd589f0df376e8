"""``layerwatch report JOB --out report.html`` (the lead's CLI registers :func:`report`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def report(
    job: str = typer.Argument(..., help="Job id, as the printer reported it."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
    printer: str | None = typer.Option(
        None, "--printer", help="Printer; needed only when two printers have a job of that name."
    ),
    images: str | None = typer.Option(
        None,
        "--images",
        help="Path pattern of the layer images, e.g. 'captures/{layer:05d}.png', to draw the "
        "anomaly maps over them (the database keeps only the maps).",
    ),
) -> None:
    """Write a self-contained HTML report of a print job: summary, control charts, alarms with
    the printer actions, and the worst layers' anomaly maps."""
    from layerwatch.core.settings import get_settings
    from layerwatch.grafana.db import NoDatabaseError, service_database
    from layerwatch.report.data import ReportError
    from layerwatch.report.render import render_report

    err = Console(stderr=True)
    try:
        url, _embedded = service_database(get_settings())
        html = render_report(url.render_as_string(hide_password=False), job, printer, images)
    except (NoDatabaseError, ReportError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    Console().print(f"report of {job} written to {out} ({len(html) / 1e6:.1f} MB)")
