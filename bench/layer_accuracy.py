"""Layer-aware accuracy (issue 18): RADAR alone, the geometry channel alone and the two fused
(`radar-geometry`), on simulator data sets that carry each image's previous layer and expected
outline (`simulate dataset --reference`).

    python -m bench.layer_accuracy --out DIR --seed 1 [--categories fdm:A,lpbf:B]

One model per category is trained (the texture channel is RADAR, trained and calibrated as on
its own; the geometry channel and the fusion are calibrated on the same held-out normal
layers). Each test image is scored once; the three rows come from the same pass: RADAR's own
result, the geometry channel's score and map over its own thresholds, and the fused result.
Prints one Markdown table per category and writes DIR/summary.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.radar_accuracy import ensure_dataset
from scorer.data import iter_batches, load_reference, mvtec_test_samples, read_image, read_mask
from scorer.evaluate import ScoredSample, compute_report
from scorer.fusion import RadarGeometryScorer
from scorer.geometry import GeometryChannel, Sample
from scorer.methods import LayerReference, TrainSettings
from scorer.train import load_train_data, train_model

CHANNELS = ("radar", "geometry", "fused")
GEOMETRIC = ("layer_shift", "warping", "distortion")
TARGETS = {"image_auroc": 0.98, "f1": 0.90, "pixel_auroc": 0.95, "kind_auroc": 0.95}


def default_categories() -> list[str]:
    return ["fdm:fdm_rectilinear", "fdm:fdm_grid", "lpbf:lpbf_powder", "lpbf:lpbf_fused"]


def score_test_set(
    model: RadarGeometryScorer, category: Path, batch: int = 8
) -> tuple[dict[str, list[ScoredSample]], float]:
    """Every test image through both channels once; per channel its scored samples."""
    samples = mvtec_test_samples(category)
    out: dict[str, list[ScoredSample]] = {c: [] for c in CHANNELS}
    busy = 0.0
    for part in iter_batches(samples, batch):
        images = [read_image(s.path, model.channels) for s in part]
        refs = [
            load_reference(s.path, i.shape[:2], model.channels)
            for s, i in zip(part, images, strict=True)
        ]
        refs = [r or LayerReference() for r in refs]
        start = time.perf_counter()
        res = model.score_channels(images, refs)
        busy += time.perf_counter() - start
        for k, (s, img) in enumerate(zip(part, images, strict=True)):
            mask = read_mask(s, img.shape[:2])
            t, f, g = res.texture[k], res.fused[k], res.geometry[k]
            out["radar"].append(ScoredSample(s, img, t.score, t.anomalous, t.anomaly_map, mask))
            out["fused"].append(ScoredSample(s, img, f.score, f.anomalous, f.anomaly_map, mask))
            gs, gm = g if g is not None else (0.0, np.zeros(img.shape[:2], np.float32))
            out["geometry"].append(ScoredSample(s, img, gs, gs > 1.0, gm, mask))
    return out, len(samples) / max(busy, 1e-9)


def geometry_only(cat_dir: Path, settings: TrainSettings) -> tuple[dict[str, dict], dict[str, str]]:
    """The geometry channel alone (no network): fitted on the same split's normal layers and
    scored on the test set, for a machine too loaded to train RADAR in the budget."""
    start = time.monotonic()
    data = load_train_data(cat_dir, settings)
    channel = GeometryChannel.fit(
        [Sample(i, r) for i, r in zip(data.train, data.train_references, strict=True) if r],
        [
            Sample(i, r)
            for i, r in zip(data.calibration, data.calibration_references, strict=True)
            if r
        ],
        seed=settings.seed,
    )
    fit_s = time.monotonic() - start
    scored: list[ScoredSample] = []
    busy = 0.0
    for s in mvtec_test_samples(cat_dir):
        img = read_image(s.path, data.channels)
        ref = load_reference(s.path, img.shape[:2], data.channels) or LayerReference()
        t0 = time.perf_counter()
        a = channel.analyse(img, ref)
        gs = float(channel.score_features(a.features)[0]) / channel.threshold
        gm = channel.pixel_map(a) / channel.pixel_threshold
        busy += time.perf_counter() - t0
        scored.append(ScoredSample(s, img, gs, gs > 1.0, gm, read_mask(s, img.shape[:2])))

    class _Named:  # compute_report reads the method's name and version
        name = "geometry"
        model_version = "geometry-only"

    report = compute_report(_Named(), cat_dir, scored, len(scored) / max(busy, 1e-9))  # type: ignore[arg-type]
    extra = {
        "geometry fit seconds": f"{fit_s:.1f}",
        "segmenter kept": channel.segmenter_kind,
        "segmenter IoU on held-out normal layers": json.dumps(
            {
                k: round(v, 3)
                for k, v in channel.metadata["segmenter_iou_on_held_out_normal"].items()
            }
        ),
        "ms per layer (geometry channel)": f"{1000 * busy / len(scored):.1f}",
    }
    return {"geometry": report.to_dict()}, extra


def table(name: str, reports: dict[str, dict], extra: dict[str, str]) -> str:
    first = next(iter(reports.values()))
    kinds = [k for k in first["per_kind"] if k != "good"]
    head = ["channel", "image AUROC", "F1", "pixel AUROC", "FPR (good)", *kinds]
    lines = [f"### {name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ch, r in reports.items():
        row = [
            ch,
            f"{r['image_auroc']:.3f}",
            f"{r['f1']:.3f}",
            f"{r['pixel_auroc']:.3f}",
            f"{r['false_positive_rate']:.2f}",
        ]
        row += [f"{r['per_kind'][k]['image_auroc']:.3f}" for k in kinds]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", *[f"- {k}: {v}" for k, v in extra.items()]]
    return "\n".join(lines)


def verdict(fused: dict) -> dict[str, bool]:
    kinds = {k: v["image_auroc"] for k, v in fused["per_kind"].items() if k != "good"}
    return {
        "image_auroc": fused["image_auroc"] >= TARGETS["image_auroc"],
        "f1": fused["f1"] >= TARGETS["f1"],
        "pixel_auroc": fused["pixel_auroc"] >= TARGETS["pixel_auroc"],
        "every_kind_auroc": all(v >= TARGETS["kind_auroc"] for v in kinds.values()),
        "geometric_kinds_auroc": all(
            v >= TARGETS["kind_auroc"] for k, v in kinds.items() if k in GEOMETRIC
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="data, models and summary.json go here")
    ap.add_argument(
        "--categories", default="", help="process:category,… (default: 2 FDM + both LPBF)"
    )
    ap.add_argument("--size", type=int, default=256, help="image side, px")
    ap.add_argument(
        "--n-train", type=int, default=200, help="normal training images (20 %% held out)"
    )
    ap.add_argument("--n-test-good", type=int, default=50, help="normal test images")
    ap.add_argument("--n-test-defect", type=int, default=8, help="test images per defect kind")
    ap.add_argument("--seed", type=int, default=0, help="data, split and training seed")
    ap.add_argument("--max-minutes", type=float, default=10.0, help="training budget per category")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument(
        "--geometry-only",
        action="store_true",
        help="fit and score the geometry channel alone (no RADAR training): for a machine too "
        "loaded to train RADAR within the budget",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    specs = [s for s in args.categories.split(",") if s] or default_categories()
    settings = TrainSettings(
        seed=args.seed, max_minutes=args.max_minutes, steps=100_000, show_progress=False
    )
    summary: dict[str, dict] = {}
    for spec in specs:
        process, _, category = spec.partition(":")
        cat_dir = ensure_dataset(args.out / "data", process, category, args, reference=True)
        if args.geometry_only:
            reports, extra = geometry_only(cat_dir, settings)
            summary[spec] = {"reports": reports}
            print(table(f"{process.upper()} / {category}", reports, extra), "\n", flush=True)
            (args.out / "summary_geometry.json").write_text(json.dumps(summary, indent=2))
            continue
        model_dir = args.out / "models" / f"{process}_{category}"
        start = time.monotonic()
        result = train_model(cat_dir, model_dir, "radar-geometry", settings, "auto")
        train_min = (time.monotonic() - start) / 60
        model = result.method
        assert isinstance(model, RadarGeometryScorer)
        scored, ips = score_test_set(model, cat_dir)
        reports = {c: compute_report(model, cat_dir, scored[c], ips).to_dict() for c in CHANNELS}
        meta = model.metadata
        geo = model.geometry
        extra = {
            "training minutes (incl. calibration, both channels)": f"{train_min:.2f}",
            "RADAR steps": str(meta["training"]["steps"]),
            "segmenter kept": "none" if geo is None else geo.segmenter_kind,
            "segmenter IoU on held-out normal layers": "-"
            if geo is None
            else json.dumps(
                {
                    k: round(v, 3)
                    for k, v in geo.metadata.get("segmenter_iou_on_held_out_normal", {}).items()
                }
            ),
            "fused held-out FPR": str(meta["fusion"].get("held_out_false_positive_rate")),
            "images/s (both channels)": f"{ips:.2f}",
            "fused targets met": json.dumps(verdict(reports["fused"])),
        }
        summary[spec] = {
            "reports": reports,
            "train_minutes": train_min,
            "meta": meta,
            "verdict": verdict(reports["fused"]),
        }
        print(table(f"{process.upper()} / {category}", reports, extra), "\n", flush=True)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
