"""The README's commands parse against the real CLI, and its TOML example loads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from layerwatch.cli import app
from monitor.actions.config import load_printers
from monitor.alarms import load_policy

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[list[str]]:
    """Every ``layerwatch …`` invocation in the README's shell blocks, as argv."""
    out = []
    for block in _blocks("sh"):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in line.split("&&"):
                argv = shlex.split(part.strip())
                if argv and argv[0].endswith("layerwatch"):
                    out.append(argv[1:])
    return out


def _expand(argv: list[str]) -> list[list[str]]:
    """``servers start|status|stop`` stands for three commands."""
    for i, tok in enumerate(argv):
        if "|" in tok and not tok.startswith("-"):
            return [[*argv[:i], alt, *argv[i + 1 :]] for alt in tok.split("|")]
    return [argv]


COMMANDS = [cmd for argv in readme_commands() for cmd in _expand(argv)]


def test_the_readme_shows_the_main_commands() -> None:
    names = {" ".join(c[:2]) for c in COMMANDS}
    for expected in ("demo --layers", "train data/fdm_rectilinear", "up --model", "db upgrade"):
        assert any(n.startswith(expected.split()[0]) for n in names), expected
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(argv: list[str]) -> None:
    cmd = typer.main.get_command(app)  # typer's own click: no separate click import
    path = ["layerwatch"]
    args = list(argv)
    while getattr(cmd, "commands", None) and args and args[0] in cmd.commands:
        path.append(args[0])
        cmd = cmd.commands[args.pop(0)]
    assert not getattr(cmd, "commands", None), f"{' '.join(path)}: a group, not a command"
    # Parses options and arguments exactly as a run would (unknown option, missing argument,
    # bad value all raise), without running the command. Example paths need not exist here.
    try:
        cmd.make_context(" ".join(path), args)
    except Exception as exc:
        if "does not exist" not in str(exc):
            raise


def test_readme_policy_example_loads(tmp_path: Path) -> None:
    (toml,) = _blocks("toml")
    path = tmp_path / "site.toml"
    path.write_text(toml)
    policy = load_policy(path)
    assert policy.for_printer("mk4").stop.action == "pause"
    target = load_printers(path)["mk4"]
    assert target.kind == "octoprint" and target.api_key_env == "OCTOPRINT_MK4_KEY"
