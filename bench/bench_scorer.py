"""RADAR scoring speed: ``RadarScorer.score_batch`` against the raw batched forward pass of the
same network on the same patches in the same run, plus p50/p95 single-image latency.

    python -m bench.bench_scorer [--configs 32:64:48,16:64:48] [--size 256] [--batch 8]

A config is ``width:patch:stride``; the scorer runs RADAR's default number of noise draws
(each patch goes through the network once per draw, in the baseline too). Weights are random
(speed does not depend on training); the network output is made non-trivial so no path is
short-circuited.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from scorer.device import DeviceInfo, pick_device
from scorer.patches import PatchGrid
from scorer.radar import RadarConfig, RadarScorer
from scorer.unet import UNet, UNetConfig, count_parameters


@dataclass
class BenchRow:
    config: str
    params: int
    patches_per_image: int
    raw_ips: float
    scorer_ips: float
    p50_ms: float
    p95_ms: float

    @property
    def ratio(self) -> float:
        return self.scorer_ips / self.raw_ips


def synthetic_images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        img = 128 + 50 * np.sin(2 * np.pi * (xx + yy) / 12 + rng.uniform(0, 6.3))
        out.append(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))
    return out


def build_scorer(width: int, patch: int, stride: int, device: DeviceInfo) -> RadarScorer:
    mults = (1, 2, 2, 2) if patch >= 32 else (1, 2)
    lowest = patch // 2 ** (len(mults) - 1)
    cfg = UNetConfig(
        base_width=width,
        channel_mults=mults,
        attention_resolutions=(lowest * 2, lowest),
        patch_size=patch,
    )
    torch.manual_seed(0)
    model = UNet(cfg)
    torch.nn.init.normal_(model.out.weight, std=0.02)  # zero-init output would be too easy
    scorer = RadarScorer(model, RadarConfig(patch=patch, stride=stride, t_star=100), device)
    scorer.calibrate(synthetic_images(4, 64, seed=1), candidates=(100,))
    return scorer


def time_raw(scorer: RadarScorer, images: list[np.ndarray], batch: int, repeats: int) -> float:
    """images/s of the bare network on exactly the patches score_batch would build (each patch
    once per noise draw)."""
    from scorer.data import to_model_tensor

    c, p = scorer.channels, scorer.config.patch
    x = to_model_tensor(images[:batch], c)
    grid = PatchGrid(x.shape[-2], x.shape[-1], p, scorer.config.stride)
    patches = grid.extract(x).reshape(-1, c, p, p).repeat(scorer.config.draws, 1, 1, 1)
    scorer._forward(patches, 100)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        scorer._forward(patches, 100)
    return repeats * batch / (time.perf_counter() - start)


def time_scorer(scorer: RadarScorer, images: list[np.ndarray], batch: int, repeats: int) -> float:
    scorer.score_batch(images[:batch])  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        scorer.score_batch(images[:batch])
    return repeats * batch / (time.perf_counter() - start)


def latencies_ms(scorer: RadarScorer, images: list[np.ndarray], n: int) -> list[float]:
    scorer.score_batch(images[:1])
    out = []
    for i in range(n):
        start = time.perf_counter()
        scorer.score_batch([images[i % len(images)]])
        out.append((time.perf_counter() - start) * 1000)
    return out


def run(
    configs: list[str], size: int, batch: int, repeats: int, n_latency: int, device: str
) -> list[BenchRow]:
    dev = pick_device(device)
    images = synthetic_images(max(batch, 8), size)
    rows = []
    for spec in configs:
        width, patch, stride = (int(v) for v in spec.split(":"))
        scorer = build_scorer(width, patch, stride, dev)
        raw = time_raw(scorer, images, batch, repeats)
        ips = time_scorer(scorer, images, batch, repeats)
        lat = sorted(latencies_ms(scorer, images, n_latency))
        rows.append(
            BenchRow(
                spec,
                count_parameters(scorer.model),
                PatchGrid(size, size, patch, stride).count,
                raw,
                ips,
                statistics.median(lat),
                lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--configs", default="16:64:48,32:64:48,16:64:32")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency-n", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(
        args.configs.split(","), args.size, args.batch, args.repeats, args.latency_n, args.device
    )
    print(
        f"\n{args.size}×{args.size} grayscale, batch {args.batch}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {pick_device(args.device).device}\n"
    )
    print(
        "| width:patch:stride | params | patches/img | raw fwd img/s | score_batch img/s "
        "| ratio | p50 ms | p95 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.config} | {r.params / 1e6:.2f} M | {r.patches_per_image} | {r.raw_ips:.2f} "
            f"| {r.scorer_ips:.2f} | {r.ratio:.2f} | {r.p50_ms:.0f} | {r.p95_ms:.0f} |"
        )


if __name__ == "__main__":
    main()
