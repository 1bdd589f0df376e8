"""RADAR scoring speed per inference engine, against eager PyTorch and the FLOP limit, in one run.

    python -m bench.bench_scorer [--backends all|eager,onnxruntime,...] [--sizes 256,512]
                                 [--device cpu|cuda] [--width 16] [--draws 2]

For each engine (scorer.backends) and image size: ``score_batch`` layers/s on a batch of
layers, p50/p95 latency of one layer, the ratio of its layers/s to eager's, and the ratio of
its p50 to the FLOP limit (the network's FLOPs per layer ÷ this device's peak, measured as a
large matrix product in the same run). Engines take turns round by round, so a load that
comes and goes on a shared machine falls on all of them alike. A per-stage breakdown of one
layer (patches and noise, network, stitching, post-processing, the map's PNG) is printed for
eager. Weights are random (speed does not depend on training); the output layer is made
non-trivial so no path is short-circuited.

A GPU host runs it as it is: ``python -m bench.bench_scorer --device cuda`` (sizes 256 and
1024, bf16 autocast, 1024-patch chunks; the engines that have no CUDA build here are skipped
with the reason).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from scorer.backends import BACKENDS, BackendUnavailableError
from scorer.device import DeviceInfo, pick_device
from scorer.patches import PatchGrid
from scorer.radar import RadarConfig, RadarScorer
from scorer.unet import UNet, UNetConfig, count_parameters


@dataclass
class BenchRow:
    backend: str
    size: int
    patches_per_layer: int
    layers_per_s: float
    p50_ms: float
    p95_ms: float
    flop_limit_ms: float
    eager_layers_per_s: float = float("nan")

    @property
    def vs_eager(self) -> float:
        return self.layers_per_s / self.eager_layers_per_s

    @property
    def vs_limit(self) -> float:
        return self.p50_ms / self.flop_limit_ms


@dataclass
class Result:
    rows: list[BenchRow]
    skipped: dict[str, str]  # engine → why it could not run here
    parameters: int
    flops_per_patch: float
    peak_gflops: float  # float32 (bf16 on CUDA)
    peak_bf16_gflops: float  # bf16 matrix product (the *-bf16 engines' limit)
    stages: dict[str, float]  # ms per stage of one layer, eager


def synthetic_images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        img = 128 + 50 * np.sin(2 * np.pi * (xx + yy) / 12 + rng.uniform(0, 6.3))
        out.append(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))
    return out


def build_scorer(
    width: int, patch: int, stride: int, device: DeviceInfo, draws: int = 2
) -> RadarScorer:
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
    config = RadarConfig(patch=patch, stride=stride, t_star=100, draws=draws)
    scorer = RadarScorer(model, config, replace(device, backend="eager"))
    # 128² calibration layers give the texture map its full memory bank (8 192 descriptors,
    # as a trained model has): the evidence map's cost grows with it
    scorer.calibrate(synthetic_images(4, 128, seed=1), candidates=(100,))
    return scorer


def with_backend(scorer: RadarScorer, name: str) -> RadarScorer:
    """The same calibrated scorer and weights, its network run by engine ``name``."""
    twin = copy.copy(scorer)
    twin.device = replace(scorer.device, backend=name)
    twin.set_model(scorer.model)
    _ = twin.backend  # build (export, compile) and probe now, not inside a timing
    return twin


def flops_per_patch(model: UNet) -> float:
    """FLOPs (2 per multiply-add) of one patch through the network, counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    p, c = model.config.patch_size, model.config.in_channels
    param = next(model.parameters())
    x = torch.zeros(1, c, p, p, device=param.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x, torch.full((1,), 100, device=param.device))
    return float(counter.get_total_flops())


