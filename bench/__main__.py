"""``python -m bench`` (``make bench``): the quick benchmarks, one after another.

Each prints its figures with a baseline measured in the same run. The pipeline benchmark needs
a model: the one ``layerwatch demo`` trains (run ``make demo`` first), or ``--model``.
The accuracy benchmarks take longer and run on their own: ``python -m bench.radar_accuracy``
and ``layerwatch bench compare``.
"""

from __future__ import annotations

import subprocess
import sys

QUICK = (
    "bench.bench_simulate",
    "bench.bench_monitor",
    "bench.bench_knn",
    "bench.bench_scorer",
    "bench.bench_pipeline",
)


def main() -> int:
    failed = []
    for module in QUICK:
        print(f"\n=== {module}", flush=True)
        if subprocess.call([sys.executable, "-m", module]) != 0:
            failed.append(module)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
