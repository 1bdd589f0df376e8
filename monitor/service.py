"""The monitor service: score messages → control charts → alarms → printer actions.

Per micro-batch: chart every layer (one :class:`JobMonitor` per (printer, job)), upsert the
chart points and open alarms idempotently in one transaction, run the stop actions of alarms
that have no successful action yet (storing every attempt), publish the new alarms, then commit
the offsets. A replay after a crash rewrites the same chart points, finds the alarms already
open, and only retries an action that never succeeded.

Phase I comes from the model's calibration scores, features and defect-cluster areas (stored
by the scorer in the ``models`` table); what a model lacks (older models stored no areas) comes
from the job's first layers. Chart state lives in memory and is rebuilt from the job's stored
scores on first sight of a job after a restart — the charts are deterministic, so the rebuilt
state is identical.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from layerwatch.core.kafka import (
    MONITOR_GROUP,
    Topics,
    close_producer,
    consumer_config,
    producer_config,
)
from layerwatch.core.wire import DLQ_REASON_HEADER, DLQ_SOURCE_HEADER, MessageError
from monitor.actions import PrinterConfig, run_action, target_for
from monitor.actions.base import Attempt
from monitor.alarms import AlarmEvent, PolicySet
from monitor.calibration import Calibration, model_calibration
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
    max_message_bytes: int = 1 << 20
    on_alarm: Callable[[dict[str, Any]], None] | None = None  # e.g. a Grafana annotation


class MonitorService:
    def __init__(self, cfg: MonitorConfig) -> None:
        self.cfg = cfg
        self.engine = db.make_engine(cfg.database_url)
        self.jobs: dict[tuple[str, str], tuple[JobMonitor, float]] = {}
        self._calibrations: dict[str, Calibration] = {}
        self._producer = Producer(producer_config(cfg.bootstrap, cfg.max_message_bytes))
        self._consumer: Consumer | None = None
        self.stop_event = threading.Event()
        self.assigned = threading.Event()  # set once the group gave this member partitions
        self._errors: list[str] = []

    # ------------------------------------------------------------------ chart state

    def _calibration(self, model_version: str) -> Calibration:
        if model_version not in self._calibrations:
            t = ModelRecord.__table__
            with self.engine.connect() as conn:
                config = conn.execute(
                    select(t.c.config).where(t.c.version == model_version)
                ).scalar()
            cal = Calibration()
            if config:
                try:
                    cal = model_calibration(config)
                except ValueError as exc:
                    log.warning("model calibration unusable", extra={"error": str(exc)})
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

    # ------------------------------------------------------------------ batch logic

    def process(self, msgs: Sequence[Message]) -> list[AlarmMessage]:
        points: list[dict[str, Any]] = []
        events: list[AlarmEvent] = []
        dead: list[tuple[Message, MessageError]] = []
        for m in msgs:
            try:
                sm = ScoreMessage.decode(m.value(), m.headers())
            except MessageError as exc:
                dead.append((m, exc))
                continue
            jm = self.job_monitor(sm)
            pts, evs = jm.update(sm.layer, sm.score, sm.f1, sm.f2, sm.largest_area)
            points.extend(_point_row(sm, p) for p in pts)
            events.extend(evs)
        return self._persist(points, events, dead)

    def _persist(self, points, events: list[AlarmEvent], dead) -> list[AlarmMessage]:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            repository.upsert_chart_points(conn, points)
            ids = repository.open_alarms(conn, [_alarm_row(e) for e in events])
            repository.add_dead_letters(conn, [_dead_row(m, exc) for m, exc in dead])
        opened = []
        for e, (alarm_id, new) in zip(events, ids, strict=True):
            if e.action:
                self._act(alarm_id, e)
            if new:
                opened.append(_alarm_message(alarm_id, e, now))
        self._publish(opened, dead)
        for a in opened:
            log.warning("alarm", extra={"alarm": a.alarm_id, "job": a.job, "layer": a.layer,
                                        "chart": a.chart, "level": a.level})  # fmt: skip
            if self.cfg.on_alarm is not None:
                try:
                    self.cfg.on_alarm(a.__dict__)
                except Exception as exc:  # a dashboard outage must not stop the monitor
                    log.warning("alarm hook failed", extra={"error": str(exc)})
        return opened

    def _act(self, alarm_id: int, e: AlarmEvent) -> None:
        """Run the stop action unless one already succeeded for this alarm (replays)."""
        with self.engine.connect() as conn:
            if repository.action_succeeded(conn, alarm_id):
                return
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
        with self.engine.begin() as conn:
            repository.record_actions(conn, [
                {"alarm_id": alarm_id, "target": a.target, "command": a.command,
                 "request": a.request, "ok": a.ok, "status_code": a.status_code,
                 "result": a.result}
                for a in attempts
            ])  # fmt: skip
        if not attempts[-1].ok:
            log.error("printer action failed; the alarm stays open",
                      extra={"alarm": alarm_id, "result": attempts[-1].result})  # fmt: skip

    def _publish(self, opened: list[AlarmMessage], dead) -> None:
        for a in opened:
            self._producer.produce(
                self.cfg.topics.alarms, a.encode(), a.key, headers=a.headers(),
                on_delivery=self._report,
            )  # fmt: skip
        for m, exc in dead:
            headers = [
                *(m.headers() or []),
                (DLQ_REASON_HEADER, str(exc).encode()),
                (DLQ_SOURCE_HEADER, _source(m).encode()),
            ]
            self._producer.produce(
                self.cfg.topics.dlq, m.value(), m.key(), headers=headers, on_delivery=self._report
            )
        remaining = self._producer.flush(30)
        if remaining or self._errors:
            errors, self._errors = self._errors, []
            raise KafkaException(f"{remaining} unconfirmed, errors: {errors[:3]}")

    def _report(self, error, msg) -> None:
        if error is not None:
            self._errors.append(f"{msg.topic()}: {error.str()}")

    # ------------------------------------------------------------------ Kafka loop

    def run(self) -> None:
        cfg = self.cfg
        self._consumer = Consumer(consumer_config(cfg.bootstrap, cfg.group))
        self._consumer.subscribe(
            [cfg.topics.scores],
            on_assign=lambda *_: self.assigned.set(),
            on_revoke=lambda *_: self._forget_jobs(),
        )
        log.info("monitor running", extra={"group": cfg.group})
        try:
            while not self.stop_event.is_set():
                msgs = self._consumer.consume(cfg.batch_size, cfg.max_wait_ms / 1000.0)
                msgs = [m for m in msgs if m.error() is None]
                if msgs and self._process_with_retry(msgs):
                    self._commit(msgs)
                self._evict_idle()
        finally:
            self._consumer.close()
            close_producer(self._producer)
            log.info("monitor stopped")

    def _process_with_retry(self, msgs: Sequence[Message]) -> bool:
        delay = 0.5
        while True:
            try:
                self.process(msgs)
                return True
            except (OperationalError, KafkaException) as exc:
                error = str(exc).splitlines()[0]
                log.error("batch not durable, retrying", extra={"error": error, "retry_in": delay})
                # The in-memory charts saw part of this batch: rebuild them from the database.
                self.jobs.clear()
                if self.stop_event.wait(delay):
                    return False
                delay = min(delay * 2, 30.0)

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
