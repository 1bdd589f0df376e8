"""Run the services as child processes, restart the ones that die, stop them all cleanly.

`layerwatch up` uses it: one command for a workstation or a small shop. Production runs
each service under its own orchestrator (compose, Kubernetes) instead.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    log_file: Path


@dataclass
class Child:
    spec: ProcessSpec
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    last_exit: int | None = None
    next_start: float = 0.0
    backoff: float = 1.0
    _log: object | None = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.spec.log_file, "ab")  # noqa: SIM115 - lives as long as the child
        self.proc = subprocess.Popen(
            self.spec.argv, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
        self.started = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, even by SIGKILL, which no
    handler of the supervisor sees. Without it a killed `layerwatch up` left its services
    running, and the next `up` started a second monitor beside the orphaned one (found by
    bench.faults). SIGTERM lets each service finish and commit its batch."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Inside, SIGTERM, SIGHUP and SIGINT raise KeyboardInterrupt like Ctrl-C does, so the caller's
    ``finally`` stops the children. Without it, ``kill`` or a closed terminal would end the
    supervisor and leave the services running in their own sessions (found the hard way: an
    orphaned monitor kept consuming a later run's scores). SIGINT is set too: a shell starts
    background jobs with SIGINT ignored, and Python then never turns it into Ctrl-C (found when
    ``make test`` ran in the background: ``kill -INT`` did not stop the supervisor)."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    stops = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {sig: signal.signal(sig, interrupt) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Supervisor:
    """Keeps every child running; a child that keeps dying is restarted with back-off."""

    def __init__(self, specs: list[ProcessSpec], env: dict[str, str] | None = None) -> None:
        self.children = [Child(s) for s in specs]
        self.env = dict(env or os.environ)
        self.stopping = False

    def start_all(self) -> None:
        for c in self.children:
            c.start(self.env)

    def tick(self) -> None:
        """Restart dead children (back-off doubles up to 30 s, resets after 60 s of uptime)."""
        now = time.monotonic()
        for c in self.children:
            if c.alive or self.stopping:
                continue
            if c.proc is not None and c.last_exit is None:
                c.last_exit = c.proc.returncode
                uptime = now - c.started
                c.backoff = 1.0 if uptime > 60 else min(c.backoff * 2, 30.0)
                c.next_start = now + c.backoff
            if now >= c.next_start:
                c.restarts += 1
                c.last_exit = None
                c.start(self.env)

    def stop_all(self, timeout: float = 30.0) -> None:
        """SIGTERM everyone (each finishes its batch and commits), SIGKILL stragglers."""
        self.stopping = True
        for c in self.children:
            if c.alive:
                c.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        for c in self.children:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()

    def table(self, extra: Callable[[], list[tuple[str, str]]] | None = None) -> Table:
        t = Table(title="LayerWatch services")
        for col in ("service", "state", "pid", "uptime", "restarts", "log"):
            t.add_column(col)
        now = time.monotonic()
        for c in self.children:
            if c.alive:
                state, up = "[green]running[/]", f"{now - c.started:.0f}s"
            else:
                state, up = f"[red]exited {c.last_exit}[/]", "-"
            pid = str(c.proc.pid) if c.proc else "-"
            t.add_row(c.spec.name, state, pid, up, str(c.restarts), str(c.spec.log_file))
        for k, v in extra() if extra else []:
            t.add_row(k, v, "", "", "", "")
        return t