def peak_gflops(
    device: DeviceInfo, n: int = 2048, repeats: int = 8, dtype: torch.dtype | None = None
) -> float:
    """Best GFLOP/s of an n×n matrix product: float32 (bf16 on CUDA, as the network runs),
    or ``dtype``."""
    dtype = dtype or device.autocast_dtype or torch.float32
    a = torch.randn(n, n, device=device.device, dtype=dtype)
    b = torch.randn(n, n, device=device.device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 2):
        if device.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def stage_breakdown(scorer: RadarScorer, image: np.ndarray, rounds: int = 5) -> dict[str, float]:
    """Median ms per stage of one layer: patches + noise + stitching (residual_maps without
    the network), the network, post-processing (whitening, blur/Sobel/low-pass, features,
    detector: score_batch without residual_maps), and the map's 16-bit PNG."""
    from scorer.maps import compress_map

    net: list[float] = []
    backend = scorer.backend
    inner = backend.forward

    def timed(xt: torch.Tensor, t: int) -> torch.Tensor:
        start = time.perf_counter()
        out = inner(xt, t)
        net.append(time.perf_counter() - start)
        return out

    backend.forward = timed  # type: ignore[method-assign]
    rows: dict[str, list[float]] = {"total": [], "residual": [], "png": []}
    orig_residual = scorer.residual_maps

    def timed_residual(images, t=None):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = orig_residual(images, t)
        rows["residual"].append(time.perf_counter() - start)
        return out

    scorer.residual_maps = timed_residual  # type: ignore[method-assign]
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            res = scorer.score_batch([image])[0]
            rows["total"].append(time.perf_counter() - start)
            start = time.perf_counter()
            compress_map(res.anomaly_map)
            rows["png"].append(time.perf_counter() - start)
    finally:
        backend.forward = inner  # type: ignore[method-assign]
        del scorer.residual_maps
    med = {k: 1000 * statistics.median(v) for k, v in rows.items()}
    network = 1000 * statistics.median(net)
    return {
        "patches, noise, stitching": med["residual"] - network,
        "network": network,
        "post-processing (whitening, filters, features, detector)": med["total"] - med["residual"],
        "map PNG (service)": med["png"],
        "total score_batch": med["total"],
    }


def _rounds(scorers: dict[str, RadarScorer], batches: list[list[np.ndarray]]) -> dict[str, list]:
    """Seconds of ``score_batch`` per batch and engine, the engines taking turns batch by
    batch (each sees the same batches)."""
    out: dict[str, list[float]] = {k: [] for k in scorers}
    for images in batches:
        for name, scorer in scorers.items():
            start = time.perf_counter()
            scorer.score_batch(images)
            out[name].append(time.perf_counter() - start)
    return out


