"""The monitor service: score messages → control charts → alarms → printer actions.

Per micro-batch: chart every layer (one :class:`JobMonitor` per (printer, job)), upsert the
chart points and open alarms idempotently in one transaction, run the stop actions of alarms
that have no successful action yet (storing every attempt), publish the alarms, then commit
the offsets. A replay after a crash rewrites the same chart points, finds the alarms already
open, and only retries an action that never succeeded. Alarm messages are at-least-once: a
replayed alarm is published again with its stored id (publishing only newly opened ones lost
the message of an alarm whose row was written just before a crash or a broker outage).

While PostgreSQL or the broker is unreachable the batch is held and retried with back-off,
stage by stage: charts that were computed are not computed again, an action that ran is not
run again, messages that the broker confirmed are not sent again.

Phase I comes from the model's calibration scores, features and defect-cluster areas (stored
by the scorer in the ``models`` table); what a model lacks (older models stored no areas) comes
from the job's first layers. Chart state lives in memory and is rebuilt from the job's stored
scores on first sight of a job after a restart — the charts are deterministic, so the rebuilt
state is identical.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Gauge
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from layerwatch.core.health import ServiceMetrics, serve_metrics
from layerwatch.core.kafka import (
    MONITOR_GROUP,
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
from monitor.actions import PrinterConfig, run_action, target_for
from monitor.actions.base import Attempt
from monitor.alarms import AlarmEvent, PolicySet
from monitor.calibration import Calibration, model_calibration, with_print_levels
from monitor.charts import ChartPoint
from monitor.design import ChartDesign
from monitor.engine import JobMonitor
from monitor.messages import AlarmMessage
from scorer.messages import ScoreMessage
from storage import db, repository
from storage.models import ModelRecord

log = logging.getLogger(__name__)

IDLE_EVICT_S = 6 * 3600


@dataclass
class MonitorConfig:
    bootstrap: str
    database_url: str
    topics: Topics
    policies: PolicySet = field(default_factory=PolicySet)
    printers: dict[str, PrinterConfig] = field(default_factory=dict)
    design: ChartDesign = field(default_factory=ChartDesign)
    phase1_layers: int = 30
    # "model": Phase I from the model's calibration scores, charts from the first layer on;
    # "job": from each job's first ``phase1_layers`` layers (for a model without calibration,
    # or a part far from the training mix). Measured (bench.false_stops, demo model, 16 normal
    # and 14 defective 60-layer prints, k = 0.5): "job" stopped 5 normal prints vs 9 and caught
    # 14 of 14 defects vs 12, but leaves a job's first layers without score charts; with the
    # default k = 1.5 "model" stops 1 (README: false stops and the CUSUM's reference value).
    phase1: Literal["model", "job"] = "model"
    batch_size: int = 64
    max_wait_ms: int = 200
    group: str = MONITOR_GROUP
    max_poll_interval_ms: int = 300_000
    max_message_bytes: int = 1 << 20
    on_alarm: Callable[[dict[str, Any]], None] | None = None  # e.g. a Grafana annotation
    metrics_port: int = 0  # health and Prometheus endpoint (0 = off)
    metrics_host: str = "127.0.0.1"


class MonitorMetrics(ServiceMetrics):
    """The shared lag, error and health metrics plus what the monitor does per job."""

    def __init__(self) -> None:
        super().__init__("monitor")
        r = self.registry
        self.layers = Counter("layerwatch_layers_charted", "Layers put on the charts", registry=r)
        self.last_layer = Gauge(
            "layerwatch_last_layer", "Last charted layer per job", ["printer", "job"], registry=r
        )
        self.alarms = Counter(
            "layerwatch_alarms_opened", "Alarms opened", ["level", "chart"], registry=r
        )
        self.actions = Counter(
            "layerwatch_printer_actions", "Printer action attempts", ["ok"], registry=r
        )
        self.dead = Counter("layerwatch_monitor_dead_letters", "Bad score messages", registry=r)

    def charted(self, printer: str, job: str, layer: int) -> None:
        self.layers.inc()
        self.last_layer.labels(printer, job).set(layer)
        self.health.put("last_layer", f"{printer}/{job}", layer)

    def forget(self, printer: str, job: str) -> None:
        """An evicted job's series go too: the label set must not grow with every job ever."""
        with contextlib.suppress(KeyError):
            self.last_layer.remove(printer, job)
        self.health.drop("last_layer", f"{printer}/{job}")


