"""Chart updates per second through JobMonitor, against a bare-loop baseline from the same run.

A "chart update" is one chart's update for one layer. The baseline is a plain Python loop doing
a single EWMA recursion per value, the floor any per-layer chart code runs on; the ratio makes
the figure comparable across machines. No timing asserts: this prints, CI reads.

    python -m bench.bench_monitor [--jobs 20] [--layers 2000] [--all-charts]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from monitor.alarms import AlarmPolicy, parse_policy
from monitor.calibration import fit_calibration
from monitor.engine import JobMonitor

ALL_CHARTS = """
[warn]
charts = ["shewhart", "ewma", "cusum", "selfstart", "mewma", "t2", "cluster",
          "adwin", "pagehinkley"]
rules = "nelson"
"""


def _baseline(values: list[float], lam: float = 0.2) -> float:
    """Bare EWMA recursions per second."""
    start = time.perf_counter()
    e = 0.0
    for x in values:
        e = lam * x + (1.0 - lam) * e
    return len(values) / (time.perf_counter() - start)


def _jobs(n_jobs: int, layers: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_jobs):
        score = rng.gamma(2.0, size=layers)
        score[layers // 2 :] += 1.0  # a shift half way, so alarms are part of the work
        f = rng.standard_normal((layers, 2))
        area = rng.poisson(3.0, layers).astype(float)
        out.append(np.column_stack([np.arange(1, layers + 1), score, f, area]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--layers", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--all-charts", action="store_true", help="every chart incl. drift, Nelson rules"
    )
    args = ap.parse_args()
    policy = parse_policy(ALL_CHARTS).default if args.all_charts else AlarmPolicy()

    rng = np.random.default_rng(args.seed + 1)
    calibration = fit_calibration(
        rng.gamma(2.0, size=2000), rng.standard_normal((2000, 2)), rng.poisson(3.0, 2000)
    )
    jobs = [job.tolist() for job in _jobs(args.jobs, args.layers, args.seed)]
    JobMonitor("warm", "up", calibration=calibration, policy=policy)  # cached design: not timed

    updates = alarms = 0
    start = time.perf_counter()
    for i, rows in enumerate(jobs):
        mon = JobMonitor("printer", f"job{i}", calibration=calibration, policy=policy)
        for layer, score, f1, f2, area in rows:
            points, events = mon.update(int(layer), score, f1, f2, area)
            updates += len(points)
            alarms += len(events)
    elapsed = time.perf_counter() - start
    rate = updates / elapsed

    values = np.random.default_rng(args.seed).standard_normal(max(updates, 10**6)).tolist()
    base = max(_baseline(values) for _ in range(3))
    charts = updates / (args.jobs * args.layers)
    print(f"JobMonitor: {updates:,} chart updates ({charts:.1f} charts/layer) in {elapsed:.2f} s")
    print(f"  {rate:,.0f} chart updates/s, {rate / charts:,.0f} layers/s, {alarms} alarms")
    print(f"baseline (bare EWMA loop): {base:,.0f} updates/s")
    print(f"ratio JobMonitor / baseline: {rate / base:.4f} (1/{base / rate:.1f})")


if __name__ == "__main__":
    main()
