"""The supervisor behind `layerwatch up`: its services stop with it, whatever stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import sys, time
from pathlib import Path
from layerwatch.supervisor import ProcessSpec, Supervisor, stop_signals_interrupt

child = [sys.executable, "-c", "import time; time.sleep(120)"]
sup = Supervisor([ProcessSpec("sleeper", child, Path(sys.argv[1]))])
try:
    with stop_signals_interrupt():
        sup.start_all()
        print(sup.children[0].proc.pid, flush=True)
        while True:
            sup.tick()
            time.sleep(0.1)
except KeyboardInterrupt:
    pass
finally:
    sup.stop_all(timeout=10)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_services_stop_with_the_supervisor(sig: signal.Signals, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "child.log")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    child = int(proc.stdout.readline())  # type: ignore[union-attr]
    assert not _gone(child)
    proc.send_signal(sig)
    assert proc.wait(20) == 0
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), f"service {child} outlived the supervisor after {sig.name}"


def test_services_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL reaches no handler: the children must learn of it from the kernel."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "child.log")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    child = int(proc.stdout.readline())  # type: ignore[union-attr]
    assert not _gone(child)
    proc.send_signal(signal.SIGKILL)
    proc.wait(20)
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), f"service {child} outlived a killed supervisor"
