"""``python -m bench.faults``: every fault, several runs each, and the table.

    python -m bench.faults [--runs 5] [--faults "database restart,broker restart"] [--keep-logs DIR]
                           [--printers 2] [--layers 24] [--json faults.json]

Each fault gets one rig (own PostgreSQL, a broker on a local S3 emulator, the services as
processes); each run on it is a new print (job) with the fault at a random point mid-stream.
Loopback only; every wait is bounded. Exit 1 if any run lost or duplicated anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.faults.check import Outcome
from bench.faults.rig import Rig, RigOptions
from bench.faults.scenarios import FAULTS, SHORT_POLL, SHORT_POLL_MS, UNDER_UP, run_fault

SUMMED = ("sent", "scored_once", "duplicates", "lost", "charts_lost", "alarms", "alarms_lost",
          "actions", "actions_duplicated")  # fmt: skip
COLUMNS = ("fault", "runs", "layers sent", "scored once", "duplicates", "lost", "charts lost",
           "alarms", "alarms lost", "actions", "actions duplicated", "clean runs")  # fmt: skip


def table(results: dict[str, list[Outcome]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for fault, outs in results.items():
        sums = [sum(getattr(o, a) for o in outs) for a in SUMMED]
        row = (fault, len(outs), *sums, f"{sum(o.clean for o in outs)}/{len(outs)}")
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--faults", default=",".join(FAULTS), help="comma-separated, of: "
                    + ", ".join(FAULTS))  # fmt: skip
    ap.add_argument("--printers", type=int, default=2)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--interval", type=float, default=0.15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep-logs", type=Path, help="copy the services' logs of every run that "
                    "is not clean to DIR/<fault>-run<n>/")  # fmt: skip
    args = ap.parse_args()
    opts = RigOptions(
        printers=args.printers, layers=args.layers, interval_s=args.interval,
        defect_at=int(args.layers * 2 / 3), phase1_layers=args.layers // 3,
    )  # fmt: skip
    results: dict[str, list[Outcome]] = {}
    model_dir = None
    for fault in [f.strip() for f in args.faults.split(",") if f.strip()]:
        if fault not in FAULTS:
            ap.error(f"unknown fault {fault!r}")
        t0 = time.monotonic()
        poll = SHORT_POLL_MS if fault in SHORT_POLL else None
        with Rig(replace(opts, max_poll_interval_ms=poll), model_dir=model_dir) as rig:
            model_dir = None  # each rig makes its own (it lives in the rig's home)
            rig.start_up() if fault in UNDER_UP else rig.start_all()
            for run in range(args.runs):
                out = run_fault(rig, fault, run, seed=args.seed)
                results.setdefault(fault, []).append(out)
                if args.keep_logs and not out.clean:
                    where = args.keep_logs / f"{fault.replace(' ', '_')}-run{run}"
                    shutil.copytree(rig.logs, where, dirs_exist_ok=True)
                print(f"{fault:26} run {run}: {'clean' if out.clean else 'NOT CLEAN'} "
                      f"{out.seconds:5.1f}s  {json.dumps(out.as_dict())}", flush=True)  # fmt: skip
        print(f"{fault}: {time.monotonic() - t0:.0f}s", flush=True)
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({f: [o.as_dict() for o in outs]
                                         for f, outs in results.items()}, indent=2))  # fmt: skip
    return 0 if all(o.clean for outs in results.values() for o in outs) else 1


if __name__ == "__main__":
    sys.exit(main())
