"""PostgreSQL and the broker stop and start again mid-stream; the scorer and the monitor
wait, say so, and resume: every layer scored once, charted once, every alarm raised and
acted on once. The short version of ``python -m bench.faults`` (same rig, same checks)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.faults.rig import Rig, RigOptions
from bench.faults.scenarios import run_fault


@pytest.fixture
def rig(quick_model_dir: Path) -> Iterator[Rig]:
    opts = RigOptions(printers=2, layers=24, interval_s=0.15, defect_at=16, phase1_layers=8)
    with Rig(opts, model_dir=quick_model_dir) as r:
        r.start_all()
        yield r


def _assert_clean(out, rig: Rig) -> None:
    logs = "\n".join(f"--- {n}\n{rig.log(n)}" for n in rig.procs)
    assert out.clean, f"{out.as_dict()}\n{logs}"
    assert out.sent == out.scored_once == 48
    assert out.alarms > 0 and out.actions > 0, out.as_dict()  # the defect was caught


@pytest.mark.parametrize("fault, server", [("database restart", "database"),
                                           ("broker restart", "kafka")])  # fmt: skip
def test_services_wait_for_a_restarted_server_and_resume(rig: Rig, fault: str, server: str):
    out = run_fault(rig, fault, run=1)
    _assert_clean(out, rig)
    for name in ("scorer-0", "monitor"):
        assert rig.procs[name].poll() is None, f"{name} died:\n{rig.log(name)}"
        assert rig.health(name)["ok"], rig.health(name)
    # They said what they waited for, once per outage, and did not spin while waiting.
    scorer = rig.log("scorer-0")
    if server == "database":
        assert "database unreachable: batch held, retrying" in scorer, scorer
        assert "resumed" in scorer
        attempts = [int(a) for a in re.findall(r"attempt=(\d+)", scorer)]
        assert attempts and max(attempts) <= 10, "retried in a busy loop"
    assert any(f"waiting:{server}" in note for note in out.notes), out.notes
