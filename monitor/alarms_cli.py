"""`layerwatch alarms list|ack|resolve`: the alarm lifecycle for people."""

from __future__ import annotations

import typer
from rich.table import Table

app = typer.Typer(help="Alarms raised by the monitor: list, acknowledge, resolve.",
                  no_args_is_help=True)  # fmt: skip


def _engine():
    from layerwatch.core.console import endpoints, fail
    from storage import db

    ep = endpoints()
    try:
        db.require_current_schema(ep.database_url)
    except db.SchemaError as exc:
        raise fail(str(exc)) from exc
    return db.make_engine(ep.database_url)


@app.command("list")
def list_(
    state: str | None = typer.Option(None, help="open | acknowledged | resolved."),
    job: str | None = typer.Option(None, "--job", "-j", help="Only this job."),
    limit: int = typer.Option(50, help="Newest N alarms."),
) -> None:
    """Newest alarms first, with the result of their last printer action."""
    from layerwatch.core.console import console
    from storage import repository

    with _engine().connect() as conn:
        rows = repository.list_alarms(conn, state, job, limit)
    t = Table("id", "printer", "job", "layer", "chart", "level", "rule", "fired", "state",
              "opened", "action")  # fmt: skip
    for r in rows:
        action = "-" if r["action_ok"] is None else ("ok: " if r["action_ok"] else "failed: ")
        action += (r["action_result"] or "")[:50] if r["action_ok"] is not None else ""
        t.add_row(
            str(r["id"]), r["printer"], r["job"], str(r["layer"]), r["chart"], r["level"],
            r["rule"] or "", r["channels"] or "-", r["state"],
            r["opened_at"].strftime("%Y-%m-%d %H:%M:%S"), action,
        )  # fmt: skip
    console.print(t)


def _move(alarm_id: int, target: str, by: str | None, note: str | None) -> None:
    from layerwatch.core.console import console, fail
    from monitor.alarms import IllegalTransition, transition
    from storage import repository

    with _engine().begin() as conn:
        alarm = repository.get_alarm(conn, alarm_id)
        if alarm is None:
            raise fail(f"no alarm with id {alarm_id}")
        try:
            transition(alarm["state"], target)
        except IllegalTransition as exc:
            raise fail(f"alarm {alarm_id}: {exc}") from exc
        repository.set_alarm_state(conn, alarm_id, target, by, note)
    console.print(f"alarm {alarm_id} {target}")


@app.command("ack")
def ack(
    alarm_id: int = typer.Argument(..., help="Alarm id (from `alarms list`)."),
    by: str | None = typer.Option(None, "--by", help="Who acknowledges."),
    note: str | None = typer.Option(None, help="A note kept with the alarm."),
) -> None:
    """Acknowledge an open alarm."""
    _move(alarm_id, "acknowledged", by, note)


@app.command("resolve")
def resolve(
    alarm_id: int = typer.Argument(..., help="Alarm id."),
    note: str | None = typer.Option(None, help="What was done."),
) -> None:
    """Resolve an open or acknowledged alarm."""
    _move(alarm_id, "resolved", None, note)
