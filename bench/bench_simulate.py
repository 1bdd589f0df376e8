"""Simulator throughput on one core: images/s per process against the 50 img/s target.

Run: python -m bench.bench_simulate [--size 256] [--seconds 2]

Threads are pinned to 1 (OpenCV, torch, BLAS) so the figure is per core. Baselines measured in
the same run put the number in context: drawing a 256² Gaussian noise image with numpy, and
PNG-encoding one simulated frame (what writing a data set costs anyway).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ingest.simulate import CATEGORIES, DefectEvent, kinds_for  # noqa: E402
from ingest.simulate.printjob import make_renderer, render_layer  # noqa: E402

TARGET = 50.0  # images/s on one core at 256×256


def _pin_threads() -> None:
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # the simulator does not need torch
        pass


def rate(step: Callable[[int], object], seconds: float) -> float:
    """Calls per second of ``step(i)`` over about ``seconds`` (after one warm-up call)."""
    step(0)
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds or n < 5:
        step(n + 1)
        n += 1
    return n / elapsed


def bench_process(process: str, size: int, seconds: float) -> tuple[float, float]:
    """(normal layers/s, defect layers/s) over all categories of a process."""
    cats = [c for c in CATEGORIES.values() if c.process == process]
    renderers = [make_renderer(c, seed=i, size=size, layers=200) for i, c in enumerate(cats)]
    kinds = [(r, k) for r, c in zip(renderers, cats, strict=True) for k in kinds_for(c)]

    def normal(i: int) -> object:
        return render_layer(renderers[i % len(renderers)], 5 + i % 190).image

    def defect(i: int) -> object:
        r, k = kinds[i % len(kinds)]
        layer = 5 + i % 190
        return render_layer(r, layer, [DefectEvent(k, layer, 0.7)]).image

    return rate(normal, seconds), rate(defect, seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = ap.parse_args()
    _pin_threads()
    s = args.size
    rng = np.random.default_rng(0)
    frame = render_layer(make_renderer(CATEGORIES["fdm_rectilinear"], 0, s, 100), 50).image
    noise = rate(lambda i: rng.standard_normal((s, s), dtype=np.float32), args.seconds / 2)
    png = rate(lambda i: cv2.imencode(".png", frame), args.seconds / 2)
    print(f"simulator throughput, {s}x{s}, 1 thread (target {TARGET:.0f} img/s)")
    print(f"  baseline numpy N(0,1) {s}x{s} float32 draw : {noise:9.1f} /s")
    print(f"  baseline PNG encode of one {s}x{s} frame    : {png:9.1f} /s")
    for process in ("fdm", "lpbf"):
        normal, defect = bench_process(process, s, args.seconds)
        mixed = 2.0 / (1.0 / normal + 1.0 / defect)
        for label, v in (("normal", normal), ("defect", defect), ("50/50 mix", mixed)):
            print(
                f"  {process:4s} {label:9s}: {v:6.1f} img/s  = {v / TARGET:4.2f}x target, "
                f"{noise / v:5.1f}x the noise draw, {png / v:4.1f}x a PNG encode"
            )


if __name__ == "__main__":
    main()
