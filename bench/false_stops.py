"""False alarms of model + monitor on normal simulated prints: how many prints would be stopped.

    python -m bench.false_stops [--model DIR] [--prints 8] [--layers 60] [--first-seed 100]

Each print is simulated without a defect, scored by the model and fed layer by layer to a
``JobMonitor`` with the model's calibration as Phase I (the monitor's default), as the live
monitor would. Prints the first warn and stop per print and the share of prints stopped.
Every stop here is a false stop. The image size comes from the model's training data; the
model is the demo's by default (run ``make demo`` first).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ingest.simulate import simulate_print
from layerwatch.demo import demo_model_dir
from monitor.engine import JobMonitor
from monitor.service import model_calibration
from scorer.device import pick_device
from scorer.methods import load_model


@dataclass
class PrintOutcome:
    seed: int
    anomalous_layers: int
    first_warn: tuple[int, str] | None
    first_stop: tuple[int, str] | None


def run_print(model, calibration, seed: int, layers: int, size: int, category: str, batch: int):
    images = [f.image for f in simulate_print(layers, seed=seed, size=size, category=category)]
    results = []
    for i in range(0, len(images), batch):
        results += model.score_batch(images[i : i + batch])
    monitor = JobMonitor("bench", f"normal-{seed}", calibration=calibration)
    first: dict[str, tuple[int, str] | None] = {"warn": None, "stop": None}
    for layer, r in enumerate(results):
        _, events = monitor.update(layer, r.score, r.f1, r.f2, r.defect_area)
        for e in events:
            if first.get(e.level, ()) is None:
                first[e.level] = (layer, e.chart)
    return PrintOutcome(seed, sum(r.anomalous for r in results), first["warn"], first["stop"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--model", type=Path, default=demo_model_dir(Path(".layerwatch"), "fdm_rectilinear", 128)
    )
    ap.add_argument("--category", default="fdm_rectilinear", help="the model's category")
    ap.add_argument("--prints", type=int, default=8)
    ap.add_argument("--layers", type=int, default=60)
    ap.add_argument("--first-seed", type=int, default=100, help="job seed of the first print")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = json.loads((args.model / "config.json").read_text())
    training = config.get("training", {})
    height = int(training.get("image_shape", [128])[0])
    category = args.category
    model = load_model(args.model, pick_device("auto"))
    calibration = model_calibration(config)
    print(f"model {args.model} ({model.model_version}), {height}², {category}")
    outcomes = []
    for seed in range(args.first_seed, args.first_seed + args.prints):
        o = run_print(model, calibration, seed, args.layers, height, category, args.batch)
        outcomes.append(o)
        print(
            f"print seed {o.seed}: {o.anomalous_layers}/{args.layers} layers flagged, "
            f"first warn {o.first_warn}, first stop {o.first_stop}",
            flush=True,
        )
    stopped = np.mean([o.first_stop is not None for o in outcomes])
    warned = np.mean([o.first_warn is not None for o in outcomes])
    print(
        f"\nnormal prints stopped: {stopped:.0%}, warned: {warned:.0%} "
        f"({args.prints} prints × {args.layers} layers; every stop is a false stop)"
    )


if __name__ == "__main__":
    main()
