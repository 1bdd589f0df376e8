"""RADAR on real photographs and on the simulator: old default against new, one network each.

    python -m bench.real_accuracy --out DIR [--split tuning|holdout] [--variants old,new,...]

For each category (the simulator's four and the photographs gravel, grass, brick) it writes
the data set if missing (photographs: `layerwatch simulate photos`, disjoint regions; the
simulator: seed 1 for training and the tuning test set, seed 2's test set as the untouched
one), trains one network per category if DIR/models/CATEGORY has none (``--max-minutes``,
128²), then scores the chosen test split once through the network and compares
post-processing variants on those same residual maps: each variant re-calibrates from the
held-out normal images' residuals (no retraining), so old and new differ only in what follows
the network. Prints one Markdown table (image AUROC / F1 / pixel AUROC per category and
variant) and writes DIR/real_accuracy_SPLIT.json.

The holdout split is for the final report only: no choice is tuned on it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scorer.data import mvtec_test_samples, read_image, read_mask
from scorer.device import pick_device
from scorer.evaluate import ScoredSample, compute_report
from scorer.methods import TrainSettings, load_model
from scorer.radar import RadarConfig, RadarScorer
from scorer.texture import bank_sample
from scorer.train import load_train_data, train_model

SIMULATOR = ("fdm_rectilinear", "fdm_grid", "lpbf_powder", "lpbf_fused")
PHOTOS = ("gravel", "grass", "brick")

# Post-processing variants: overrides of RadarConfig's fields (nested ones as dicts).
OLD: dict[str, Any] = {"pixel_map": "lowpass", "image_features": "residual"}
NEW: dict[str, Any] = {"pixel_map": "texture", "image_features": "both"}
VARIANTS: dict[str, dict[str, Any]] = {
    "old": OLD,
    "new": NEW,
    "texture_only": {"pixel_map": "texture", "image_features": "texture"},
    "map_only": {"pixel_map": "texture", "image_features": "residual"},
}


def with_overrides(config: RadarConfig, over: dict[str, Any]) -> RadarConfig:
    doc = config.to_dict()
    for k, v in over.items():
        doc[k] = {**doc[k], **v} if isinstance(v, dict) else v
    return RadarConfig.from_dict(doc)


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` of VARIANTS, or ``name:key=value;key=value`` (nested keys as texture.key)."""
    name, _, rest = spec.partition(":")
    if not rest:
        return name, VARIANTS[name]
    over: dict[str, Any] = {}
    for pair in rest.split(";"):
        k, _, v = pair.partition("=")
        try:
            val: Any = json.loads(v)
        except json.JSONDecodeError:
            val = v  # a bare word: a string setting
        if "." in k:
            outer, inner = k.split(".", 1)
            over.setdefault(outer, {})[inner] = val
        else:
            over[k] = val
    return name, over


def ensure_data(out: Path, category: str, seed: int) -> tuple[Path, Path, Path]:
    """(training category, tuning test category, holdout test category) folders."""
    if category in PHOTOS:
        root = out / "photos" / category
        if not (root / "holdout" / "test").is_dir():
            from ingest.simulate.photos import write_photos

            write_photos(out / "photos", category, seed=seed)
        return root, root, root / "holdout"
    from ingest.simulate import write_dataset

    sim, held = out / "sim" / category, out / "sim_holdout" / category
    if not (sim / "test").is_dir():
        write_dataset(out / "sim", category, None, 128, 160, 40, 8, seed + 1)  # type: ignore[arg-type]
    if not (held / "test").is_dir():
        write_dataset(out / "sim_holdout", category, None, 128, 0, 40, 8, seed + 2)  # type: ignore[arg-type]
    return sim, sim, held


def residuals(model: RadarScorer, images: list[np.ndarray], batch: int = 16) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for i in range(0, len(images), batch):
        out += model.residual_maps(images[i : i + batch])
    return out