@dataclass
class _Batch:
    """One micro-batch between its stages; a retry resumes at the stage that failed."""

    points: list[dict[str, Any]]
    events: list[AlarmEvent]
    dead: list[tuple[Message, MessageError]]
    charted: list[tuple[str, str, int]]
    ids: list[tuple[int, bool]] | None = None  # set once the transaction committed
    acted: set[int] = field(default_factory=set)  # events whose action is run and stored
    attempts: dict[int, list[Attempt]] = field(default_factory=dict)
    outbox: Outbox | None = None


class MonitorService(KafkaService):
    def __init__(self, cfg: MonitorConfig) -> None:
        self.cfg = cfg
        self.engine = db.make_engine(cfg.database_url)
        self.jobs: dict[tuple[str, str], tuple[JobMonitor, float]] = {}
        self._calibrations: dict[str, Calibration] = {}
        self.metrics = MonitorMetrics()
        self._producer = self._new_producer()
        self._consumer: Consumer | None = None
        self.stop_event = threading.Event()
        self.assigned = threading.Event()  # set once the group gave this member partitions
        self._last_lag = 0.0

    # ------------------------------------------------------------------ chart state

    def _calibration(self, model_version: str) -> Calibration:
        if model_version not in self._calibrations:
            t = ModelRecord.__table__
            with self.engine.connect() as conn:
                config = conn.execute(
                    select(t.c.config).where(t.c.version == model_version)
                ).scalar()
                prints = repository.print_calibration(conn, model_version)
            cal = Calibration()
            if config:
                try:
                    cal = model_calibration(config)
                except ValueError as exc:
                    log.warning("model calibration unusable", extra={"error": str(exc)})
            cal = with_print_levels(cal, prints, model_version)
            self._calibrations[model_version] = cal
        return self._calibrations[model_version]

    def job_monitor(self, sm: ScoreMessage) -> JobMonitor:
        key = (sm.printer, sm.job)
        if key in self.jobs:
            jm = self.jobs[key][0]
        else:
            jm = JobMonitor(
                sm.printer, sm.job, design=self.cfg.design,
                policy=self.cfg.policies.for_printer(sm.printer),
                calibration=(
                    self._calibration(sm.model_version) if self.cfg.phase1 == "model" else None
                ),
                phase1_layers=self.cfg.phase1_layers,
            )  # fmt: skip
            with self.engine.connect() as conn:
                history = repository.job_history(
                    conn, sm.printer, sm.job, sm.model_version, sm.layer
                )
            jm.replay(history)
            if history:
                log.info("chart state rebuilt", extra={"job": sm.job, "layers": len(history)})
        self.jobs[key] = (jm, time.monotonic())
        return jm

    def _forget_jobs(self) -> None:
        """Partitions moved to another monitor: drop all chart state. A job seen again is
        rebuilt from its stored scores, which include what the other member charted meanwhile
        (keeping the old state would skip those layers as already seen)."""
        if self.jobs:
            log.info("partitions revoked: chart state dropped", extra={"jobs": len(self.jobs)})
        self.jobs.clear()

    def _evict_idle(self) -> None:
        cutoff = time.monotonic() - IDLE_EVICT_S
        for key in [k for k, (_, seen) in self.jobs.items() if seen < cutoff]:
            del self.jobs[key]
            self.metrics.forget(*key)

    # ------------------------------------------------------------------ batch logic

    def process(self, msgs: Sequence[Message]) -> list[AlarmMessage]:
        """Chart, store, act and publish one micro-batch (no retries); the alarms it opened."""
        return self.complete(self.chart(msgs))

    def chart(self, msgs: Sequence[Message]) -> _Batch:
        """Stage 1: decode and chart (reads a job's stored scores on first sight of it)."""
        batch = _Batch([], [], [], [])
        for m in msgs:
            try:
                sm = ScoreMessage.decode(m.value(), m.headers())
            except MessageError as exc:
                batch.dead.append((m, exc))
                continue
            jm = self.job_monitor(sm)
            pts, evs = jm.update(sm.layer, sm.score, sm.f1, sm.f2, sm.largest_area)
            batch.points.extend(_point_row(sm, p) for p in pts)
            batch.events.extend(evs)
            batch.charted.append((sm.printer, sm.job, sm.layer))
        return batch

    def complete(self, batch: _Batch) -> list[AlarmMessage]:
        """Stages 2–4: one transaction, the stop actions, the messages; each done once."""
        now = datetime.now(UTC)
        if batch.ids is None:
            with self.engine.begin() as conn:
                repository.upsert_chart_points(conn, batch.points)
                ids = repository.open_alarms(conn, [
                    _alarm_row(e) | {"channels": repository.fired_channels(
                        conn, e.printer, e.job, e.layer)}
                    for e in batch.events
                ])  # fmt: skip
                repository.add_dead_letters(conn, [_dead_row(m, exc) for m, exc in batch.dead])
            batch.ids = ids
        for i, (e, (alarm_id, _new)) in enumerate(zip(batch.events, batch.ids, strict=True)):
            if e.action and i not in batch.acted:
                if i not in batch.attempts:  # an action that ran is only recorded on a retry
                    batch.attempts[i] = self._act(alarm_id, e)
                self._record(alarm_id, batch.attempts[i])
                batch.acted.add(i)
        alarms = [
            _alarm_message(a, e, now) for e, (a, _) in zip(batch.events, batch.ids, strict=True)
        ]
        if batch.outbox is None:
            batch.outbox = self._outbox(alarms, batch.dead)
        batch.outbox.send(self._producer)
        opened = [a for a, (_, new) in zip(alarms, batch.ids, strict=True) if new]
        self._report(batch, opened)  # reached once per batch: a failure above raises
        return opened

    def _report(self, batch: _Batch, opened: list[AlarmMessage]) -> None:
        for printer, job, layer in batch.charted:
            self.metrics.charted(printer, job, layer)
        if batch.dead:
            self.metrics.dead.inc(len(batch.dead))
        for a in opened:
            self.metrics.alarms.labels(a.level, a.chart).inc()
            log.warning("alarm", extra={"alarm": a.alarm_id, "job": a.job, "layer": a.layer,
                                        "chart": a.chart, "level": a.level})  # fmt: skip
            if self.cfg.on_alarm is not None:
                try:
                    self.cfg.on_alarm(a.__dict__)
                except Exception as exc:  # a dashboard outage must not stop the monitor
                    log.warning("alarm hook failed", extra={"error": str(exc)})

    def _act(self, alarm_id: int, e: AlarmEvent) -> list[Attempt]:
        """Run the stop action unless one already succeeded for this alarm (replays)."""
        with self.engine.connect() as conn:
            if repository.action_succeeded(conn, alarm_id):
                return []
        cfg = self.cfg.printers.get(e.printer)
        alarm = _alarm_message(alarm_id, e, datetime.now(UTC)).__dict__
        if cfg is None or cfg.kind == "none":
            attempts = [Attempt("none", e.action or "", 1, {}, False, None,
                                f"no printer target configured for {e.printer!r}")]  # fmt: skip
        else:
            try:
                target = target_for(cfg, e.printer)
                attempts = run_action(
                    target, e.action, alarm, retries=cfg.retries, backoff_s=cfg.backoff_s
                )  # type: ignore[arg-type]
            except ValueError as exc:
                attempts = [Attempt(cfg.kind, e.action or "", 1, {}, False, None, str(exc))]
        self.metrics.actions.labels(str(attempts[-1].ok).lower()).inc(len(attempts))
        if not attempts[-1].ok:
            log.error("printer action failed; the alarm stays open",
                      extra={"alarm": alarm_id, "result": attempts[-1].result})  # fmt: skip
        return attempts

    def _record(self, alarm_id: int, attempts: list[Attempt]) -> None:
        if not attempts:
            return
        with self.engine.begin() as conn:
            repository.record_actions(conn, [
                {"alarm_id": alarm_id, "target": a.target, "command": a.command,
                 "request": a.request, "ok": a.ok, "status_code": a.status_code,
                 "result": a.result}
                for a in attempts
            ])  # fmt: skip

    def _outbox(self, alarms: list[AlarmMessage], dead) -> Outbox:
        items = [Outgoing(self.cfg.topics.alarms, a.encode(), a.key, a.headers()) for a in alarms]
        for m, exc in dead:
            headers = [
                *(m.headers() or []),
                (DLQ_REASON_HEADER, str(exc).encode()),
                (DLQ_SOURCE_HEADER, _source(m).encode()),
            ]
            items.append(Outgoing(self.cfg.topics.dlq, m.value(), m.key(), headers))
        return Outbox(items)

    # ------------------------------------------------------------------ Kafka loop

    def run(self) -> None:
        cfg = self.cfg
        server = serve_metrics(self.metrics, cfg.metrics_port, cfg.metrics_host)
        self._consumer = self._new_consumer()
        self._consumer.subscribe(
            [cfg.topics.scores],
            on_assign=self._on_assign,
            on_revoke=lambda *_: self._forget_jobs(),
        )
        log.info("monitor running", extra={"group": cfg.group})
        try:
            while not self.stop_event.is_set():
                msgs = self._consumer.consume(cfg.batch_size, cfg.max_wait_ms / 1000.0)
                msgs, errors = split_errors(msgs)
                if errors and self.metrics.waiting("kafka", errors[0]):
                    log.error(
                        "Kafka unreachable: waiting for the broker", extra={"error": errors[0]}
                    )
                if msgs and self._process_with_retry(msgs):
                    self._commit(msgs)
                self._evict_idle()
                self._update_lag()
        finally:
            self.metrics.health.stopping()
            self._consumer.close()
            close_producer(self._producer)
            if server is not None:
                server.close()
            log.info("monitor stopped")

    def _update_lag(self) -> None:
        if time.monotonic() - self._last_lag < 2 or self._consumer is None:
            return
        self._last_lag = time.monotonic()
        self.metrics.set_lag(consumer_lag(self._consumer))
        check_broker(self._consumer, self.cfg.topics.scores, self.metrics)

    def _process_with_retry(self, msgs: Sequence[Message]) -> bool:
        """Hold the batch until it is durable; False if asked to stop first (it replays)."""
        backoff = Backoff()
        batch: _Batch | None = None
        while True:
            try:
                if batch is None:
                    batch = self.chart(msgs)
                self.complete(batch)
            except (OperationalError, KafkaException) as exc:
                if batch is None:
                    # The in-memory charts saw part of this batch: rebuild them from the database.
                    self.jobs.clear()
                if not self._hold(exc, batch.outbox if batch is not None else None, backoff):
                    return False
                continue
            if (outage := self.metrics.progress()) is not None:
                log.info("resumed", extra={"outage_s": round(outage, 1), "attempts": backoff.n})
            return True

    def _commit(self, msgs: Sequence[Message]) -> None:
        last: dict[tuple[str, int], int] = {}
        for m in msgs:
            k = (m.topic(), m.partition())
            last[k] = max(last.get(k, -1), m.offset())
        try:
            self._consumer.commit(  # type: ignore[union-attr]
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            log.warning("offset commit failed", extra={"error": str(exc)})

    def install_signal_handlers(self) -> None:
        def _stop(signum, _frame):
            self.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)


