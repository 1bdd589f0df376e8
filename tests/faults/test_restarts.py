"""PostgreSQL and the broker stop and start again mid-stream, the database disk fills up,
PostgreSQL stays away longer than the services' poll limit; the scorer and the monitor wait,
say so, and resume: every layer scored once, charted once, every alarm raised and acted on
once. The short version of ``python -m bench.faults`` (same rig, same checks)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench.faults.rig import Rig, RigOptions
from bench.faults.scenarios import SHORT_POLL_MS, run_fault
from layerwatch.core.kafka import EVICTED

OPTS = RigOptions(printers=2, layers=24, interval_s=0.15, defect_at=16, phase1_layers=8)


@pytest.fixture
def rig(quick_model_dir: Path) -> Iterator[Rig]:
    with Rig(OPTS, model_dir=quick_model_dir) as r:
        r.start_all()
        yield r


@pytest.fixture
def short_poll_rig(quick_model_dir: Path) -> Iterator[Rig]:
    """The services may hold a batch 10 s before their group evicts them (5 min by default)."""
    with Rig(replace(OPTS, max_poll_interval_ms=SHORT_POLL_MS), model_dir=quick_model_dir) as r:
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


def test_services_hold_while_the_database_disk_is_full_and_resume(rig: Rig):
    out = run_fault(rig, "full database disk", run=1)
    _assert_clean(out, rig)
    assert any("waiting:database" in note for note in out.notes), out.notes
    scorer = rig.log("scorer-0", 100_000)
    # It says what is wrong and where, not just "unreachable".
    assert "database disk full: batch held, retrying" in scorer, scorer[-3000:]
    assert "disk is full writing table scores (SQLSTATE 53100)" in scorer, scorer[-3000:]
    assert "resumed" in scorer
    for name in ("scorer-0", "monitor"):
        assert rig.procs[name].poll() is None and rig.health(name)["ok"], rig.health(name)


def test_a_database_outage_longer_than_the_poll_limit_loses_nothing(short_poll_rig: Rig):
    rig = short_poll_rig
    out = run_fault(rig, "database outage past the poll limit", run=1)
    _assert_clean(out, rig)
    # The case happened: a member held its batch past the limit and was evicted; it said so
    # as what it is, not as a broker outage.
    logs = rig.log("scorer-0", 1 << 20) + rig.log("monitor", 1 << 20)
    assert EVICTED in logs, out.notes
    assert "waiting for the broker error=Application maximum poll interval" not in logs
    for name in ("scorer-0", "monitor"):
        assert rig.procs[name].poll() is None, f"{name} died:\n{rig.log(name)}"
        assert rig.health(name)["ok"], rig.health(name)
