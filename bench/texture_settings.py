"""Cost and accuracy of the texture evidence map's settings, on trained RADAR models.

    python -m bench.texture_settings --model DIR:CATEGORY [--model ...]
        [--variants "stride2:texture.texture_stride=2,stride4:texture.texture_stride=4"]

The texture evidence map (scorer.texture) compares every queried pixel's descriptor with a
memory bank of normal ones: its cost is queries × bank distances, and at 256² with stride 2 and
8 192 descriptors it was more of a layer's time than the network. The models are any trained
RADAR models with their data sets (e.g. ``bench.radar_accuracy --seed 1``'s 256² ones: DIR/
models/<process>_<category>, DIR/data/<process>/<category>). For each, the network runs once
over its calibration images and test set and every variant re-fits only the post-processing
on those residuals (``bench.real_accuracy.run_category``, as that benchmark compares its
variants). Reported per variant: image AUROC, F1, pixel AUROC and the post-processing's ms
per layer (features, texture evidence, detector), in one run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.radar_accuracy import model_specs
from bench.real_accuracy import parse_variant, run_category
from scorer.device import pick_device
from scorer.methods import load_model
from scorer.radar import RadarScorer

DEFAULT_VARIANTS = (
    "stride2_bank8192:texture.texture_stride=2;texture.texture_bank=8192,"
    "stride4_bank8192:texture.texture_stride=4;texture.texture_bank=8192,"
    "stride2_bank2048:texture.texture_stride=2;texture.texture_bank=2048,"
    "stride4_bank2048:texture.texture_stride=4;texture.texture_bank=2048"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--model",
        action="append",
        required=True,
        help="MODEL_DIR:CATEGORY_DIR (repeatable), or a bench.radar_accuracy --out folder",
    )
    ap.add_argument(
        "--variants", default=DEFAULT_VARIANTS, help="name:key=value;key=value,… (texture.key)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = dict(parse_variant(v) for v in args.variants.split(",") if v)
    lines = [
        "| model | variant | image AUROC | F1 | pixel AUROC | post-processing ms/layer |",
        "|---|---|---|---|---|---|",
    ]
    results = {}
    for model_dir, category in model_specs(args.model):
        model = load_model(model_dir, pick_device("cpu"))
        if not isinstance(model, RadarScorer):
            raise SystemExit(f"{model_dir}: a RADAR model is needed, not {type(model).__name__}")
        res = run_category(model, category, category, variants)
        results[model_dir.name] = res
        for name, r in res.items():
            lines.append(
                f"| {model_dir.name} | {name} | {r['image_auroc']:.4f} | {r['f1']:.3f} "
                f"| {r['pixel_auroc']:.4f} | {r['post_ms_per_layer']:.0f} |"
            )
            print(lines[-1], flush=True)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