def _point_row(sm: ScoreMessage, p: ChartPoint) -> dict[str, Any]:
    return {
        "printer": sm.printer, "job": sm.job, "layer": sm.layer, "chart": p.chart,
        "statistic": float(p.statistic), "center": float(p.center),
        "lcl": None if p.lcl is None else float(p.lcl),
        "ucl": None if p.ucl is None else float(p.ucl),
        "signal": bool(p.signal), "rule": p.rule,
    }  # fmt: skip


def _alarm_row(e: AlarmEvent) -> dict[str, Any]:
    return {
        "printer": e.printer, "job": e.job, "chart": e.chart, "episode": e.episode,
        "layer": e.layer, "level": e.level, "rule": e.rule, "state": "open",
    }  # fmt: skip


def _alarm_message(alarm_id: int, e: AlarmEvent, at: datetime) -> AlarmMessage:
    return AlarmMessage(
        alarm_id=alarm_id, printer=e.printer, job=e.job, layer=e.layer, chart=e.chart,
        level=e.level, rule=e.rule, episode=e.episode, statistic=float(e.statistic),
        limit=float(e.limit), action=e.action, opened_at=at.isoformat(),
    )  # fmt: skip


def _source(m: Message) -> str:
    return f"{m.topic()}:{m.partition()}:{m.offset()}"


def _dead_row(m: Message, exc: MessageError) -> dict[str, Any]:
    return {
        "source": _source(m), "stage": "monitor", "field": exc.field, "reason": exc.reason,
        "key": m.key(), "payload": m.value(),
        "headers": {k: (v or b"").decode("utf-8", "replace") for k, v in m.headers() or []},
    }  # fmt: skip
