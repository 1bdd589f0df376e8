"""``python -m bench.fleet``: N printers streaming through the real broker to the scorer(s) and
the monitor; latency, lag, CPU and memory per fleet size, and the largest fleet that holds.

    python -m bench.fleet [--printers 1,4,8,16] [--interval 10] [--duration 60]
                          [--scorers 1] [--size 256] [--model DIR] [--json fleet.json]

Each printer sends a simulated layer (256² by default) every ``--interval`` s, the printers
spread evenly over the interval (a camera per printer, not one burst), for ``--duration`` s; a
stringing defect starts halfway, so each printer also raises alarms. Measured per fleet size,
on the stored rows: capture → score stored and capture → alarm opened (p50/p95), the model's
share of the first (the rest: waiting in the topic, decoding, the database), how long the
backlog took to drain after the last layer was sent (it drains before the next size starts),
the largest consumer lag the services reported, their CPU (% of one core) and resident
memory. A fleet holds when every layer is scored and p95 capture → score stored ≤
``--target`` s. The model defaults to the demo's (``make demo`` trains it). All on
127.0.0.1: the services' own embedded servers, stopped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil

from bench.faults.rig import Rig, RigOptions
from ingest.messages import LayerMessage
from ingest.producer import LayerProducer
from ingest.simulate import simulate_print
from layerwatch.demo import demo_model_dir


def _frames(size: int, n: int, seed: int, defect_at: int) -> list[LayerMessage]:
    """Pre-encoded layers (PNG encoding is the camera side's work, not the pipeline's)."""
    frames = simulate_print(n, [f"stringing@{defect_at}:0.8"], seed=seed, size=size)
    return [LayerMessage.from_image("x", "x", f.layer, f.image) for f in frames]


def _stream(rig: Rig, printers: int, layers: list[LayerMessage], interval: float,
            stop: threading.Event) -> int:  # fmt: skip
    """Send layer i of printer p at t0 + i·interval + p·interval/printers; returns sent."""
    sent = 0
    t0 = time.monotonic() + 1.0
    with LayerProducer(rig.bootstrap, 1 << 24, rig.topics.layers) as prod:
        for i, frame in enumerate(layers):
            for p in range(printers):
                at = t0 + i * interval + p * interval / printers
                while (wait := at - time.monotonic()) > 0:
                    if stop.wait(min(wait, 0.5)):
                        return sent
                msg = dataclasses.replace(frame, printer=f"p{p}", job=rig.job,
                                          captured_at=datetime.now(UTC))  # fmt: skip
                prod.send(msg)
                prod._producer.poll(0)
                sent += 1
    return sent


def _sample(rig: Rig, names: list[str], stop: threading.Event, out: dict) -> None:
    procs = {n: psutil.Process(rig.procs[n].pid) for n in names}
    for p in procs.values():
        p.cpu_percent(None)
    lag = {n: 0 for n in names}
    rss = {n: 0.0 for n in names}
    t0 = time.monotonic()
    while not stop.wait(1.0):
        for n in names:
            lag[n] = max(lag[n], int(rig.health(n).get("lag") or 0))
            with contextlib.suppress(psutil.Error):
                rss[n] = max(rss[n], procs[n].memory_info().rss / 2**20)
    elapsed = time.monotonic() - t0
    cpu = {}
    for n, p in procs.items():
        try:
            cpu[n] = round(p.cpu_percent(None), 0)  # average since the first call
        except psutil.Error:
            cpu[n] = float("nan")
    out.update(lag=lag, rss_mb={n: round(v) for n, v in rss.items()}, cpu_pct=cpu,
               sampled_s=round(elapsed))  # fmt: skip


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def run_fleet(rig: Rig, printers: int, args: argparse.Namespace,
              layers: list[LayerMessage]) -> dict:  # fmt: skip
    rig.new_print(printers)
    names = [n for n in rig.procs]
    stop, stats = threading.Event(), {}
    sampler = threading.Thread(target=_sample, args=(rig, names, stop, stats), daemon=True)
    sampler.start()
    sent = _stream(rig, printers, layers, args.interval, threading.Event())
    t_sent = time.monotonic()
    deadline = t_sent + args.drain  # the backlog drains before the next fleet size starts
    while time.monotonic() < deadline and rig.progress()[0] < sent:
        time.sleep(0.5)
    drain = time.monotonic() - t_sent
    time.sleep(2.0)
    stop.set()
    sampler.join(10)
    rows = rig.query("SELECT e2e_latency_ms, latency_ms FROM scores WHERE job = :j", j=rig.job)
    e2e = [r.e2e_latency_ms / 1000 for r in rows]
    model = [r.latency_ms / 1000 for r in rows]
    waiting = [a - b for a, b in zip(e2e, model, strict=True)]  # queue, decode, database
    alarm = rig.query(
        "SELECT extract(epoch FROM a.opened_at - l.captured_at) AS s FROM alarms a "
        "JOIN layers l ON (l.printer, l.job, l.layer) = (a.printer, a.job, a.layer) "
        "WHERE a.job = :j",
        j=rig.job,
    )
    to_alarm = [float(r.s) for r in alarm]
    p95 = _pct(e2e, 95)
    return {
        "printers": printers, "layers/s": round(printers / args.interval, 2), "sent": sent,
        "scored": len(rows), "score p50 s": _pct(e2e, 50), "score p95 s": p95,
        "model p50 s": _pct(model, 50), "rest p50 s": _pct(waiting, 50),
        "drain s": round(drain, 1), "alarm p50 s": _pct(to_alarm, 50),
        "alarm p95 s": _pct(to_alarm, 95), "alarms": len(to_alarm), **stats,
        "holds": len(rows) == sent and p95 is not None and p95 <= args.target,
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--printers", default="1,4,8,16")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between layers")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per fleet size")
    ap.add_argument("--scorers", type=int, default=1)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--target", type=float, default=2.0, help="p95 capture → score, seconds")
    demo = demo_model_dir(Path(".layerwatch"), "fdm_rectilinear", 128)
    ap.add_argument("--model", type=Path, default=demo)
    ap.add_argument("--drain", type=float, default=300.0, help="longest wait for the backlog")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not (args.model / "config.json").exists():
        ap.error(f"no model at {args.model}: run `make demo` first, or pass --model")
    n_layers = max(int(args.duration / args.interval), 2)
    layers = _frames(args.size, n_layers, seed=5, defect_at=n_layers // 2)
    opts = RigOptions(scorers=args.scorers, size=args.size, batch=8, phase1_layers=2)
    results = []
    with Rig(opts, model_dir=args.model) as rig:
        rig.start_all()
        rig.new_print(0)  # warm-up: the model's first passes are slow, and not the fleet's
        _stream(rig, 1, layers[:3], 1.0, threading.Event())
        rig.wait_scored(3, timeout=120)
        for n in [int(x) for x in args.printers.split(",")]:
            res = run_fleet(rig, n, args, layers)
            results.append(res)
            print(json.dumps(res), flush=True)
    cols = ("printers", "layers/s", "sent", "scored", "score p50 s", "score p95 s",
            "model p50 s", "rest p50 s", "drain s", "alarm p50 s", "alarm p95 s", "lag",
            "cpu_pct", "rss_mb", "holds")  # fmt: skip
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r.get(c)) for c in cols) + " |")
    held = [r["printers"] for r in results if r["holds"]]
    print(f"\nlargest fleet held at 1 layer / {args.interval:g} s per printer with p95 <= "
          f"{args.target:g} s: {max(held) if held else 'none'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
