"""`layerwatch scores ...`: read what the scorer stored."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import typer

scores_app = typer.Typer(help="Scores stored by the scorer.", no_args_is_help=True)

EXPORT_COLUMNS = (
    "printer", "job", "layer", "score", "anomalous", "f1", "f2", "defect_area",
    "model_version", "latency_ms",
)  # fmt: skip


@scores_app.command("export")
def export(
    job: str = typer.Option(..., "--job", "-j", help="Job id."),
    printer: str | None = typer.Option(None, "--printer", "-p", help="Only this printer."),
    out: Path | None = typer.Option(None, "--out", "-o", help="CSV file (default: stdout)."),
) -> None:
    """Write a job's scores as CSV, the columns `layerwatch monitor replay` reads."""
    from layerwatch.core.console import console, endpoints, fail
    from storage import db, repository

    ep = endpoints()
    try:
        db.require_current_schema(ep.database_url)
    except db.SchemaError as exc:
        raise fail(str(exc)) from exc
    with db.make_engine(ep.database_url).connect() as conn:
        rows = repository.job_scores(conn, printer, job)
    if not rows:
        raise fail(f"no scores for job {job!r}" + (f" on printer {printer!r}" if printer else ""))
    handle = out.open("w", newline="") if out else sys.stdout
    try:
        w = csv.writer(handle)
        w.writerow(EXPORT_COLUMNS)
        for r in rows:
            w.writerow([int(r[c]) if c == "anomalous" else r[c] for c in EXPORT_COLUMNS])
    finally:
        if out:
            handle.close()
            console.print(f"{len(rows)} rows → {out}", highlight=False)
