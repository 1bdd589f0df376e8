"""Model + monitor on simulated prints: false stops on normal prints, detection on defective ones.

    python -m bench.false_stops [--model DIR] [--prints 64] [--defect-prints 64] [--layers 200]
                                [--first-seed 1000] [--calibration-prints 16]
                                [--designs static:1.5,static:0.5,levels] [--scores FILE]

Every print is simulated and scored by the model once (``--scores FILE`` keeps those scores,
print by print, so the monitor designs can be compared again without scoring and a stopped
run resumes where it was; a layer-aware model gets each layer's previous layer and expected
outline, as from `ingest simulate`), then fed layer by layer to a
``JobMonitor`` as the live monitor would, once per design:

- ``static:K``: Phase I from the model's calibration (one layer from each of many prints), the
  charts on z against the population's centre, CUSUM reference value K (1.5 was the default
  before the level model);
- ``levels``: the same plus the level model fitted on ``--calibration-prints`` normal prints
  (seeds from monitor.calibration_prints.CALIBRATION_SEED, never a judged print), the charts on the
  innovations of each job's own centre, k from the design (half the shift that matters);
- ``memory``: ``levels`` with the centre's memory chosen by design
  (monitor.level_design.design_memory: a 2-sigma step, 1 000-layer budget);
- ``job``: Phase I from each job's first ``--phase1-layers`` layers.

Normal prints (job seeds from ``--first-seed``): every stop is a false stop. Defective prints
(kinds × severities in turn, onset drawn uniformly from layer 30 to ``layers - 30``): a stop
before the onset is a false stop too, a stop from the onset on is a detection (delay = stop
layer − onset). A defect is *visible* when the model's own per-layer verdict flags at least
half of its first 10 layers (what the per-layer score or map can see; 2 % of normal layers
are flagged too, so "any flagged layer" would call almost every long-lived defect visible).
The false-stop rate per 1 000 layers assumes a constant hazard:
1 − exp(−1000 · false stops / in-control layers charted), in-control layers being all layers
of normal prints and those before the onset of defective ones.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ingest.simulate.defect_types import DefectEvent
from layerwatch.demo import demo_model_dir
from monitor.alarms import AlarmPolicy, StartPolicy
from monitor.calibration import Calibration, fit_print_levels, model_calibration
from monitor.calibration_prints import CALIBRATION_SEED, score_simulated_print
from monitor.design import ChartDesign
from monitor.engine import JobMonitor
from monitor.level_design import design_memory

VISIBLE_LAYERS = 10
DEFAULT_DEFECTS = "stringing,under_extrusion,crack,voids,over_extrusion,warping,layer_shift"


@dataclass(frozen=True)
class PrintRun:
    """One simulated print's per-layer model outputs."""

    name: str
    seed: int
    onset: int | None  # None: a normal print
    kind: str | None
    severity: float | None
    layers: np.ndarray  # (n, 5): score, f1, f2, largest defect area, model verdict

    @property
    def visible(self) -> bool:
        """The model's own per-layer verdict flags at least half of the defect's first
        VISIBLE_LAYERS layers: a defect the per-layer score or map can see."""
        if self.onset is None:
            return False
        return bool(self.layers[self.onset : self.onset + VISIBLE_LAYERS, 4].mean() >= 0.5)

    def to_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in ("name", "seed", "onset", "kind", "severity")},
                "layers": self.layers.tolist()}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> PrintRun:
        return cls(d["name"], d["seed"], d["onset"], d["kind"], d["severity"],
                   np.asarray(d["layers"], dtype=float))  # fmt: skip


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

    @property
    def in_control_layers(self) -> int:
        """Layers charted while the print was normal (up to the stop, if a false one)."""
        end = len(self.run.layers) if self.run.onset is None else self.run.onset
        return min(end, self.first_stop[0] + 1) if self.false_stop else end


def monitor_print(
    run: PrintRun,
    calibration: Calibration,
    phase1_layers: int,
    design: ChartDesign,
    warmup_layers: int = 0,
) -> Outcome:
    monitor = JobMonitor(
        "bench", f"{run.name}-{run.seed}", calibration=calibration,
        phase1_layers=phase1_layers, design=design,
        policy=AlarmPolicy(start=StartPolicy(warmup_layers=warmup_layers)),
    )  # fmt: skip
    first: dict[str, tuple[int, str] | None] = {"warn": None, "stop": None}
    for layer, (score, f1, f2, area, _) in enumerate(run.layers):
        _, events = monitor.update(layer, score, f1, f2, area)
        for e in events:
            if first.get(e.level, ()) is None:
                first[e.level] = (layer, e.chart)
    return Outcome(run, first["warn"], first["stop"])


