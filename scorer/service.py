"""The scorer service: layers from Kafka → model → PostgreSQL + ``scores`` topic.

Delivery: at-least-once from Kafka made effectively-once by idempotent writes. For each
micro-batch the order is (1) score, (2) upsert scores/maps/dead letters in one transaction,
(3) produce score and dead-letter messages and wait for their delivery reports, (4) commit
the offsets. A crash between any two steps replays the batch, and the replay overwrites
the same rows (natural keys) — so the tables never hold a layer twice.

Two stages overlap: while a writer thread makes batch k durable (steps 2–4: database, Kafka,
commit, mostly waiting on I/O), the consumer thread decodes and scores batch k+1 (step 1, CPU).
The writer commits strictly in batch order, and once a batch could not be made durable (a stop
while the database was unreachable) it commits nothing after it, so no offset ever passes a
layer that is not stored.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from sqlalchemy.exc import OperationalError

from ingest.messages import LayerMessage
from layerwatch.core.kafka import (
    SCORER_GROUP,
    Topics,
    close_producer,
    consumer_config,
    producer_config,
)
from layerwatch.core.wire import DLQ_REASON_HEADER, DLQ_SOURCE_HEADER, MessageError
from scorer.maps import compress_map
from scorer.messages import ScoreMessage
from scorer.methods import Method
from storage import db, repository
from storage.models import ModelRecord

log = logging.getLogger(__name__)


@dataclass
class ServiceConfig:
    bootstrap: str
    database_url: str
    topics: Topics
    max_image_pixels: int
    max_message_bytes: int
    batch_size: int = 8
    max_wait_ms: int = 200
    metrics_port: int = 0
    store_maps: bool = True
    group: str = SCORER_GROUP


@dataclass
class DeadLetter:
    msg: Message
    field: str | None
    reason: str

    @property
    def source(self) -> str:
        return f"{self.msg.topic()}:{self.msg.partition()}:{self.msg.offset()}"


@dataclass
class BatchOutcome:
    scored: list[ScoreMessage] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


@dataclass
class ScoredBatch:
    """A micro-batch after the model, before anything is durable."""

    msgs: Sequence[Message]
    outcome: BatchOutcome
    layer_rows: list[dict] = field(default_factory=list)
    score_rows: list[dict] = field(default_factory=list)
    map_rows: list[dict] = field(default_factory=list)
    latencies_s: list[tuple[float, float]] = field(default_factory=list)  # (e2e, model)


class Metrics:
    """Prometheus metrics of one scorer process (own registry: several can live in a test)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.layers = Counter("layerwatch_layers_scored", "Layers scored", registry=r)
        self.errors = Counter(
            "layerwatch_scorer_errors", "Records sent to the dead-letter topic", ["field"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "layerwatch_layer_latency_seconds", "Capture to durable score",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r,
        )  # fmt: skip
        self.model_latency = Histogram(
            "layerwatch_model_latency_seconds", "Model time per layer",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2), registry=r,
        )  # fmt: skip
        self.batch = Histogram(
            "layerwatch_batch_size", "Layers per micro-batch", buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )  # fmt: skip
        self.lag = Gauge("layerwatch_consumer_lag", "Messages behind", ["partition"], registry=r)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)


