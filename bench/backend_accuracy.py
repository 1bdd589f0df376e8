"""Accuracy of each inference engine against eager float32, on trained models and test sets.

    python -m bench.backend_accuracy --model DIR:CATEGORY [--model DIR:CATEGORY ...]
                                     [--backends eager-bf16,openvino-bf16,onnxruntime-int8]

A lower-precision engine (bf16, int8 weights) may be a default only if it leaves the
detector's accuracy where it was: image AUROC within ``--tolerance`` (0.005, issue 21) of
eager float32 on the same model and images. Each model is scored on its MVTec-layout test
set once per engine; the table gives image AUROC, F1 and pixel AUROC, their differences to
eager and the images/s of the whole evaluation (scoring, features, maps) in the same run.
The models are those of ``bench.radar_accuracy --seed 1`` (DIR/models/<process>_<category>
with the data set in DIR/data/<process>/<category>).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench.radar_accuracy import model_specs
from scorer.backends import BACKENDS, BackendUnavailableError
from scorer.device import pick_device
from scorer.evaluate import evaluate
from scorer.methods import load_model

DEFAULT_ENGINES = "eager-bf16,openvino-bf16,onnxruntime-int8"


@dataclass
class Row:
    model: str
    engine: str
    image_auroc: float
    f1: float
    pixel_auroc: float
    images_per_second: float

    def delta(self, ref: Row) -> tuple[float, float, float]:
        return (
            self.image_auroc - ref.image_auroc,
            self.f1 - ref.f1,
            self.pixel_auroc - ref.pixel_auroc,
        )


def score(model_dir: Path, category: Path, engine: str) -> Row:
    model = load_model(model_dir, replace(pick_device("cpu"), backend=engine))
    _ = getattr(model, "engine", None)  # build and probe the engine before the clock
    rep = evaluate(model, category)
    return Row(
        model_dir.name,
        engine,
        rep.image_auroc,
        rep.f1,
        rep.pixel_auroc,
        rep.images_per_second,
    )


def run(pairs: list[tuple[Path, Path]], engines: list[str]) -> tuple[list[Row], dict[str, str]]:
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    for model_dir, category in pairs:
        for engine in ["eager", *engines]:
            try:
                row = score(model_dir, category, engine)
            except (BackendUnavailableError, RuntimeError) as e:
                skipped[f"{model_dir.name} / {engine}"] = f"{type(e).__name__}: {e}"
                continue
            rows.append(row)
            print(
                f"{row.model} {engine}: image AUROC {row.image_auroc:.4f}, F1 {row.f1:.4f}, "
                f"pixel AUROC {row.pixel_auroc:.4f}, {row.images_per_second:.2f} images/s",
                flush=True,
            )
    return rows, skipped


def report(rows: list[Row], skipped: dict[str, str], tolerance: float) -> str:
    lines = [
        "| model | engine | image AUROC | Δ | F1 | Δ | pixel AUROC | Δ | images/s | × eager "
        f"| within {tolerance} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ref = {r.model: r for r in rows if r.engine == "eager"}
    for r in rows:
        base = ref.get(r.model)
        if base is None:
            continue
        di, df, dp = r.delta(base)
        ok = "yes" if abs(di) <= tolerance else "**no**"
        lines.append(
            f"| {r.model} | {r.engine} | {r.image_auroc:.4f} | {di:+.4f} | {r.f1:.3f} "
            f"| {df:+.3f} | {r.pixel_auroc:.4f} | {dp:+.4f} | {r.images_per_second:.2f} "
            f"| {r.images_per_second / base.images_per_second:.2f} | {ok} |"
        )
    lines += [f"skipped {k}: {v}" for k, v in skipped.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--model",
        action="append",
        required=True,
        help="MODEL_DIR:CATEGORY_DIR (repeatable), or a bench.radar_accuracy --out folder",
    )
    ap.add_argument("--backends", default=DEFAULT_ENGINES, help=f"engines among {BACKENDS}")
    ap.add_argument("--tolerance", type=float, default=0.005, help="largest image AUROC change")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engines = [e for e in args.backends.split(",") if e and e != "eager"]
    unknown = sorted(set(engines) - set(BACKENDS))
    if unknown:
        ap.error(f"unknown backends {unknown}; known: {BACKENDS}")
    pairs = model_specs(args.model)
    rows, skipped = run(pairs, engines)
    print(report(rows, skipped, args.tolerance))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2))


if __name__ == "__main__":
    main()