def run_category(
    model: RadarScorer,
    train_dir: Path,
    test_dir: Path,
    variants: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    settings = TrainSettings(**model.metadata["training"]["settings"])
    data = load_train_data(train_dir, settings)
    cal = data.calibration
    samples = mvtec_test_samples(test_dir)
    images = [read_image(s.path, model.channels) for s in samples]
    masks = [read_mask(s, img.shape[:2]) for s, img in zip(samples, images, strict=True)]
    cal_res, test_res = residuals(model, cal), residuals(model, images)
    bank_res: dict[int, list[np.ndarray]] = {}  # the texture bank's residuals, by bank size
    out = {}
    for name, over in variants.items():
        scorer = RadarScorer(model.model, with_overrides(model.config, over), model.device)
        n = scorer.config.texture.texture_bank_images if scorer.config.uses_texture else 0
        bank = bank_sample(data.train, n)
        if n not in bank_res:
            bank_res[n] = residuals(model, bank)
        scorer.calibrate_residuals(cal_res, cal, bank_res[n], bank)
        start = time.perf_counter()
        results = scorer.score_residuals(test_res, images)
        post_ms = 1000 * (time.perf_counter() - start) / max(1, len(images))
        scored = [
            ScoredSample(s, img, r.score, r.anomalous, r.anomaly_map, m)
            for s, img, r, m in zip(samples, images, results, masks, strict=True)
        ]
        rep = compute_report(scorer, test_dir, scored, 1.0).to_dict()
        out[name] = {k: rep[k] for k in ("image_auroc", "f1", "pixel_auroc", "pro", "recall",
                                         "false_positive_rate", "per_kind")}  # fmt: skip
        # what follows the network, per layer (features, texture evidence, detector)
        out[name]["post_ms_per_layer"] = round(post_ms, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="data, models and results folder")
    ap.add_argument("--categories", default=",".join(PHOTOS + SIMULATOR))
    ap.add_argument(
        "--split",
        choices=("tuning", "holdout"),
        default="tuning",
        help="tuning: choices are made here; holdout: the final, untouched test",
    )
    ap.add_argument(
        "--variants",
        default="old,new",
        help="names of VARIANTS, or name:key=value;key=value (nested: texture.key)",
    )
    ap.add_argument("--max-minutes", type=float, default=5.0, help="training budget per network")
    ap.add_argument("--json", type=Path, default=None, help="results file (default: in --out)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = dict(parse_variant(v) for v in args.variants.split(",") if v)
    summary: dict[str, Any] = {}
    for category in [c for c in args.categories.split(",") if c]:
        train_dir, tune_dir, hold_dir = ensure_data(args.out, category, args.seed)
        model_dir = args.out / "models" / category
        if not (model_dir / "config.json").is_file():
            settings = TrainSettings(seed=args.seed, max_minutes=args.max_minutes,
                                     show_progress=False)  # fmt: skip
            train_model(train_dir, model_dir, "radar", settings, "cpu")
        model = load_model(model_dir, pick_device("cpu"))
        assert isinstance(model, RadarScorer)
        start = time.monotonic()
        test_dir = tune_dir if args.split == "tuning" else hold_dir
        summary[category] = run_category(model, train_dir, test_dir, variants)
        summary[category]["_seconds"] = round(time.monotonic() - start, 1)
        row = " | ".join(
            f"{v['image_auroc']:.3f} / {v['f1']:.2f} / {v['pixel_auroc']:.3f}"
            for k, v in summary[category].items()
            if not k.startswith("_")
        )
        print(f"| {category} | {row} |", flush=True)
    names = list(variants)
    print()
    print(f"split: {args.split}; image AUROC / F1 / pixel AUROC")
    print("| category | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for cat, res in summary.items():
        cells = [
            f"{res[n]['image_auroc']:.3f} / {res[n]['f1']:.2f} / {res[n]['pixel_auroc']:.3f}"
            for n in names
        ]
        print(f"| {cat} | " + " | ".join(cells) + " |")
    path = args.json or args.out / f"real_accuracy_{args.split}.json"
    path.write_text(json.dumps({"variants": variants, "results": summary}, indent=1))


if __name__ == "__main__":
    main()
