"""What the geometry channel adds to the per-layer latency (issue 18: at most 20 % of the p95).

    python -m bench.bench_geometry --model MODEL_DIR [--layers 40] [--size 256]

MODEL_DIR is a radar-geometry model (`layerwatch train DATA --method radar-geometry`, on data
with references). The layers of one simulated print are scored one at a time (the streaming
case), alternately by RADAR alone (the model's texture channel) and by the fused method with
the layer's previous layer and expected outline, so both see the same machine load; prints
p50/p95 of each and the ratio of the p95s, and the geometry channel's own p95 (without the
part regions it remembers from the previous call) as a share of RADAR's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from ingest.simulate import expected_outline, make_renderer, render_layer
from ingest.simulate.categories import CATEGORIES
from scorer.device import pick_device
from scorer.fusion import RadarGeometryScorer
from scorer.methods import LayerReference, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a radar-geometry model directory")
    ap.add_argument("--category", default="fdm_rectilinear", help="simulator category of the print")
    ap.add_argument("--layers", type=int, default=40, help="layers timed (each by both)")
    ap.add_argument("--size", type=int, default=256, help="image side, px")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, pick_device("cpu"))
    if not isinstance(model, RadarGeometryScorer) or model.geometry is None:
        raise SystemExit(f"{args.model}: not a radar-geometry model with a geometry channel")
    renderer = make_renderer(CATEGORIES[args.category], 11, args.size, args.layers + 2)
    frames = [render_layer(renderer, n).image for n in range(args.layers + 2)]
    refs = [
        LayerReference(frames[n - 1], expected_outline(renderer, n)) for n in range(1, len(frames))
    ]
    model.score_batch([frames[1]], [refs[0]])  # warm-up
    radar, fused, geometry = [], [], []
    channel = model.geometry
    for n in range(1, args.layers + 1):
        image, ref = frames[n + 1], refs[n]
        start = time.perf_counter()
        model.texture.score_batch([image])
        radar.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.score_batch([image], [ref])
        fused.append(time.perf_counter() - start)
        channel._parts.clear()  # time the channel's own work, not the remembered regions
        start = time.perf_counter()
        channel.pixel_map(channel.analyse(image, ref))
        geometry.append(time.perf_counter() - start)
    p = lambda xs, q: float(np.percentile(np.array(xs) * 1000, q))  # noqa: E731
    out = {
        "size": args.size,
        "layers": args.layers,
        "radar_p50_ms": p(radar, 50),
        "radar_p95_ms": p(radar, 95),
        "fused_p50_ms": p(fused, 50),
        "fused_p95_ms": p(fused, 95),
    }
    out["geometry_p95_ms"] = p(geometry, 95)
    # On a loaded machine the two p95s differ by more than the geometry channel costs; its own
    # time, measured in the same loop, bounds what it adds.
    out["geometry_over_radar_p95"] = out["geometry_p95_ms"] / out["radar_p95_ms"]
    out["p95_ratio"] = out["fused_p95_ms"] / out["radar_p95_ms"]
    out["p50_ratio"] = out["fused_p50_ms"] / out["radar_p50_ms"]
    print(
        f"{args.size}², {args.layers} layers one at a time: RADAR alone p50"
        f" {out['radar_p50_ms']:.0f} ms, p95 {out['radar_p95_ms']:.0f} ms;"
        f" fused p50 {out['fused_p50_ms']:.0f} ms, p95"
        f" {out['fused_p95_ms']:.0f} ms; p95 ratio {out['p95_ratio']:.3f}"
        f" (+{100 * (out['p95_ratio'] - 1):.1f} %), p50 ratio {out['p50_ratio']:.3f};"
        f" geometry channel alone (no remembered regions) p95 {out['geometry_p95_ms']:.0f} ms ="
        f" {100 * out['geometry_over_radar_p95']:.1f} % of RADAR's p95"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
