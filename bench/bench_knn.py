"""The texture bank's nearest-neighbour search: exact against the inverted file, per layer size.

    python -m bench.bench_knn [--sizes 128,256,512] [--bank 8192] [--threads 2]

A layer of side S queries (S / 2)² descriptors (stride 2) against the memory bank (8 192 rows,
18 dimensions, scorer.texture's defaults). The descriptors here are synthetic but shaped like
real ones (rows near a 6-dimensional subspace: the scales of one statistic are correlated);
accuracy on trained models is bench.texture_settings' job (``texture.texture_search=exact``
against ``ivf``). Prints, per size, the best-of-N time of each search, the ratio, and how far
the inverted file's distances are from the exact ones.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from scorer.knn import BankIndex


def _descriptors(n: int, gen: torch.Generator, basis: torch.Tensor) -> torch.Tensor:
    return torch.randn(n, basis.shape[0], generator=gen) @ basis + 0.3 * torch.randn(
        n, basis.shape[1], generator=gen
    )


def _best(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="128,256,512", help="layer sides (queries: (S/2)²)")
    ap.add_argument("--bank", type=int, default=8192, help="bank rows")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--cells", type=int, default=128)
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    basis = torch.randn(6, 18, generator=gen)
    bank = _descriptors(args.bank, gen, basis).numpy()
    exact = BankIndex(bank, "exact")
    ivf = BankIndex(bank, "ivf", args.cells, args.probes)
    start = time.perf_counter()
    ivf.mean_distance(torch.from_numpy(bank[:1]), args.k)  # builds the index
    build_ms = 1000 * (time.perf_counter() - start)
    print(f"bank {args.bank} × 18, k = {args.k}; inverted file: {ivf.cells} cells, "
          f"{ivf.probes} probes, built in {build_ms:.0f} ms; {args.threads} threads")  # fmt: skip
    print("| layer | queries | exact ms | ivf ms | × faster | mean rel. distance error | "
          "queries with exact neighbours |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",") if s):
        z = _descriptors((size // 2) ** 2, gen, basis)
        t_exact, d_exact = _best(lambda z=z: exact.mean_distance(z, args.k), args.repeats)
        t_ivf, d_ivf = _best(lambda z=z: ivf.mean_distance(z, args.k), args.repeats)
        rel = ((d_ivf - d_exact) / d_exact.clamp(min=1e-6)).numpy()
        print(
            f"| {size}² | {len(z)} | {1000 * t_exact:.0f} | {1000 * t_ivf:.0f} "
            f"| {t_exact / t_ivf:.1f} | {np.mean(rel):.5f} | {np.mean(np.abs(rel) < 1e-4):.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
