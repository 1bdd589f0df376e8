"""`layerwatch demo`: the pipeline end to end on the embedded servers.

This first version runs the foundation for real: embedded broker and database, migrations,
topics, layer images produced to Kafka, consumed in a consumer group, validated against the
wire contract and recorded in PostgreSQL with offsets committed after the write.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from layerwatch.settings import Settings


def _layer_image(layer: int, size: int = 128) -> np.ndarray:
    """A plain striped layer; replaced by the simulator in the full demo."""
    yy, xx = np.mgrid[0:size, 0:size]
    angle = np.pi / 4 if layer % 2 else -np.pi / 4
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.8)
    rng = np.random.default_rng(layer)
    img = 128 + 60 * stripes + rng.normal(0, 6, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def run_demo(settings: Settings, layers: int, console: Console) -> int:
    from confluent_kafka import Consumer

    from ingest.messages import LayerMessage
    from ingest.producer import LayerProducer
    from layerwatch.embedded import resolve_endpoints
    from layerwatch.kafka import consumer_config, ensure_topics
    from storage import db, repository

    console.rule("LayerWatch demo")
    t0 = time.perf_counter()
    ep = resolve_endpoints(settings)
    console.print(f"kafka {ep.kafka_bootstrap}; postgres ready ({time.perf_counter() - t0:.1f}s)")
    db.upgrade(ep.database_admin_url)
    db.require_current_schema(ep.database_url)
    topics = settings.topics
    ensure_topics(ep.kafka_bootstrap, topics, settings.topic_partitions, settings.topic_replication)

    job = f"demo-{uuid.uuid4().hex[:8]}"
    sent: dict[int, float] = {}
    with LayerProducer(ep.kafka_bootstrap, settings.max_message_bytes, topics.layers) as producer:
        for i in range(layers):
            producer.send(LayerMessage.from_image("demo-printer", job, i, _layer_image(i)))
            sent[i] = time.perf_counter()

    consumer = Consumer(consumer_config(ep.kafka_bootstrap, f"demo-{job}"))
    consumer.subscribe([topics.layers])
    received: dict[int, float] = {}
    engine = db.make_engine(ep.database_url)
    deadline = time.monotonic() + 60
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("consuming layers", total=layers)
        while len(received) < layers and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            m = LayerMessage.decode(msg.key(), msg.value(), msg.headers())
            if m.job != job:
                consumer.commit(message=msg, asynchronous=False)
                continue
            img = m.image(settings.max_image_pixels)
            with engine.begin() as conn:
                repository.register_jobs(conn, [(m.printer, m.job)])
                repository.upsert_layers(conn, [{
                    "printer": m.printer, "job": m.job, "layer": m.layer, "z_mm": m.z_mm,
                    "captured_at": m.captured_at, "width": img.shape[1], "height": img.shape[0],
                }])  # fmt: skip
            consumer.commit(message=msg, asynchronous=False)
            received[m.layer] = time.perf_counter()
            progress.update(task, completed=len(received))
    consumer.close()

    lat = np.array([1000 * (received[i] - sent[i]) for i in received])
    table = Table(title=f"job {job}")
    table.add_column("layers sent")
    table.add_column("layers stored")
    table.add_column("p50 ms")
    table.add_column("p95 ms")
    table.add_row(
        str(layers), str(len(received)),
        f"{np.percentile(lat, 50):.1f}" if len(lat) else "-",
        f"{np.percentile(lat, 95):.1f}" if len(lat) else "-",
    )  # fmt: skip
    console.print(table)
    if len(received) != layers:
        console.print(f"[red]only {len(received)} of {layers} layers arrived[/]")
        return 1
    return 0
