"""What every command shares: the consoles it prints through (wide when output goes to a file or
a pipe, so tables are not folded at 80 columns in logs and CI), the clean error exit, and the
servers it talks to. Imports no CLI, so each package's sub-commands can use it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from layerwatch.core.embedded import Endpoints


def _console(stream, stderr: bool = False) -> Console:
    """On a terminal, its width. To a file or a pipe: 160 columns for tables, and text is not
    wrapped (a message or path stays on one line, whole, for logs and grep)."""
    tty = stream.isatty()
    return Console(stderr=stderr, width=None if tty else 160, soft_wrap=not tty)


console = _console(sys.stdout)
err = _console(sys.stderr, stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a clear error (no traceback) and return the exit to raise."""
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def endpoints(start: bool = True) -> Endpoints:
    """The configured (or embedded, started when ``start``) Kafka and database, or a clean exit
    that says which server could not be reached."""
    from layerwatch.core.embedded import EmbeddedServerError, resolve_endpoints
    from layerwatch.core.settings import get_settings

    try:
        return resolve_endpoints(get_settings(), start=start)
    except EmbeddedServerError as exc:
        raise fail(str(exc)) from exc
