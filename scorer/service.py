"""The scorer service: layers from Kafka → model → PostgreSQL + ``scores`` topic.

Delivery: at-least-once from Kafka made effectively-once by idempotent writes. For each
micro-batch the order is (1) score, (2) upsert scores/maps/dead letters in one transaction,
(3) produce score and dead-letter messages and wait for their delivery reports, (4) commit
the offsets. A crash between any two steps replays the batch, and the replay overwrites
the same rows (natural keys) — so the tables never hold a layer twice.

Two stages overlap: while a writer thread makes batch k durable (steps 2–4: database, Kafka,
commit, mostly waiting on I/O), the consumer thread decodes and scores batch k+1 (step 1, CPU).
The writer hands durable batches back in batch order, and once a batch could not be made
durable (a stop while the database was unreachable) it hands back nothing after it, so no
offset ever passes a layer that is not stored. The consumer thread commits them: only the
thread that consumes touches the consumer (a synchronous commit from the writer thread, while
the consumer thread sat in ``consume``, hung for good now and then, and every layer after it
with it).

References (issue 18): for a method that compares a layer with references
(``uses_references``), each layer is scored with its job's previous layer (kept by
:class:`scorer.history.LayerHistory`, also for layers earlier in the same micro-batch, and
read back from ``layer_images`` after a restart) and the expected outline its message
carries. A malformed outline is logged, counted and stored with the score
(``outline_error``); the layer is still scored, by the texture channel.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Histogram
from sqlalchemy.exc import OperationalError

from ingest.images import ImageError, decode_image, encode_png
from ingest.messages import RAW, LayerMessage
from layerwatch.core.health import ServiceMetrics, serve_metrics
from layerwatch.core.kafka import (
    SCORER_GROUP,
    KafkaService,
    Outbox,
    Outgoing,
    Topics,
    check_broker,
    close_producer,
    consumer_lag,
    split_errors,
)
from layerwatch.core.retry import Backoff
from layerwatch.core.wire import DLQ_REASON_HEADER, DLQ_SOURCE_HEADER, MessageError
from scorer.history import JobKey, LayerHistory
from scorer.job_placement import JobPlacements
from scorer.maps import compress_map
from scorer.messages import ScoreMessage
from scorer.methods import LayerReference, Method, score_layers, uses_references
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
    metrics_host: str = "127.0.0.1"
    store_maps: bool = True
    group: str = SCORER_GROUP
    max_poll_interval_ms: int = 300_000
    history_layers: int = 2  # previous-layer images kept per job (methods with references)
    history_jobs: int = 256  # jobs held in memory; the least recently seen is dropped
    placement_layers: int = 16  # a job's normal placement: the median of this many layers


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
    image_rows: list[dict] = field(default_factory=list)  # layer_images (the references)
    latencies_s: list[tuple[float, float]] = field(default_factory=list)  # (e2e, model)
    sources: list[Message] = field(default_factory=list)  # the message of each scored row
    stored: bool = False  # the database transaction is committed (a retry skips it)
    outbox: Outbox | None = None  # the messages, kept across retries: none is sent twice


class Metrics(ServiceMetrics):
    """Prometheus metrics and health of one scorer process (own registry: several can live in
    a test); lag, database and Kafka errors come from the part both services share."""

    def __init__(self) -> None:
        super().__init__("scorer")
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
        self.outline_errors = Counter(
            "layerwatch_outline_errors", "Layers whose expected outline could not be used "
            "(scored without it)", registry=r,
        )  # fmt: skip
        self.batch = Histogram(
            "layerwatch_batch_size", "Layers per micro-batch", buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )  # fmt: skip


class ScorerService(KafkaService):
    def __init__(self, model: Method, cfg: ServiceConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.metrics = Metrics()
        self.stop_event = threading.Event()
        self.assigned = threading.Event()  # set once the group gave this member partitions
        self.engine = db.make_engine(cfg.database_url)
        self._consumer: Consumer | None = None
        self._producer = self._new_producer()
        self._last_lag = 0.0
        self._writer_error: Exception | None = None
        self._durable: queue.SimpleQueue[Sequence[Message]] = queue.SimpleQueue()
        self.references = uses_references(model)
        self.history = LayerHistory(
            cfg.history_layers if self.references else 0, cfg.history_jobs, self._load_history
        )
        self.placements = JobPlacements(
            cfg.placement_layers, jobs=cfg.history_jobs, load=self._load_placements
        )
        if not self.references:
            log.info(
                "model uses no references: layers are scored on the image alone",
                extra={"model": model.model_version},
            )
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
        refs = self._references(decoded)
        results = self._score(out, decoded, refs)
        now = datetime.now(UTC)
        score_rows, map_rows, layer_rows, image_rows = [], [], [], []
        latencies: list[tuple[float, float]] = []
        sources = []
        for (m, lm, img), res, ref in results:
            sources.append(m)
            e2e_ms = (now - lm.captured_at).total_seconds() * 1000.0
            sm = ScoreMessage(
                printer=lm.printer, job=lm.job, layer=lm.layer, score=float(res.score),
                anomalous=bool(res.anomalous), f1=float(res.f1), f2=float(res.f2),
                defect_area=float(res.defect_area), model_version=self.model.model_version,
                latency_ms=float(res.latency_ms), captured_at=lm.captured_at.isoformat(),
                scored_at=now.isoformat(), largest_area=float(res.largest_area),
                channel_scores={k: float(v) for k, v in res.channel_scores.items()},
                fired=tuple(res.fired),
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
                "channel_scores": sm.channel_scores, "fired": ",".join(sm.fired),
                "outline_error": ref.outline_error if ref is not None else None,
                "outline_state": None if res.outline_state is None else list(res.outline_state),
            })  # fmt: skip
            self.placements.add(
                (lm.printer, lm.job), lm.layer, res.outline_state, bool(res.anomalous)
            )
            if self.history.layers:  # the layer's own file (no re-encoding) unless raw
                raw = lm.content_type == RAW
                image_rows.append(key | {
                    "image": encode_png(img) if raw else lm.payload,
                    "channels": (1 if img.ndim == 2 else 3) if raw else lm.channels,
                })  # fmt: skip
            if self.cfg.store_maps:
                png, scale = compress_map(res.anomaly_map)
                map_rows.append(key | {
                    "model_version": sm.model_version, "width": img.shape[1],
                    "height": img.shape[0], "scale": scale, "png": png,
                })  # fmt: skip
            latencies.append((max(e2e_ms, 0.0) / 1000.0, sm.latency_ms / 1000.0))
        return ScoredBatch(
            msgs, out, layer_rows, score_rows, map_rows, image_rows, latencies, sources=sources
        )

    def persist(self, batch: ScoredBatch) -> BatchOutcome:
        """Steps 2–3: one database transaction, then the messages with delivery reports."""
        out, layer_rows = batch.outcome, batch.layer_rows
        if not batch.stored:
            with self.engine.begin() as conn:
                self._drop_late(batch, conn)
                layer_rows = batch.layer_rows
                repository.register_jobs(conn, {(r["printer"], r["job"]) for r in layer_rows})
                repository.upsert_layers(conn, layer_rows)
                repository.upsert_scores(conn, batch.score_rows)
                repository.upsert_maps(conn, batch.map_rows)
                if batch.image_rows:
                    repository.store_layer_images(conn, batch.image_rows, self.history.layers)
                repository.add_dead_letters(conn, [self._dead_row(d) for d in out.dead])
            batch.stored = True
        if batch.outbox is None:
            batch.outbox = self._outbox(out)
        batch.outbox.send(self._producer)
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

    @staticmethod
    def _drop_late(batch: ScoredBatch, conn) -> None:
        """A layer older than one its job already has, and never stored, is out of order: a
        dead letter, not a score (the monitor charts each job in layer order)."""
        keys = [(r["printer"], r["job"], r["layer"]) for r in batch.layer_rows]
        late = repository.out_of_order(conn, keys)
        if not late:
            return
        keep = [i for i, k in enumerate(keys) if k not in late]
        for i, k in enumerate(keys):
            if k in late:
                reason = f"layer {k[2]} of {k[0]}/{k[1]} arrived after layer {late[k]}"
                batch.outcome.dead.append(DeadLetter(batch.sources[i], "layer", reason))
        batch.outcome.scored = [batch.outcome.scored[i] for i in keep]
        batch.layer_rows = [batch.layer_rows[i] for i in keep]
        batch.score_rows = [batch.score_rows[i] for i in keep]
        batch.latencies_s = [batch.latencies_s[i] for i in keep]
        batch.sources = [batch.sources[i] for i in keep]
        if batch.map_rows:
            batch.map_rows = [batch.map_rows[i] for i in keep]
        if batch.image_rows:
            batch.image_rows = [batch.image_rows[i] for i in keep]

    def _fit_channels(self, img: np.ndarray) -> np.ndarray:
        want = self.model.channels
        if want == 1 and img.ndim == 3:
            return np.round(img @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        if want == 3 and img.ndim == 2:
            return np.repeat(img[:, :, None], 3, axis=2)
        return img

    def _references(self, decoded) -> list[LayerReference] | None:
        """Each layer's previous layer and expected outline, in message order (a layer's
        previous may be earlier in this batch); None for a method without references."""
        if not self.references:
            return None
        refs = []
        for m, lm, img in decoded:
            outline, error = None, None
            try:
                outline = lm.outline_mask(self.cfg.max_image_pixels)
            except MessageError as exc:
                error = exc.reason
                self.metrics.outline_errors.inc()
                log.warning(
                    "outline not used: scoring the layer without it",
                    extra={"printer": lm.printer, "job": lm.job, "layer": lm.layer,
                           "source": f"{m.topic()}:{m.partition()}:{m.offset()}",
                           "reason": error},
                )  # fmt: skip
            key = (lm.printer, lm.job)
            previous = self.history.previous(key, lm.layer)
            placement = self.placements.placement(key, lm.layer) if outline is not None else None
            refs.append(LayerReference(previous, outline, error, placement))
            self.history.add(key, lm.layer, img)
        return refs

    def _load_history(self, key: JobKey, before: int) -> list[tuple[int, np.ndarray]]:
        """A job's stored layer images below ``before`` (after a restart or an eviction); an
        unreachable database or a bad image only costs the reference, never the layer."""
        try:
            with self.engine.connect() as conn:
                stored = repository.recent_layer_images(
                    conn, key[0], key[1], before, self.history.layers
                )
            limit = self.cfg.max_image_pixels
            return [  # decoded as the scorer decoded the layer's message
                (n, self._fit_channels(decode_image(data, limit, grayscale=channels == 1)))
                for n, data, channels in stored
            ]
        except (OperationalError, ImageError) as exc:
            log.warning(
                "previous layers not read back", extra={"printer": key[0], "job": key[1],
                                                         "error": str(exc)},
            )  # fmt: skip
            return []

    def _load_placements(
        self, key: JobKey, before: int, limit: int
    ) -> list[tuple[float, float, float]]:
        """A job's stored placements (after a restart or an eviction); an unreachable database
        costs the job's reference (its placement features are missing until it is rebuilt),
        not the layer."""
        try:
            with self.engine.connect() as conn:
                return repository.recent_outline_states(
                    conn, key[0], key[1], self.model.model_version, before, limit
                )
        except OperationalError as exc:
            log.warning(
                "job placement not read back", extra={"printer": key[0], "job": key[1],
                                                      "error": str(exc)},
            )  # fmt: skip
            return []

    def _score(self, out: BatchOutcome, decoded, refs: list[LayerReference] | None):
        """Score all images together; if the batch fails, isolate the bad layers one by one.
        Returns ((message, layer, image), result, reference) triples."""
        if not decoded:
            return []
        refs_or_none = refs if refs is not None else [None] * len(decoded)
        images = [img for _, _, img in decoded]
        try:
            results = score_layers(self.model, images, refs)
            return self._finite(out, list(zip(decoded, results, refs_or_none, strict=True)))
        except Exception as batch_exc:
            log.warning(
                "batch scoring failed, retrying one by one", extra={"error": str(batch_exc)}
            )
        triples = []
        for item, ref in zip(decoded, refs_or_none, strict=True):
            try:
                res = score_layers(self.model, [item[2]], None if ref is None else [ref])[0]
                triples.append((item, res, ref))
            except Exception as exc:
                out.dead.append(DeadLetter(item[0], None, f"scoring failed: {exc}"))
        return self._finite(out, triples)

    @staticmethod
    def _finite(out: BatchOutcome, triples: list) -> list:
        """A result whose score, features or channel scores are not finite numbers is the
        model's fault, not the layer's: the layer is dead-lettered with the values named, and
        the batch goes on (the database refuses such numbers, and a writer that failed on them
        would fail on every retry)."""
        kept = []
        for item, res, ref in triples:
            channels = {f"channel {k}": v for k, v in (res.channel_scores or {}).items()}
            values = {"score": res.score, "f1": res.f1, "f2": res.f2, **channels}
            bad = {k: v for k, v in values.items() if v is not None and not math.isfinite(v)}
            if bad:
                out.dead.append(
                    DeadLetter(item[0], None, f"scoring failed: non-finite model output {bad}")
                )
            else:
                kept.append((item, res, ref))
        return kept

    @staticmethod
    def _dead_row(d: DeadLetter) -> dict:
        return {
            "source": d.source, "stage": "scorer", "field": d.field, "reason": d.reason,
            "key": d.msg.key(), "payload": d.msg.value(),
            "headers": {k: (v or b"").decode("utf-8", "replace") for k, v in d.msg.headers() or []},
        }  # fmt: skip

    def _outbox(self, out: BatchOutcome) -> Outbox:
        topics = self.cfg.topics
        items = [Outgoing(topics.scores, sm.encode(), sm.key, sm.headers()) for sm in out.scored]
        for d in out.dead:
            headers = [
                *(d.msg.headers() or []),
                (DLQ_REASON_HEADER, f"{d.field or 'model'}: {d.reason}".encode()),
                (DLQ_SOURCE_HEADER, d.source.encode()),
            ]
            items.append(Outgoing(topics.dlq, d.msg.value(), d.msg.key(), headers))
        return Outbox(items)

    # ------------------------------------------------------------------ Kafka loop

    def _commit_durable(self) -> None:
        """Commit what the writer made durable since the last call (consumer thread only)."""
        msgs: list[Message] = []
        while True:
            try:
                msgs.extend(self._durable.get_nowait())
            except queue.Empty:
                break
        if msgs:
            self._commit(msgs)

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
        """Every 2 s: the lag, and while Kafka was reported down, whether it answers again."""
        if time.monotonic() - self._last_lag < 2 or self._consumer is None:
            return
        self._last_lag = time.monotonic()
        self.metrics.set_lag(consumer_lag(self._consumer))
        check_broker(self._consumer, self.cfg.topics.layers, self.metrics)

    def _consume(self) -> list[Message]:
        msgs = self._consumer.consume(self.cfg.batch_size, self.cfg.max_wait_ms / 1000.0)  # type: ignore[union-attr]
        ok, errors = split_errors(msgs)
        if errors and self.metrics.waiting("kafka", errors[0]):
            log.error("Kafka unreachable: waiting for the broker", extra={"error": errors[0]})
        return ok

    def run(self, max_batches: int | None = None) -> None:
        """Consume until stopped (SIGTERM/SIGINT or ``stop_event``); the batches in hand are
        finished and committed before exiting."""
        cfg = self.cfg
        server = serve_metrics(self.metrics, cfg.metrics_port, cfg.metrics_host)
        self._consumer = self._new_consumer()
        self._consumer.subscribe(
            [cfg.topics.layers], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        # the network's engine is built now (an ONNX export takes seconds), not on layer one
        engine = getattr(self.model, "engine", None)
        log.info(
            "scorer running",
            extra={"group": cfg.group, "model": self.model.model_version, "engine": engine},
        )
        # One batch waits while the writer persists the previous one: bounded memory, and at
        # most two batches replay after a crash.
        pending: queue.Queue[ScoredBatch | None] = queue.Queue(maxsize=1)
        writer = threading.Thread(target=self._write_loop, args=(pending,), name="scorer-writer")
        writer.start()
        batches = 0
        try:
            while not self.stop_event.is_set() and self._writer_error is None:
                msgs = self._consume()
                if msgs:
                    self._hand_over(pending, self.score(msgs))
                    batches += 1
                    if max_batches is not None and batches >= max_batches:
                        break
                self._commit_durable()
                self._update_lag()
        finally:
            self.metrics.health.stopping()
            pending.put(None)
            writer.join()
            self._commit_durable()
            self._consumer.close()
            close_producer(self._producer)
            if server is not None:
                server.close()
            log.info("scorer stopped", extra={"batches": batches})
        if self._writer_error is not None:
            raise self._writer_error

    def _on_revoke(self, *_args: object) -> None:
        """Partitions moved (consumer thread, as every use of the history is)."""
        jobs, _ = self.history.size
        if jobs:
            log.info("partitions revoked: layer history dropped", extra={"jobs": jobs})
        self.history.clear()
        self.placements.clear()

    def _hand_over(self, pending: queue.Queue[ScoredBatch | None], batch: ScoredBatch) -> None:
        """Queue a scored batch for the writer; while it waits, commit what became durable."""
        while True:
            try:
                pending.put(batch, timeout=0.2)
                return
            except queue.Full:
                self._commit_durable()

    def _write_loop(self, pending: queue.Queue[ScoredBatch | None]) -> None:
        """Persist and commit batches in order; after one is abandoned, commit nothing more."""
        abandoned = False
        while (batch := pending.get()) is not None:
            if abandoned:
                continue  # not durable: the group replays it after a restart
            try:
                if self._persist_with_retry(batch):
                    self._durable.put(batch.msgs)
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
        backoff = Backoff()
        while True:
            try:
                self.persist(batch)
            except (OperationalError, KafkaException) as exc:
                if not self._hold(exc, batch.outbox if batch is not None else None, backoff):
                    return False
                continue
            if (outage := self.metrics.progress()) is not None:
                log.info("resumed", extra={"outage_s": round(outage, 1), "attempts": backoff.n})
            return True

    def install_signal_handlers(self) -> None:
        def _stop(signum, _frame):
            log.info("stopping after the current batch", extra={"signal": signum})
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
