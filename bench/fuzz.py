"""``python -m bench.fuzz``: a thousand and more malformed records through the running services.

    python -m bench.fuzz [--count 1200] [--layers 60] [--flips 100]

A print of ``--layers`` good layers per printer (2 printers) streams through the real broker to
the scorer and the monitor (processes, on their own embedded servers); ``--count`` malformed
layer and score records (``bench.faults.fuzz``: all its kinds) go in between. Counted: records
tried, dead-lettered with a reason that names the field the case was built to break, dead
letters naming another field, crashes (a service that exited), the services' resident memory
before and after. ``--flips`` JPEGs with one bit flipped anywhere go in too and are counted
apart: JPEG has no checksum, so most of them are images with wrong pixels, not bad records.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter

import psutil

from bench.faults.check import check
from bench.faults.fuzz import cases, jpeg_flip_any
from bench.faults.rig import Rig, RigOptions


def _rss_mb(rig: Rig) -> dict[str, float]:
    out = {}
    for name, proc in rig.procs.items():
        try:
            out[name] = round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)
        except psutil.Error:
            out[name] = float("nan")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1200)
    ap.add_argument("--layers", type=int, default=60)
    ap.add_argument("--flips", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    opts = RigOptions(printers=2, layers=args.layers, interval_s=0.05, defect_at=10**6,
                      phase1_layers=10)  # fmt: skip
    bad = cases(args.count, seed=args.seed)
    rng = random.Random(args.seed)
    flips = [jpeg_flip_any(rng) for _ in range(args.flips)]
    with Rig(opts) as rig:
        rig.start_all()
        warm = rig.feed(seed=1)  # a first print: every code path warm before measuring
        rig.wait_settled(warm, timeout=300)
        before = _rss_mb(rig)
        rig.new_print(2)
        mixed = [(i % args.layers, c.bad) for i, c in enumerate(bad)]
        t0 = time.monotonic()
        feed = rig.feed(bad=mixed, seed=2)
        settled = rig.wait_settled(feed, timeout=600)
        seconds = time.monotonic() - t0
        out = check(rig, feed, "fuzz", seconds)
        after = _rss_mb(rig)
        # The undetectable kind, apart: how many became images, how many were refused.
        dead0 = int(rig.query("SELECT coalesce(max(id), 0) FROM dead_letters")[0][0])
        rig.new_print(3)
        jf = rig.feed(bad=[(i % 10, b) for i, b in enumerate(flips)], seed=3)
        jf.done.wait(120)
        time.sleep(5)
        flip_dead = int(rig.query("SELECT count(*) FROM dead_letters WHERE id > :i", i=dead0)[0][0])
        fields = Counter(r.field for r in rig.query(
            "SELECT field FROM dead_letters WHERE id > :a AND id <= :b",
            a=feed.dead_before, b=dead0))  # fmt: skip
        crashed = {n: p.returncode for n, p in rig.procs.items() if p.poll() is not None}
    kinds = Counter(c.bad.kind for c in bad)
    report = {
        "malformed tried": len(bad),
        "dead-lettered": out.dead_lettered,
        "dead letters naming the broken field": out.dead_lettered - out.dead_misnamed,
        "naming another field": out.dead_misnamed,
        "without a reason": out.dead_without_reason,
        "good layers sent / scored once": f"{out.sent} / {out.scored_once}",
        "crashes": len(crashed),
        "rss MB before": before,
        "rss MB after": after,
        "seconds": round(seconds, 1),
        "settled": settled,
        "jpeg flips anywhere: sent / refused": f"{len(flips)} / {flip_dead}",
        "kinds": dict(kinds),
        "fields named": dict(fields),
        "notes": out.notes[:10],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    ok = out.clean and not crashed and settled
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
