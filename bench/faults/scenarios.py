"""The faults, each a function that strikes while the print streams on a running rig.

Each waits until part of the print is scored (so the fault lands mid-stream, at a point
drawn at random), does its damage, repairs it and returns notes: what the services said
meanwhile (their health endpoints) and how long the repair took.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable

from bench.faults.check import Outcome, check
from bench.faults.rig import Feed, Rig
from layerwatch.core.kafka import EVICTED

DOWN_S = 4.0  # how long a server stays down


def _mid_stream(rig: Rig, rnd: random.Random, low: float = 0.2, high: float = 0.6) -> None:
    """Wait until a random share (low..high) of the print is scored."""
    total = rig.opts.printers * rig.opts.layers
    rig.wait_scored(int(total * rnd.uniform(low, high)), timeout=120)


def _watch(rig: Rig, seconds: float) -> set[str]:
    """The health states the services report while a server is down."""
    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name in rig.procs:
            h = rig.health(name)
            seen.add(f"{name}:{h.get('status')}:{h.get('waiting_for') or ''}")
        time.sleep(0.5)
    return seen


def database_restart(rig: Rig, feed: Feed, rnd: random.Random) -> list[str]:
    _mid_stream(rig, rnd)
    rig.stop_database()
    seen = _watch(rig, DOWN_S)
    rig.start_database()
    return [f"while down: {sorted(seen)}"]


def broker_restart(rig: Rig, feed: Feed, rnd: random.Random) -> list[str]:
    _mid_stream(rig, rnd)
    rig.stop_broker()
    seen = _watch(rig, DOWN_S)
    rig.start_broker()
    return [f"while down: {sorted(seen)}"]


def broker_restart_under_ingest(rig: Rig, feed: Feed, rnd: random.Random) -> list[str]:
    """The broker restarts while `layerwatch ingest` streams: its producer waits, is replaced
    if the restart killed it, and resends what the broker had not confirmed."""
    _mid_stream(rig, rnd, 0.1, 0.4)
    rig.stop_broker()
    seen = _watch(rig, DOWN_S)
    rig.start_broker()
    feed.done.wait(120)
    said = " ".join(rig.log(f"ingest-p{p}", 20000) for p in range(rig.opts.printers))
    renewed = said.count("Kafka producer unusable")
    return [f"while down: {sorted(seen)}", f"ingest producers replaced: {renewed}"]


def full_disk(rig: Rig, feed: Feed, rnd: random.Random) -> list[str]:
    """The database's disk fills up mid-print (the scores and chart points cannot grow): the
    services hold their batch, say the disk is full and which table, report `waiting`; the
    space comes back after DOWN_S once one of them noticed (at most 30 s)."""
    _mid_stream(rig, rnd, 0.1, 0.3)
    how = rig.fill_disk(True)
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any("waiting:database" in s for s in seen):
        seen |= _watch(rig, 0.5)
    seen |= _watch(rig, DOWN_S)
    rig.fill_disk(False)
    said = [n for n in rig.procs if "database disk full" in rig.log(n, 20000)]
    return [f"disk: {how}", f"while full: {sorted(seen)}", f"said disk full: {said}"]


def long_database_outage(rig: Rig, feed: Feed, rnd: random.Random) -> list[str]:
    """PostgreSQL away for longer than the services' poll limit (the rig runs them with a
    short max.poll.interval.ms): a service holding its batch is evicted from its group
    meanwhile, its commit afterwards fails, and its partitions are assigned again."""
    limit_s = (rig.opts.max_poll_interval_ms or 300_000) / 1000

    def said(what: str) -> dict[str, int]:
        return {n: rig.log(n, 1 << 24).count(what) for n in rig.procs}

    before = {w: said(w) for w in ("resumed", "offset commit failed", EVICTED)}
    _mid_stream(rig, rnd)
    rig.stop_database()
    seen = _watch(rig, limit_s + DOWN_S)
    rig.start_database()
    deadline = time.monotonic() + 60  # until both held batches went through
    while time.monotonic() < deadline and any(
        n <= before["resumed"][name] for name, n in said("resumed").items()
    ):
        time.sleep(0.5)
    time.sleep(2)  # the rejoin
    failed, evicted = ({n: c - before[w][n] for n, c in said(w).items()}
                       for w in ("offset commit failed", EVICTED))  # fmt: skip
    return [f"down {limit_s + DOWN_S:.0f}s", f"while down: {sorted(seen)}",
            f"commits failed: {failed}", f"evicted: {evicted}"]  # fmt: skip


def slow_database(rig: Rig, feed: Feed, rnd: random.Random) -> list[str]:
    """Every insert into scores and chart points 0.5 s late for a while: the backlog (the
    consumer lag) grows, then drains; nothing is skipped to catch up."""
    _mid_stream(rig, rnd, 0.1, 0.3)
    rig.slow_database(0.5)
    lags = []
    deadline = time.monotonic() + 3 * DOWN_S
    while time.monotonic() < deadline:
        lags.append(int(rig.health("scorer-0").get("lag") or 0))
        time.sleep(0.5)
    rig.slow_database(None)
    return [f"scorer lag while slow: max {max(lags, default=0)}"]


def _kill(name: str) -> Callable[[Rig, Feed, random.Random], list[str]]:
    def strike(rig: Rig, feed: Feed, rnd: random.Random) -> list[str]:
        _mid_stream(rig, rnd)
        rig.kill(name, signal.SIGKILL)
        before = rig.progress()[0]
        rig.start(name)
        return [f"killed at {before} scored"]

    strike.__name__ = f"kill_{name}"
    return strike


def kill_supervisor(rig: Rig, feed: Feed, rnd: random.Random) -> list[str]:
    """SIGKILL `layerwatch up`: its services must stop with it (not run on as orphans beside
    the ones the next `up` starts), and the next `up` takes over where they left off."""
    _mid_stream(rig, rnd)
    rig.kill("up", signal.SIGKILL)
    orphans = [n for n in ("scorer-0", "monitor") if not rig.wait_down(n, timeout=30)]
    rig.start_up()
    return [f"orphaned services: {orphans}"] if orphans else []


def nothing(rig: Rig, feed: Feed, rnd: random.Random) -> list[str]:
    return []


FAULTS: dict[str, Callable[[Rig, Feed, random.Random], list[str]]] = {
    "none": nothing,
    "kill -9 scorer": _kill("scorer-0"),
    "kill -9 monitor": _kill("monitor"),
    "database restart": database_restart,
    "broker restart": broker_restart,
    "broker restart under ingest": broker_restart_under_ingest,
    "slow database": slow_database,
    "database outage past the poll limit": long_database_outage,
    "full database disk": full_disk,
    "kill -9 up (supervisor)": kill_supervisor,
}
UNDER_UP = {"kill -9 up (supervisor)"}  # these need the services under `layerwatch up`
SHORT_POLL_MS = 7_000  # the poll limit of the rig for the faults that outlast it
SHORT_POLL = {"database outage past the poll limit"}
VIA_INGEST = {"broker restart under ingest"}  # the print streams through `layerwatch ingest`


def run_fault(rig: Rig, fault: str, run: int, seed: int = 0, timeout: float = 180) -> Outcome:
    """One print on a rig whose services run; the fault strikes mid-stream."""
    rnd = random.Random(seed * 1000 + run)
    rig.new_print(run)
    t0 = time.monotonic()
    if fault in VIA_INGEST:
        feed = rig.feed_ingest(seed=seed * 1000 + run)
    else:
        feed = rig.feed(seed=seed * 1000 + run)
    notes = FAULTS[fault](rig, feed, rnd)
    settled = rig.wait_settled(feed, timeout)
    out = check(rig, feed, fault, time.monotonic() - t0)
    out.notes += notes
    if not settled:
        out.notes.append(f"not settled after {timeout:.0f}s: {rig.progress()}")
    for name, proc in rig.procs.items():
        if proc.poll() is not None:
            out.notes.append(f"{name} exited {proc.returncode}")
    return out
