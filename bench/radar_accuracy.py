"""RADAR accuracy on simulator data sets: generate, train (within the time budget), evaluate.

    python -m bench.radar_accuracy --out DIR [--categories fdm:A,lpbf:B] [--seed S]

Prints one Markdown table per category and writes DIR/summary.json. ``--t-sweep`` also
re-calibrates the trained network at every candidate t and reports the test AUROC of each, to
check the anomaly-free t* criterion against the truth (the test set is never used to choose).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from scorer.device import pick_device
from scorer.evaluate import evaluate
from scorer.methods import TrainSettings, load_model
from scorer.radar import RadarScorer
from scorer.train import load_train_data, train_model

METRICS = (
    "image_auroc",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "false_positive_rate",
    "pixel_auroc",
    "pro",
    "images_per_second",
)


def default_categories() -> list[str]:
    """Two FDM categories and both LPBF ones (the bare powder bed and the fused, hatched
    cross-sections in powder: the hard stochastic texture, reported on its own)."""
    from ingest.simulate import CATEGORIES

    fdm = [f"fdm:{c.name}" for c in CATEGORIES.values() if c.process == "fdm"][:2]
    return fdm + [f"lpbf:{c.name}" for c in CATEGORIES.values() if c.process == "lpbf"]


def model_specs(specs: list[str]) -> list[tuple[Path, Path]]:
    """(model directory, test category directory) pairs from ``MODEL_DIR:CATEGORY_DIR``
    specs, or from a run's ``--out`` folder (every model it trained, with its data set: the
    layout main() writes)."""
    pairs: list[tuple[Path, Path]] = []
    for spec in specs:
        if ":" in spec:
            model, _, category = spec.partition(":")
            pairs.append((Path(model), Path(category)))
            continue
        root = Path(spec)
        for found in sorted((root / "models").iterdir()):
            process, _, category = found.name.partition("_")
            pairs.append((found, root / "data" / process / category))
    return pairs


def ensure_dataset(
    root: Path, process: str, category: str, args: argparse.Namespace, reference: bool = False
) -> Path:
    """The category's data set, written unless a run already wrote it (with references, when
    ``reference``: each image's previous layer and expected outline)."""
    target = root / process / category
    manifest = target / "simulation.json"
    if reference:
        if manifest.is_file() and json.loads(manifest.read_text()).get("reference"):
            return target
    elif (target / "train" / "good").is_dir() and (target / "test").is_dir():
        return target
    from ingest.simulate import write_dataset

    summary = write_dataset(
        root / process,
        category,
        process=process,
        size=args.size,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_test_defect=args.n_test_defect,
        seed=args.seed,
        reference=reference,
    )
    return Path(summary["root"])


def t_sweep(model_dir: Path, data: Path, category: Path, settings: TrainSettings) -> dict:
    """Test AUROC when calibrating at each candidate t (diagnostic only)."""
    base = load_model(model_dir, pick_device("cpu"))
    assert isinstance(base, RadarScorer)
    cal = load_train_data(data, settings).calibration
    out = {}
    for t in settings.t_candidates:
        scorer = RadarScorer(base.model, replace(base.config, t_star=t), base.device)
        scorer.calibrate(cal, [t])
        rep = evaluate(scorer, category)
        out[t] = {"image_auroc": rep.image_auroc, "pixel_auroc": rep.pixel_auroc, "f1": rep.f1}
    return out


def table(name: str, rep: dict, extra: dict) -> str:
    lines = [f"### {name}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {rep[k]:.4f} |" for k in METRICS]
    lines += [
        f"| {k}, 95 % bootstrap interval | {lo:.3f}–{hi:.3f} |"
        for k, (lo, hi) in rep["ci95"].items()
    ]
    lines += [
        f"| image AUROC, {kind} vs good | {v['image_auroc']:.3f} |"
        for kind, v in rep["per_kind"].items()
        if kind != "good"
    ]
    lines += [f"| {k} | {v} |" for k, v in extra.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--categories", default="", help="process:category,… (default: 2 FDM + both LPBF)"
    )
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-test-good", type=int, default=50)
    ap.add_argument("--n-test-defect", type=int, default=8, help="per defect kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--stride", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--t-candidates", default="100")
    ap.add_argument("--train-t-max", type=int, default=None)
    ap.add_argument("--option", action="append", default=[], help="RADAR option key=value")
    ap.add_argument("--no-rotations", action="store_true")
    ap.add_argument("--t-sweep", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from scorer.cli import _options

    specs = [s for s in args.categories.split(",") if s] or default_categories()
    settings = TrainSettings(
        seed=args.seed,
        max_minutes=args.max_minutes,
        steps=args.steps,
        batch_size=args.batch,
        width=args.width,
        patch=args.patch,
        stride=args.stride,
        lr=args.lr,
        t_candidates=tuple(int(t) for t in args.t_candidates.split(",")),
        rotations=not args.no_rotations,
        train_t_max=args.train_t_max,
        extra=_options(args.option),
        show_progress=False,
    )
    summary: dict[str, dict] = {}
    for spec in specs:
        process, _, category = spec.partition(":")
        cat_dir = ensure_dataset(args.out / "data", process, category, args)
        model_dir = args.out / "models" / f"{process}_{category}"  # read by model_specs
        start = time.monotonic()
        result = train_model(cat_dir, model_dir, "radar", settings, "auto")
        train_min = (time.monotonic() - start) / 60
        rep = evaluate(
            result.method, cat_dir, model_dir / "eval.json", model_dir / "eval.png"
        ).to_dict()
        meta = result.method.metadata  # type: ignore[attr-defined]
        extra = {
            "training minutes (incl. calibration)": f"{train_min:.2f}",
            "steps": meta["training"]["steps"],
            "t*": meta["t_selection"]["chosen"],
        }
        entry = {"report": rep, "train_minutes": train_min, "meta": meta}
        if args.t_sweep:
            entry["t_sweep"] = t_sweep(model_dir, cat_dir, cat_dir, settings)
            extra["test AUROC by t"] = ", ".join(
                f"{t}: {v['image_auroc']:.3f}" for t, v in entry["t_sweep"].items()
            )
        summary[spec] = entry
        print(table(f"{process.upper()} / {category}", rep, extra), "\n", flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
