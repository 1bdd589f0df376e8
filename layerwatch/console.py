"""The consoles every command prints through (wide when output goes to a file or a pipe, so
tables are not folded at 80 columns in logs and CI)."""

from __future__ import annotations

import sys

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