def run(
    backends: list[str],
    sizes: list[int],
    width: int,
    draws: int,
    batch: int,
    repeats: int,
    n_latency: int,
    device: DeviceInfo,
    patch: int = 64,
    stride: int = 48,
) -> Result:
    base = build_scorer(width, patch, stride, device, draws)
    scorers: dict[str, RadarScorer] = {}
    skipped: dict[str, str] = {}
    for name in backends:
        try:
            start = time.perf_counter()
            scorers[name] = with_backend(base, name)
            print(f"{name}: ready in {time.perf_counter() - start:.1f} s", flush=True)
        except (BackendUnavailableError, RuntimeError, ValueError) as e:
            skipped[name] = f"{type(e).__name__}: {e}"
    fpp = flops_per_patch(base.model)
    peak = peak_gflops(device)
    peak_bf16 = peak_gflops(device, dtype=torch.bfloat16)
    rows: list[BenchRow] = []
    stages: dict[str, float] = {}
    for size in sizes:
        images = synthetic_images(max(batch, 8), size)
        n_patches = PatchGrid(size, size, patch, stride).count
        for s in scorers.values():  # warm-up at this size
            s.score_batch(images[:batch])
        thr = _rounds(scorers, [images[:batch]] * repeats)
        lat = _rounds(scorers, [[images[i % len(images)]] for i in range(n_latency)])
        for name in scorers:
            ms = sorted(1000 * v for v in lat[name])
            engine_peak = peak_bf16 if name.endswith("-bf16") else peak
            rows.append(
                BenchRow(
                    name,
                    size,
                    n_patches * draws,
                    batch * repeats / sum(thr[name]),
                    statistics.median(ms),
                    ms[min(len(ms) - 1, int(0.95 * len(ms)))],
                    1000 * fpp * n_patches * draws / (engine_peak * 1e9),
                )
            )
        eager = next((r for r in rows if r.size == size and r.backend == "eager"), None)
        for r in rows:
            if r.size == size and eager is not None:
                r.eager_layers_per_s = eager.layers_per_s
            if r.size == size:  # as soon as measured: a long run on a busy machine shows progress
                print(row_line(r, fpp), flush=True)
        if size == sizes[0] and "eager" in scorers:
            stages = stage_breakdown(scorers["eager"], images[0])
    return Result(rows, skipped, count_parameters(base.model), fpp, peak, peak_bf16, stages)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--backends", default="all", help=f"'all' or a comma-separated list of {BACKENDS}"
    )
    ap.add_argument("--sizes", default="", help="layer sizes (default 256,512; cuda 256,1024)")
    ap.add_argument("--width", type=int, default=16, help="U-Net base width (RADAR's: 16)")
    ap.add_argument("--draws", type=int, default=2, help="noise draws (RADAR's default: 2)")
    ap.add_argument("--batch", type=int, default=8, help="layers per score_batch (throughput)")
    ap.add_argument("--repeats", type=int, default=3, help="throughput batches per engine")
    ap.add_argument("--latency-n", type=int, default=20, help="single layers timed per engine")
    ap.add_argument("--device", default="auto", help="auto|cpu|cuda")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device, backend="eager")
    backends = list(BACKENDS) if args.backends == "all" else args.backends.split(",")
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        ap.error(f"unknown backends {unknown}; known: {BACKENDS}")
    default_sizes = "256,1024" if device.is_cuda else "256,512"
    sizes = [int(v) for v in (args.sizes or default_sizes).split(",")]
    res = run(
        backends, sizes, args.width, args.draws, args.batch, args.repeats, args.latency_n, device
    )
    print(report(res, args.width, args.draws, device, sizes[0]))


def row_line(r: BenchRow, flops_per_patch: float) -> str:
    return (
        f"| {r.backend} | {r.size}² | {r.patches_per_layer} "
        f"| {flops_per_patch * r.patches_per_layer / 1e9:.1f} | {r.layers_per_s:.2f} "
        f"| {r.vs_eager:.2f} | {r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.flop_limit_ms:.0f} "
        f"| {r.vs_limit:.2f} |"
    )


def report(res: Result, width: int, draws: int, device: DeviceInfo, first_size: int) -> str:
    import os

    fpp = res.flops_per_patch
    lines = [
        f"\nwidth {width} ({res.parameters / 1e6:.2f} M parameters), patch 64 / stride 48, "
        f"{draws} draws, device {device.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f} at the end",
        f"network: {fpp / 1e6:.0f} MFLOP per patch; measured peak {res.peak_gflops:.0f} GFLOP/s "
        f"({'bf16' if device.autocast_dtype else 'fp32'} 2048² matrix product; the FLOP limit "
        f"of the -bf16 engines: bf16, {res.peak_bf16_gflops:.0f} GFLOP/s)\n",
        "| engine | size | patches/layer | GFLOP/layer | layers/s | × eager | p50 ms | p95 ms "
        "| FLOP limit ms | p50 ÷ limit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [row_line(r, fpp) for r in res.rows]
    lines += [f"skipped {name}: {why}" for name, why in res.skipped.items()]
    if res.stages:
        lines.append(f"\none {first_size}² layer, eager, median ms per stage:")
        lines += [f"  {k}: {v:.1f}" for k, v in res.stages.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
