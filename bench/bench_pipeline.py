"""End-to-end layer latency and throughput of the pipeline against the raw batched model.

    python -m bench.bench_pipeline [--model DIR] [--layers 48] [--batch 8]

Runs on the embedded broker and database (a temporary home, stopped afterwards). Measures,
in one run, on the same layers:
- raw: ``score_batch`` on micro-batches of the same size, no Kafka, no database;
- burst: all layers produced at once, scored by the real ``ScorerService`` (decode, model,
  PostgreSQL upserts, score messages, offset commits): throughput and its ratio to raw;
- paced: one layer per ``--interval`` seconds (below capacity): produce → score-durable latency
  p50/p95, which is what a printer sees.
Prints the figures and the pipeline's overhead against the raw model (target ≤ 30 %).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from sqlalchemy import text

from ingest.messages import LayerMessage
from ingest.producer import LayerProducer
from ingest.simulate import simulate_print
from layerwatch.core.embedded import resolve_endpoints, servers
from layerwatch.core.kafka import ensure_topics
from layerwatch.core.settings import Settings
from layerwatch.core.topics import Topics
from layerwatch.demo import demo_model_dir
from scorer.device import pick_device
from scorer.methods import load_model
from scorer.service import ScorerService, ServiceConfig
from storage import db


def _wait_rows(url: str, job: str, n: int, timeout: float = 600) -> None:
    engine = db.make_engine(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            got = conn.execute(text("SELECT count(*) FROM scores WHERE job=:j"), {"j": job})
            if got.scalar_one() >= n:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{job}: fewer than {n} scores after {timeout}s")


def _e2e(url: str, job: str) -> np.ndarray:
    with db.make_engine(url).connect() as conn:
        rows = conn.execute(
            text("SELECT e2e_latency_ms FROM scores WHERE job=:j ORDER BY layer"), {"j": job}
        )
        return np.array([r[0] for r in rows])


def _span_s(url: str, job: str) -> float:
    with db.make_engine(url).connect() as conn:
        q = text(
            "SELECT extract(epoch FROM max(scored_at) - min(captured_at)) FROM scores WHERE job=:j"
        )
        return float(conn.execute(q, {"j": job}).scalar_one())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        type=Path,
        default=demo_model_dir(Path(".layerwatch"), "fdm_rectilinear", 128),
        help="a model directory (default: the one `layerwatch demo` trains)",
    )
    ap.add_argument("--layers", type=int, default=96, help="burst size (steady state)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument(
        "--interval", type=float, default=0.0, help="paced run (0 = 1.5× the burst time per layer)"
    )
    ap.add_argument("--paced-layers", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(2)

    model = load_model(args.model, pick_device("auto"))
    size = int(model.to_artifact().config.get("training", {}).get("image_shape", [256])[0])
    frames = [f.image for f in simulate_print(args.layers, seed=3, size=size)]
    model.score_batch(frames[: args.batch])  # warm-up

    t0 = time.perf_counter()
    for i in range(0, len(frames), args.batch):
        model.score_batch(frames[i : i + args.batch])
    raw_s = time.perf_counter() - t0
    raw_ips = len(frames) / raw_s

    home = Path(tempfile.mkdtemp(prefix="lw-bench-"))
    settings = Settings(home=home)
    ep = resolve_endpoints(settings)
    try:
        db.upgrade(ep.database_admin_url)
        topics = Topics(f"bench{int(time.time())}")
        ensure_topics(ep.kafka_bootstrap, topics, 2)
        cfg = ServiceConfig(
            bootstrap=ep.kafka_bootstrap, database_url=ep.database_url, topics=topics,
            max_image_pixels=settings.max_image_pixels,
            max_message_bytes=settings.max_message_bytes, batch_size=args.batch,
            max_wait_ms=100,
        )  # fmt: skip
        service = ScorerService(model, cfg)
        th = threading.Thread(target=service.run, daemon=True)
        th.start()
        time.sleep(5)  # group join

        # PNG-encode first: encoding is the camera side's work (another machine in production);
        # done here while the scorer runs, it would take CPU from the scorer on 2 cores.
        burst = [LayerMessage.from_image("bench", "burst", i, img) for i, img in enumerate(frames)]
        with LayerProducer(ep.kafka_bootstrap, settings.max_message_bytes, topics.layers) as p:
            for msg in burst:
                p.send(dataclasses.replace(msg, captured_at=datetime.now(UTC)))
        _wait_rows(ep.database_url, "burst", len(frames))
        burst_ips = len(frames) / _span_s(ep.database_url, "burst")

        interval = args.interval or 1.5 / burst_ips  # below the pipeline's capacity
        with LayerProducer(ep.kafka_bootstrap, settings.max_message_bytes, topics.layers) as p:
            for i in range(args.paced_layers):
                p.send(LayerMessage.from_image(
                    "bench", "paced", i, frames[i % len(frames)], captured_at=datetime.now(UTC)
                ))  # fmt: skip
                p.flush()
                time.sleep(interval)
        _wait_rows(ep.database_url, "paced", args.paced_layers)
        lat = _e2e(ep.database_url, "paced")
        model_ms = 1000 * raw_s / len(frames)
        service.stop_event.set()
        th.join(30)
    finally:
        for srv in servers(settings):
            srv.stop()
        shutil.rmtree(home, ignore_errors=True)

    print(
        f"layers {len(frames)} at {size}x{size}, micro-batch {args.batch}, "
        f"model {model.model_version}"
    )
    print(f"raw batched model         {raw_ips:7.2f} layers/s  ({model_ms:.0f} ms/layer)")
    print(
        f"pipeline burst            {burst_ips:7.2f} layers/s  "
        f"ratio to raw {burst_ips / raw_ips:.3f}"
    )
    print(f"pipeline overhead         {100 * (1 - burst_ips / raw_ips):6.1f} %  (target <= 30 %)")
    print(f"paced, one layer / {interval:.2f}s: e2e p50 {np.percentile(lat, 50):.0f} ms, "
          f"p95 {np.percentile(lat, 95):.0f} ms  (model alone {model_ms:.0f} ms; "
          f"p50 ratio {np.percentile(lat, 50) / model_ms:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
