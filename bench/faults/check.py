"""After a run: was every layer scored once, charted once, every alarm raised and acted on
exactly once, every bad record dead-lettered?

The alarms the run should have raised come from an oracle: the monitor's own chart engine
(``JobMonitor``) run offline over the stored scores, in layer order, with the policy and
design the service used. A fault that made the service skip a layer, chart one twice or
forget an episode shows up as an alarm the oracle raised and the service did not, or the
other way round.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.faults.rig import Feed, Rig
from layerwatch.core.kafka import consumer_config
from monitor.alarms import load_policy
from monitor.design import ChartDesign
from monitor.engine import JobMonitor


@dataclass
class Outcome:
    fault: str
    sent: int = 0
    scored_once: int = 0
    duplicates: int = 0  # rows beyond one per layer (scores, chart points, alarms)
    lost: int = 0  # good layers without a score
    charts_lost: int = 0  # scored layers past Phase I without chart points
    alarms: int = 0
    alarms_lost: int = 0  # raised by the oracle, not by the service (or not on the topic)
    alarms_extra: int = 0  # raised by the service, not by the oracle
    actions: int = 0
    actions_duplicated: int = 0
    actions_lost: int = 0
    bad: int = 0
    dead_lettered: int = 0
    dead_without_reason: int = 0
    dead_misnamed: int = 0  # a fuzzed record whose dead letter names another field
    redelivered: int = 0  # score messages on the topic beyond one per layer (at-least-once)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (
            self.duplicates or self.lost or self.charts_lost or self.alarms_lost
            or self.alarms_extra or self.actions_duplicated or self.actions_lost
            or self.dead_lettered != self.bad or self.dead_without_reason or self.dead_misnamed
        )  # fmt: skip

    def as_dict(self) -> dict:
        return asdict(self) | {"clean": self.clean}


def _topic_counts(rig: Rig, topic: str, quiet_s: float = 1.5, limit_s: float = 30.0) -> Counter:
    """Messages per key+value on ``topic``, read from the start until every partition is read
    up to its high watermark and the topic stays quiet (partitions assigned, not subscribed:
    no group join to wait for). Quiet alone was not enough: right after a broker restart one
    partition's first fetch could take longer than the quiet time, and its alarms counted as
    never published."""
    c = Consumer(consumer_config(rig.bootstrap, f"check-{time.time_ns()}"))
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    high = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    counts: Counter = Counter()
    next_offset = dict.fromkeys(parts, 0)
    deadline, last = time.monotonic() + limit_s, time.monotonic()
    try:
        while time.monotonic() < deadline and (
            time.monotonic() - last < quiet_s or any(next_offset[p] < high[p] for p in parts)
        ):
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                counts[(m.key(), m.value())] += 1
                next_offset[m.partition()] = m.offset() + 1
                last = time.monotonic()
    finally:
        c.close()
    return counts


def check(rig: Rig, feed: Feed, fault: str, seconds: float = 0.0) -> Outcome:
    o = Outcome(fault, sent=len(feed.good), bad=len(feed.bad), seconds=round(seconds, 1))
    job = rig.job
    scores = rig.query(
        "SELECT printer, layer, score, f1, f2, largest_area FROM scores WHERE job = :j "
        "ORDER BY printer, layer",
        j=job,
    )
    per_layer = Counter((r.printer, r.layer) for r in scores)
    o.scored_once = sum(1 for n in per_layer.values() if n == 1)
    o.duplicates += sum(n - 1 for n in per_layer.values() if n > 1)
    o.lost = len({(p, layer) for p, _j, layer in feed.good} - set(per_layer))

    points = rig.query(
        "SELECT printer, layer, chart, count(*) AS n FROM chart_points WHERE job = :j "
        "GROUP BY printer, layer, chart",
        j=job,
    )
    o.duplicates += sum(r.n - 1 for r in points if r.n > 1)
    charted = {(r.printer, r.layer) for r in points}
    past_phase1 = {k for k in per_layer if k[1] >= rig.opts.phase1_layers}
    o.charts_lost = len(past_phase1 - charted)

    expected = _oracle_alarms(rig, scores)
    alarms = rig.query(
        "SELECT id, printer, chart, level, episode, layer FROM alarms WHERE job = :j", j=job
    )
    got = Counter((a.printer, a.chart, a.level, a.episode, a.layer) for a in alarms)
    o.alarms = len(alarms)
    o.duplicates += sum(n - 1 for n in got.values() if n > 1)
    o.alarms_lost = len(set(expected) - set(got))
    o.alarms_extra = len(set(got) - set(expected))
    on_topic = {
        int(msg["alarm_id"])
        for (_k, v) in _topic_counts(rig, rig.topics.alarms)
        if (msg := _json(v)).get("job") == job
    }
    missing_msgs = {a.id for a in alarms} - on_topic
    if missing_msgs:
        o.alarms_lost += len(missing_msgs)
        o.notes.append(f"{len(missing_msgs)} alarm(s) never published")

    acting = {
        a.id for a in alarms if expected.get((a.printer, a.chart, a.level, a.episode, a.layer))
    }
    ids = {a.id for a in alarms}
    commands = Counter(
        {k: n for k, n in (rig.printer.snapshot() if rig.printer else Counter()).items()
         if k[0] in ids}
    )  # fmt: skip
    o.actions = sum(commands.values())
    o.actions_duplicated = sum(n - 1 for n in commands.values() if n > 1)
    o.actions_lost = len(acting - {alarm_id for alarm_id, _cmd in commands})

    dead = rig.query(
        "SELECT field, reason, headers FROM dead_letters WHERE id > :i", i=feed.dead_before
    )
    o.dead_lettered = len(dead)
    o.dead_without_reason = sum(1 for d in dead if not (d.reason or "").strip())
    for d in dead:
        allowed = (d.headers or {}).get("fuzz-fields")
        if allowed is not None and d.field not in allowed.split(","):
            o.dead_misnamed += 1
            o.notes.append(f"{d.headers.get('fuzz-kind')}: named {d.field!r}: {d.reason}")
    per_score: Counter = Counter()
    for (_k, v), n in _topic_counts(rig, rig.topics.scores).items():
        msg = _json(v)  # the topic also holds the fuzzed bad ones
        if msg.get("job") == job:  # a re-scored layer differs in its timestamps: by layer
            per_score[(msg.get("printer"), msg.get("layer"))] += n
    o.redelivered = sum(n - 1 for n in per_score.values() if n > 1)
    return o


def _json(value: bytes | None) -> dict:
    try:
        obj = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _oracle_alarms(rig: Rig, scores: list) -> dict[tuple, bool]:
    """(printer, chart, level, episode, layer) → whether it carries a printer action."""
    policies = load_policy(rig.policy)
    out: dict[tuple, bool] = {}
    by_printer: dict[str, list] = {}
    for r in scores:
        by_printer.setdefault(r.printer, []).append(r)
    for printer, rows in by_printer.items():
        jm = JobMonitor(
            printer, rig.job, design=ChartDesign(), policy=policies.for_printer(printer),
            calibration=None, phase1_layers=rig.opts.phase1_layers,
        )  # fmt: skip
        for r in rows:
            _pts, events = jm.update(r.layer, r.score, r.f1, r.f2, r.largest_area)
            for e in events:
                out[(printer, e.chart, e.level, e.episode, e.layer)] = bool(e.action)
    return out