def summarise(label: str, outcomes: Sequence[Outcome], k: float) -> dict:
    normal = [o for o in outcomes if o.run.onset is None]
    defect = [o for o in outcomes if o.run.onset is not None]
    visible = [o for o in defect if o.run.visible]
    false_stops = sum(o.false_stop for o in outcomes)
    at_risk = sum(o.in_control_layers for o in outcomes)
    delays = [o.delay for o in defect if o.delay is not None]
    shifts = [o for o in defect if o.run.kind == "layer_shift"]
    mild = min((o.run.severity for o in shifts), default=None)
    mild_shift = [o for o in shifts if o.run.severity == mild]
    return {
        "design": label,
        "cusum_k": k,
        "normal_prints": len(normal),
        "normal_stopped": sum(o.false_stop for o in normal),
        "defect_prints": len(defect),
        "stopped_before_onset": sum(o.false_stop for o in defect),
        "false_stop_per_1000_layers": 1 - math.exp(-1000 * false_stops / max(at_risk, 1)),
        "visible": len(visible),
        "visible_caught": sum(o.delay is not None for o in visible),
        "detected": len(delays),
        "median_delay": float(np.median(delays)) if delays else None,
        "mild_layer_shift_delays": [o.delay for o in mild_shift],
        "stop_charts": sorted({o.first_stop[1] for o in outcomes if o.first_stop}),
        "missed": sorted(f"{o.run.name}@{o.run.onset}" for o in defect if o.delay is None),
    }