class ScorerService:
    def __init__(self, model: Method, cfg: ServiceConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.metrics = Metrics()
        self.stop_event = threading.Event()
        self.assigned = threading.Event()  # set once the group gave this member partitions
        self.engine = db.make_engine(cfg.database_url)
        self._consumer: Consumer | None = None
        self._producer = Producer(producer_config(cfg.bootstrap, cfg.max_message_bytes))
        self._delivery_errors: list[str] = []
        self._last_lag = 0.0
        self._writer_error: Exception | None = None
        self._register_model()

    def _register_model(self) -> None:
        """Record the model (its calibration scores are the monitor's Phase I data)."""
        art = self.model.to_artifact()
        config = json.loads(json.dumps(art.config, default=str))
        metrics = config.get("evaluation", {}) if isinstance(config.get("evaluation"), dict) else {}
        with self.engine.begin() as conn:
            repository.upsert(
                conn, ModelRecord,
                [{"version": self.model.model_version, "method": art.method, "config": config,
                  "metrics": metrics}],
            )  # fmt: skip

    # ------------------------------------------------------------------ batch logic

    def process(self, msgs: Sequence[Message]) -> BatchOutcome:
        """Decode, score and persist one micro-batch; does not commit offsets."""
        return self.persist(self.score(msgs))

    def score(self, msgs: Sequence[Message]) -> ScoredBatch:
        """Step 1: decode and score; bad records become dead letters. No I/O."""
        out = BatchOutcome()
        decoded: list[tuple[Message, LayerMessage, np.ndarray]] = []
        for m in msgs:
            try:
                lm = LayerMessage.decode(m.key(), m.value(), m.headers())
                img = self._fit_channels(lm.image(self.cfg.max_image_pixels))
                decoded.append((m, lm, img))
            except MessageError as exc:
                out.dead.append(DeadLetter(m, exc.field, exc.reason))
        results = self._score([img for _, _, img in decoded], out, decoded)
        now = datetime.now(UTC)
        score_rows, map_rows, layer_rows = [], [], []
        latencies: list[tuple[float, float]] = []
        for (_m, lm, img), res in results:
            e2e_ms = (now - lm.captured_at).total_seconds() * 1000.0
            sm = ScoreMessage(
                printer=lm.printer, job=lm.job, layer=lm.layer, score=float(res.score),
                anomalous=bool(res.anomalous), f1=float(res.f1), f2=float(res.f2),
                defect_area=float(res.defect_area), model_version=self.model.model_version,
                latency_ms=float(res.latency_ms), captured_at=lm.captured_at.isoformat(),
                scored_at=now.isoformat(), largest_area=float(res.largest_area),
            )  # fmt: skip
            out.scored.append(sm)
            key = {"printer": lm.printer, "job": lm.job, "layer": lm.layer}
            layer_rows.append(key | {
                "z_mm": lm.z_mm, "captured_at": lm.captured_at, "width": img.shape[1],
                "height": img.shape[0],
            })  # fmt: skip
            score_rows.append(key | {
                "model_version": sm.model_version, "score": sm.score, "anomalous": sm.anomalous,
                "f1": sm.f1, "f2": sm.f2, "defect_area": sm.defect_area,
                "largest_area": sm.largest_area, "latency_ms": sm.latency_ms,
                "e2e_latency_ms": e2e_ms, "captured_at": lm.captured_at, "scored_at": now,
            })  # fmt: skip
            if self.cfg.store_maps:
                png, scale = compress_map(res.anomaly_map)
                map_rows.append(key | {
                    "model_version": sm.model_version, "width": img.shape[1],
                    "height": img.shape[0], "scale": scale, "png": png,
                })  # fmt: skip
            latencies.append((max(e2e_ms, 0.0) / 1000.0, sm.latency_ms / 1000.0))
        return ScoredBatch(msgs, out, layer_rows, score_rows, map_rows, latencies)

    def persist(self, batch: ScoredBatch) -> BatchOutcome:
        """Steps 2–3: one database transaction, then the messages with delivery reports."""
        out, layer_rows = batch.outcome, batch.layer_rows
        with self.engine.begin() as conn:
            repository.register_jobs(conn, {(r["printer"], r["job"]) for r in layer_rows})
            repository.upsert_layers(conn, layer_rows)
            repository.upsert_scores(conn, batch.score_rows)
            repository.upsert_maps(conn, batch.map_rows)
            repository.add_dead_letters(conn, [self._dead_row(d) for d in out.dead])
        self._publish(out)
        for e2e_s, model_s in batch.latencies_s:
            self.metrics.latency.observe(e2e_s)
            self.metrics.model_latency.observe(model_s)
        self.metrics.layers.inc(len(out.scored))
        self.metrics.batch.observe(len(batch.msgs))
        for d in out.dead:
            self.metrics.errors.labels(d.field or "model").inc()
            log.warning(
                "dead letter", extra={"source": d.source, "field": d.field, "reason": d.reason}
            )
        return out

    def _fit_channels(self, img: np.ndarray) -> np.ndarray:
        want = self.model.channels
        if want == 1 and img.ndim == 3:
            return np.round(img @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        if want == 3 and img.ndim == 2:
            return np.repeat(img[:, :, None], 3, axis=2)
        return img

    def _score(self, images, out: BatchOutcome, decoded):
        """Score all images together; if the batch fails, isolate the bad layers one by one."""
        if not images:
            return []
        try:
            return list(zip(decoded, self.model.score_batch(images), strict=True))
        except Exception as batch_exc:
            log.warning(
                "batch scoring failed, retrying one by one", extra={"error": str(batch_exc)}
            )
        pairs = []
        for item in decoded:
            try:
                pairs.append((item, self.model.score_batch([item[2]])[0]))
            except Exception as exc:
                out.dead.append(DeadLetter(item[0], None, f"scoring failed: {exc}"))
        return pairs

    @staticmethod
    def _dead_row(d: DeadLetter) -> dict:
        return {
            "source": d.source, "stage": "scorer", "field": d.field, "reason": d.reason,
            "key": d.msg.key(), "payload": d.msg.value(),
            "headers": {k: (v or b"").decode("utf-8", "replace") for k, v in d.msg.headers() or []},
        }  # fmt: skip

    def _publish(self, out: BatchOutcome) -> None:
        topics = self.cfg.topics
        for sm in out.scored:
            self._producer.produce(
                topics.scores, sm.encode(), sm.key, headers=sm.headers(), on_delivery=self._report
            )
        for d in out.dead:
            headers = [
                *(d.msg.headers() or []),
                (DLQ_REASON_HEADER, f"{d.field or 'model'}: {d.reason}".encode()),
                (DLQ_SOURCE_HEADER, d.source.encode()),
            ]
            self._producer.produce(
                topics.dlq, d.msg.value(), d.msg.key(), headers=headers, on_delivery=self._report
            )
        remaining = self._producer.flush(30)
        if remaining or self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            raise KafkaException(f"{remaining} unconfirmed, errors: {errors[:3]}")

    def _report(self, error, msg) -> None:
        if error is not None:
            self._delivery_errors.append(f"{msg.topic()}: {error.str()}")

    # ------------------------------------------------------------------ Kafka loop

    def _commit(self, msgs: Sequence[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for m in msgs:
            k = (m.topic(), m.partition())
            last[k] = max(last.get(k, -1), m.offset())
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)  # type: ignore[union-attr]
        except KafkaException as exc:
            # A partition moved to another scorer mid-batch; it will replay these layers and
            # the upserts make that harmless.
            log.warning("offset commit failed", extra={"error": str(exc)})

    def _update_lag(self) -> None:
        if time.monotonic() - self._last_lag < 10 or self._consumer is None:
            return
        self._last_lag = time.monotonic()
        try:
            for tp in self._consumer.assignment():
                pos = self._consumer.position([tp])[0].offset
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                if pos >= 0 and high >= 0:
                    self.metrics.lag.labels(str(tp.partition)).set(max(high - pos, 0))
        except KafkaException:
            pass

    def run(self, max_batches: int | None = None) -> None:
        """Consume until stopped (SIGTERM/SIGINT or ``stop_event``); the batches in hand are
        finished and committed before exiting."""
        cfg = self.cfg
        self.metrics.serve(cfg.metrics_port)
        self._consumer = Consumer(consumer_config(cfg.bootstrap, cfg.group))
        self._consumer.subscribe([cfg.topics.layers], on_assign=lambda *_: self.assigned.set())
        log.info("scorer running", extra={"group": cfg.group, "model": self.model.model_version})
        # One batch waits while the writer persists the previous one: bounded memory, and at
        # most two batches replay after a crash.
        pending: queue.Queue[ScoredBatch | None] = queue.Queue(maxsize=1)
        writer = threading.Thread(target=self._write_loop, args=(pending,), name="scorer-writer")
        writer.start()
        batches = 0
        try:
            while not self.stop_event.is_set() and self._writer_error is None:
                msgs = self._consumer.consume(cfg.batch_size, cfg.max_wait_ms / 1000.0)
                msgs = [m for m in msgs if m.error() is None]
                if msgs:
                    pending.put(self.score(msgs))
                    batches += 1
                    if max_batches is not None and batches >= max_batches:
                        break
                self._update_lag()
        finally:
            pending.put(None)
            writer.join()
            self._consumer.close()
            close_producer(self._producer)
            log.info("scorer stopped", extra={"batches": batches})
        if self._writer_error is not None:
            raise self._writer_error

    def _write_loop(self, pending: queue.Queue[ScoredBatch | None]) -> None:
        """Persist and commit batches in order; after one is abandoned, commit nothing more."""
        abandoned = False
        while (batch := pending.get()) is not None:
            if abandoned:
                continue  # not durable: the group replays it after a restart
            try:
                if self._persist_with_retry(batch):
                    self._commit(batch.msgs)
                else:
                    abandoned = True
            except Exception as exc:  # a bug, not an outage: stop the service, loudly
                log.exception("scorer writer failed")
                self._writer_error = exc
                self.stop_event.set()
                abandoned = True

    def _persist_with_retry(self, batch: ScoredBatch) -> bool:
        """Retry a batch while the database or broker is unreachable; never skip it.

        Returns False if asked to stop before the batch was durable (it will be replayed).
        """
        delay = 0.5
        while True:
            try:
                self.persist(batch)
                return True
            except (OperationalError, KafkaException) as exc:
                log.error(
                    "batch not durable, retrying",
                    extra={"error": str(exc).splitlines()[0], "retry_in_s": delay},
                )
                if self.stop_event.wait(delay):
                    return False
                delay = min(delay * 2, 30.0)

    def install_signal_handlers(self) -> None:
        def _stop(signum, _frame):
            log.info("stopping after the current batch", extra={"signal": signum})
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
