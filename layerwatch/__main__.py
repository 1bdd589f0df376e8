"""`python -m layerwatch` = the `layerwatch` command (used by the supervisor)."""

from layerwatch.cli import app

app(prog_name="layerwatch")