def _defective(args: argparse.Namespace) -> list[tuple[str, int, DefectEvent]]:
    kinds = [k for k in args.defects.split(",") if k]
    severities = [float(s) for s in args.severities.split(",")]
    rng = np.random.default_rng(args.first_seed)
    out = []
    for i in range(args.defect_prints if kinds else 0):
        kind, severity = kinds[i % len(kinds)], severities[(i // len(kinds)) % len(severities)]
        onset = int(rng.integers(30, max(31, args.layers - 30)))
        out.append((f"{kind}@{severity:g}", args.first_seed + 100_000 + i,
                    DefectEvent(kind, onset, severity)))  # fmt: skip
    return out


def _planned(args: argparse.Namespace) -> list[tuple[str, int, DefectEvent | None]]:
    """Every print to score, in order: (name, job seed, defect or None); calibration prints
    are named "calibration"."""
    plan: list[tuple[str, int, DefectEvent | None]] = [
        ("normal", seed, None) for seed in range(args.first_seed, args.first_seed + args.prints)
    ]
    plan += list(_defective(args))
    plan += [("calibration", CALIBRATION_SEED + i, None) for i in range(args.calibration_prints)]
    return plan


def score_all(
    model_dir: Path, version: str, args: argparse.Namespace, cache: Path | None
) -> tuple[list[PrintRun], list[list[list[float]]]]:
    """Score every planned print once. With a cache file, each print is saved as soon as it
    is scored and a rerun scores only what is missing (hours of scoring survive a stop); a
    cache written by another model version is refused."""
    from rich.progress import Progress

    done: dict[str, dict] = {}
    if cache is not None and cache.exists():
        doc = json.loads(cache.read_text())
        if doc.get("model_version") not in (None, version):
            raise SystemExit(
                f"{cache} holds scores of model {doc['model_version']}, not {version}: "
                "give another --scores file"
            )
        done = {f"{d['name']}/{d['seed']}": d for d in doc.get("runs", [])}
    plan = _planned(args)
    todo = [p for p in plan if f"{p[0]}/{p[1]}" not in done]
    if todo:
        from scorer.device import pick_device
        from scorer.methods import load_model

        model = load_model(model_dir, pick_device("auto"))
        kw = {"size": args.size, "category": args.category, "batch": args.batch}
        with Progress() as progress:
            task = progress.add_task(
                f"scoring prints ({len(plan) - len(todo)} cached)", total=len(todo)
            )
            for name, seed, event in todo:
                rows = score_simulated_print(
                    model, seed, args.layers if name != "calibration" else args.calibration_layers,
                    defects=[event] if event else [], **kw,
                )  # fmt: skip
                run = PrintRun(name, seed, event and event.layer, event and event.kind,
                               event and event.severity, rows)  # fmt: skip
                done[f"{name}/{seed}"] = run.to_dict()
                if cache is not None:
                    tmp = cache.with_suffix(".tmp")
                    tmp.write_text(json.dumps({"model_version": version,
                                               "runs": list(done.values())}))  # fmt: skip
                    tmp.replace(cache)
                progress.advance(task)
    runs = [PrintRun.from_dict(done[f"{n}/{s}"]) for n, s, _ in plan]
    calibration = [r.layers[:, :3].tolist() for r in runs if r.name == "calibration"]
    return [r for r in runs if r.name != "calibration"], calibration


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--model", type=Path, default=demo_model_dir(Path(".layerwatch"), "fdm_rectilinear", 128)
    )
    ap.add_argument("--category", default="fdm_rectilinear", help="the model's category")
    ap.add_argument("--prints", type=int, default=64, help="normal prints")
    ap.add_argument("--defect-prints", type=int, default=64, help="defective prints")
    ap.add_argument("--layers", type=int, default=200)
    ap.add_argument("--first-seed", type=int, default=1000, help="job seed of the first print")
    ap.add_argument("--defects", default=DEFAULT_DEFECTS, help="kinds ('' for none)")
    ap.add_argument("--severities", default="0.3,0.6,0.9")
    ap.add_argument("--calibration-prints", type=int, default=16, help="for the level model")
    ap.add_argument("--calibration-layers", type=int, default=100)
    ap.add_argument("--designs", default="static:1.5,static:0.5,levels", help="see above")
    ap.add_argument("--phase1-layers", type=int, default=20, help="job Phase I length")
    ap.add_argument(
        "--warmup-layers", type=int, default=0, help="each job's first layers left uncharted"
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave default)")
    ap.add_argument(
        "--scores", type=Path,
        help="score cache: each print saved as it is scored; a rerun scores only what is missing",
    )  # fmt: skip
    ap.add_argument("--json", type=Path, help="write the summaries here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = json.loads((args.model / "config.json").read_text())
    args.size = int(config.get("training", {}).get("image_shape", [128])[0])
    print(f"model {args.model} ({config['model_version']}), {args.size}², {args.category}")
    runs, calibration = score_all(args.model, config["model_version"], args, args.scores)
    print(f"scored {len(runs)} prints × {args.layers} layers, {len(calibration)} calibration ones")

    static = model_calibration(config)
    levels = None
    if calibration:
        levels = fit_print_levels(static, calibration)
        print(
            f"level model: m0 {levels.m0:.3f}, between-print s.d. {levels.between_sd:.3f}, "
            f"within {levels.within_sd:.3f}, a0 {levels.a0:.2f}, memory {levels.memory:.1f} "
            "layers"
        )
    summaries = []
    designed = None
    for label in args.designs.split(","):
        kind, _, k = label.partition(":")
        if kind in ("levels", "memory") and levels is None:
            raise SystemExit(f"design {label!r} needs calibration prints (--calibration-prints)")
        if kind == "memory" and designed is None:
            assert levels is not None
            designed = design_memory(levels, ChartDesign(levels=True)).levels
            print(f"designed memory: {designed.memory:.1f} layers (fitted {levels.memory:.1f})")
        cal = {"static": replace(static, levels=None), "levels": replace(static, levels=levels),
               "memory": replace(static, levels=designed), "job": Calibration()}[kind]  # fmt: skip
        design = ChartDesign(k=float(k) if k else None, levels=cal.levels is not None)
        outcomes = [
            monitor_print(r, cal, args.phase1_layers, design, args.warmup_layers) for r in runs
        ]
        s = summarise(label, outcomes, design.cusum_k)
        summaries.append(s)
        print(
            f"\n== {label} (CUSUM k = {design.cusum_k:g})\n"
            f"  false stops: normal {s['normal_stopped']}/{s['normal_prints']}, before the onset "
            f"{s['stopped_before_onset']}/{s['defect_prints']}; "
            f"P(false stop per 1000 layers) = {s['false_stop_per_1000_layers']:.3f}\n"
            f"  visible defects caught {s['visible_caught']}/{s['visible']}, all detected "
            f"{s['detected']}/{s['defect_prints']}, median delay {s['median_delay']} layers; "
            f"mild layer shift delays {s['mild_layer_shift_delays']}\n"
            f"  stops by {', '.join(s['stop_charts'])}; missed {', '.join(s['missed']) or 'none'}"
        )
    if args.json:
        args.json.write_text(json.dumps({"levels": levels and levels.to_dict(),
                                         "summaries": summaries}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
