"""Model + monitor on simulated prints: false stops on normal prints, detection on defective ones.

    python -m bench.false_stops [--model DIR] [--prints 8] [--layers 60] [--first-seed 100]
                                [--defects KIND,...] [--onset 30]
                                [--phase1 model,model-scores,job]
                                [--k 0.5,1.5]

Each print is simulated, scored by the model and fed layer by layer to a ``JobMonitor`` as the
live monitor would, once per Phase I source (``model``: the model's calibration scores, the
monitor's default; ``model-scores``: the model's scores and features with the cluster areas
from each job's first layers, as for models that stored no areas; ``job``: each job's first
``--phase1-layers`` layers). Normal prints (job
seeds from ``--first-seed``): every stop is a false stop. Defective prints (one per kind in
``--defects`` and severity in ``--severities``, onset at ``--onset``): a stop before the onset
is a false stop too, a stop from the onset on is a detection (delay = stop layer − onset).
The scores are computed once and shared by the Phase I variants. The image size comes from
the model's training data; the model is the demo's by default (run ``make demo`` first).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ingest.simulate import simulate_print
from ingest.simulate.defect_types import DefectEvent
from layerwatch.demo import demo_model_dir
from monitor.calibration import Calibration, model_calibration
from monitor.design import ChartDesign
from monitor.engine import JobMonitor
from scorer.data import iter_batches
from scorer.device import pick_device
from scorer.methods import load_model

DEFAULT_DEFECTS = "stringing,under_extrusion,crack,voids,over_extrusion,warping,layer_shift"


@dataclass(frozen=True)
class PrintRun:
    """One simulated print's per-layer model outputs."""

    name: str
    seed: int
    onset: int | None  # None: a normal print
    layers: np.ndarray  # (n, 4): score, f1, f2, largest defect area
    flagged: int  # layers over the model's own threshold


@dataclass(frozen=True)
class Outcome:
    run: PrintRun
    first_warn: tuple[int, str] | None
    first_stop: tuple[int, str] | None

    @property
    def false_stop(self) -> bool:
        stop, onset = self.first_stop, self.run.onset
        return stop is not None and (onset is None or stop[0] < onset)

    @property
    def delay(self) -> int | None:
        """Layers from the onset to the stop (None: missed or stopped falsely before it)."""
        stop, onset = self.first_stop, self.run.onset
        return None if stop is None or onset is None or stop[0] < onset else stop[0] - onset


def score_print(model, name: str, seed: int, defects: Sequence[DefectEvent], args) -> PrintRun:
    frames = simulate_print(args.layers, defects, seed=seed, size=args.size, category=args.category)
    images = [f.image for f in frames]
    results = [r for batch in iter_batches(images, args.batch) for r in model.score_batch(batch)]
    layers = np.array([[r.score, r.f1, r.f2, r.largest_area] for r in results], dtype=float)
    onset = defects[0].layer if defects else None
    return PrintRun(name, seed, onset, layers, sum(r.anomalous for r in results))


def monitor_print(
    run: PrintRun, calibration: Calibration, phase1_layers: int, design: ChartDesign
) -> Outcome:
    monitor = JobMonitor(
        "bench",
        f"{run.name}-{run.seed}",
        calibration=calibration,
        phase1_layers=phase1_layers,
        design=design,
    )
    first: dict[str, tuple[int, str] | None] = {"warn": None, "stop": None}
    for layer, (score, f1, f2, area) in enumerate(run.layers):
        _, events = monitor.update(layer, score, f1, f2, area)
        for e in events:
            if first.get(e.level, ()) is None:
                first[e.level] = (layer, e.chart)
    return Outcome(run, first["warn"], first["stop"])


def summarise(label: str, k: float, outcomes: Sequence[Outcome]) -> dict:
    normal = [o for o in outcomes if o.run.onset is None]
    defect = [o for o in outcomes if o.run.onset is not None]
    delays = [o.delay for o in defect if o.delay is not None]
    missed = [o.run.name for o in defect if o.first_stop is None]
    return {
        "phase1": label,
        "cusum_k": k,
        "normal_prints": len(normal),
        "normal_stopped": sum(o.false_stop for o in normal),
        "defect_prints": len(defect),
        "stopped_before_onset": sum(o.false_stop for o in defect),
        "detected": len(delays),
        "median_delay": float(np.median(delays)) if delays else None,
        "missed": missed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--model", type=Path, default=demo_model_dir(Path(".layerwatch"), "fdm_rectilinear", 128)
    )
    ap.add_argument("--category", default="fdm_rectilinear", help="the model's category")
    ap.add_argument("--prints", type=int, default=8, help="normal prints")
    ap.add_argument("--layers", type=int, default=60)
    ap.add_argument("--first-seed", type=int, default=100, help="job seed of the first print")
    ap.add_argument("--defects", default=DEFAULT_DEFECTS, help="kinds ('' for none)")
    ap.add_argument("--severities", default="0.5,0.9")
    ap.add_argument("--onset", type=int, default=30, help="layer the defects start on")
    ap.add_argument("--phase1", default="model,model-scores,job", help="Phase I sources to compare")
    ap.add_argument("--phase1-layers", type=int, default=20, help="job Phase I length")
    ap.add_argument(
        "--k", default="", help="CUSUM reference values to compare (default: the design's)"
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave default)")
    ap.add_argument("--json", type=Path, help="write the summaries here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = json.loads((args.model / "config.json").read_text())
    args.size = int(config.get("training", {}).get("image_shape", [128])[0])
    model = load_model(args.model, pick_device("auto"))
    print(f"model {args.model} ({model.model_version}), {args.size}², {args.category}")

    runs = []
    for seed in range(args.first_seed, args.first_seed + args.prints):
        runs.append(score_print(model, "normal", seed, [], args))
    kinds = [k for k in args.defects.split(",") if k]
    severities = [float(s) for s in args.severities.split(",")]
    seed = args.first_seed + 100
    for severity in severities:
        for kind in kinds:
            event = DefectEvent(kind, args.onset, severity)
            runs.append(score_print(model, f"{kind}@{severity:g}", seed, [event], args))
            seed += 1
    print(f"scored {len(runs)} prints × {args.layers} layers")

    from_model = model_calibration(config)
    sources = {
        "model": from_model,
        # the model's scores and features, the cluster areas from the job's first layers (how
        # models from before the areas were stored run)
        "model-scores": replace(from_model, areas=None),
        "job": Calibration(),
    }
    ks = [float(k) for k in args.k.split(",") if k] or [ChartDesign().k]
    summaries = []
    for label in args.phase1.split(","):
        for k in ks:
            design = ChartDesign(k=k)
            outcomes = [monitor_print(r, sources[label], args.phase1_layers, design) for r in runs]
            print(f"\n== Phase I from the {label}, CUSUM k = {k:g}")
            for o in outcomes:
                what = "normal" if o.run.onset is None else f"{o.run.name} from {o.run.onset}"
                print(
                    f"  seed {o.run.seed} {what}: {o.run.flagged}/{args.layers} flagged, "
                    f"first warn {o.first_warn}, first stop {o.first_stop}"
                )
            s = summarise(label, k, outcomes)
            summaries.append(s)
            print(
                f"  normal prints stopped {s['normal_stopped']}/{s['normal_prints']}; defective "
                f"prints: stopped before the onset {s['stopped_before_onset']}, detected "
                f"{s['detected']}/{s['defect_prints']} (median delay {s['median_delay']} "
                f"layers), missed {', '.join(s['missed']) or 'none'}"
            )
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1))


if __name__ == "__main__":
    main()
