"""Kafka topics and client settings, defined once for every producer and consumer.

The settings follow KAFKA.md: they hold for real Kafka and for the embedded Tansu broker
(short session timeout so that group joins take seconds, manual commits after durable writes).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from layerwatch.core.retry import Backoff, describe_outage, disk_full, outage_kind
from layerwatch.core.topics import Topics

if TYPE_CHECKING:
    from layerwatch.core.health import ServiceMetrics
    from layerwatch.core.settings import Settings

log = logging.getLogger(__name__)


SCORER_GROUP = "scorer"
MONITOR_GROUP = "monitor"


def producer_config(bootstrap: str, max_message_bytes: int, **extra: object) -> dict:
    """Idempotent, compressed, acks=all: a retried send never duplicates a layer."""
    cfg: dict = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": max_message_bytes,
        "queue.buffering.max.kbytes": 1_048_576,
    }
    cfg.update(extra)
    return cfg


def close_producer(producer: Producer, timeout: float = 10.0) -> int:
    """Flush, drop what is still unconfirmed after ``timeout`` s, and shut the client down.

    A service's producer must not outlive its run: one that did kept reconnecting, and logging
    each refused connection, after the demo stopped the embedded broker. Returns how many
    messages were dropped (a service flushes every batch before committing its offsets, so
    anything dropped here is replayed from the input topic on the next start).
    """
    remaining = producer.flush(timeout)
    if remaining:
        producer.purge()
        producer.flush(0)
        log.warning("producer closed with unconfirmed messages", extra={"dropped": remaining})
    producer.close()
    return remaining


def consumer_config(bootstrap: str, group: str, **extra: object) -> dict:
    """Manual commits only after outputs are durable; short session for quick rebalances."""
    cfg: dict = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "cooperative-sticky",
        "fetch.message.max.bytes": 16 * 1024 * 1024,
    }
    cfg.update(extra)
    return cfg


def ensure_topics(
    bootstrap: str,
    topics: Topics,
    default_partitions: int,
    replication: int = 1,
    timeout: float = 15.0,
    max_message_bytes: int | None = None,
) -> list[str]:
    """Create the LayerWatch topics that are missing; returns the names created.

    Idempotent: existing topics are left as they are (Tansu refuses to add partitions, so
    topics are created with their final count). ``max_message_bytes`` sets the topics'
    ``max.message.bytes``: layer images exceed a real broker's 1 MiB default.
    """
    config = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else {}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = [
        NewTopic(name, num_partitions=n, replication_factor=replication, config=config)
        for name, n in topics.partitions(default_partitions).items()
        if name not in existing
    ]
    created: list[str] = []
    if not new:
        return created
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    log.info("topics created", extra={"topics": created})
    return created


def ensure_configured_topics(settings: Settings, bootstrap: str) -> list[str]:
    """``ensure_topics`` with the partitions, replication and size limit from the settings."""
    return ensure_topics(
        bootstrap,
        settings.topics,
        settings.topic_partitions,
        settings.topic_replication,
        max_message_bytes=settings.max_message_bytes,
    )


def consumer_lag(consumer: Consumer) -> dict[int, int]:
    """Messages behind per assigned partition: the cached high watermark minus the position.

    The watermark comes with each fetch response (no request of its own). On Tansu it is
    low by up to the size of the last produced batch (KAFKA.md), so the lag it gives is a
    lower bound there and exact on Kafka.
    """
    lag: dict[int, int] = {}
    try:
        assignment = consumer.assignment()
        for tp in consumer.position(assignment) if assignment else []:
            _low, high = consumer.get_watermark_offsets(tp, timeout=1, cached=True)
            if high >= 0:
                lag[tp.partition] = max(high - tp.offset, 0) if tp.offset >= 0 else high
    except KafkaException:
        pass
    return lag


@dataclass
class Outgoing:
    """One message of a batch's output, with what its delivery report said."""

    topic: str
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    state: str = "new"  # new | sent | delivered | failed
    error: str | None = None
    fatal: bool = False  # the producer itself is dead (it needs replacing)


class Outbox:
    """A batch's messages until the broker confirmed every one of them.

    ``send`` produces what is not yet sent (or failed) and waits for the reports; when some
    stay unconfirmed (the broker is down) it raises, and a retry sends only the failed ones
    and waits again for those still queued in the producer. Producing the whole batch again
    instead put every message of an outage twice on the topic once the broker came back.
    """

    def __init__(self, items: list[Outgoing]) -> None:
        self.items = items

    @property
    def done(self) -> bool:
        return all(it.state == "delivered" for it in self.items)

    def requeue(self) -> None:
        """Send again, on a new producer, everything not confirmed (the old one is dead)."""
        for it in self.items:
            if it.state != "delivered":
                it.state = "new"

    def send(self, producer: Producer, timeout: float = 30.0) -> None:
        for it in self.items:
            if it.state in ("new", "failed"):
                self._produce(producer, it)
        producer.flush(timeout)
        if not self.done:
            failed = [it.error for it in self.items if it.state == "failed"]
            queued = sum(it.state == "sent" for it in self.items)
            text = f"{queued} message(s) unconfirmed after {timeout:.0f}s, {len(failed)} failed"
            text += f": {failed[0]}" if failed else ""
            fatal = any(it.fatal for it in self.items)
            raise KafkaException(KafkaError(KafkaError._FATAL if fatal else KafkaError._TIMED_OUT,
                                            text, fatal=fatal))  # fmt: skip

    @staticmethod
    def _produce(producer: Producer, it: Outgoing) -> None:
        produce_tracked(producer, it)


def produce_tracked(
    producer: Producer,
    it: Outgoing,
    then: Callable[[Outgoing, KafkaError | None], None] | None = None,
) -> None:
    """Produce ``it``; its delivery report sets its state (and calls ``then``, if given)."""

    def report(error: KafkaError | None, _msg: Message) -> None:
        if error is None:
            it.state, it.error = "delivered", None
        else:
            it.state, it.error = "failed", f"{it.topic}: {error.str()}"
            it.fatal = error.fatal()
        if then is not None:
            then(it, error)

    while True:
        try:
            producer.produce(it.topic, it.value, it.key, headers=it.headers, on_delivery=report)
            it.state = "sent"
            return
        except BufferError:  # the local queue is full: serve reports, then retry
            producer.poll(0.5)


# Delivery failures that a new producer fixes: the broker restarted (and forgot the idempotent
# producer's sequence numbers), was away longer than message.timeout.ms, or the transport broke.
_RESEND = {
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError._FATAL,
    KafkaError.UNKNOWN_PRODUCER_ID, KafkaError.NOT_LEADER_FOR_PARTITION,
}  # fmt: skip


class ResendingProducer:
    """A producer for a long stream (``layerwatch ingest``) that outlives broker restarts.

    Every message is kept until the broker confirmed it. When a report says the producer is
    dead (fatal: a restarted broker forgot its sequence numbers) or a message could not be
    delivered for a reason a new producer fixes (an outage longer than message.timeout.ms),
    the producer is replaced and every unconfirmed message goes out again on the new one, in
    the order first sent: a layer is never dropped, and never overtaken by a later layer of its
    printer. A message the broker stored but whose confirmation was lost can so reach the topic
    twice; layers are keyed (printer, job, layer) and the scorer upserts, so the database holds
    it once. A message refused for itself (too large, unknown topic) is ``failed``.
    """

    def __init__(self, make: Callable[[], Producer]) -> None:
        self._make = make
        self._producer = make()
        self._unconfirmed: dict[int, Outgoing] = {}  # insertion order = first-sent order
        self._seq = 0
        self._renew: str | None = None  # why the producer must be replaced
        self.confirmed = 0
        self.renewals = 0
        self.failed: list[str] = []

    def __len__(self) -> int:
        """Messages not yet confirmed."""
        return len(self._unconfirmed)

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:  # fmt: skip
        self._renew_if_dead()
        self._seq += 1
        it = Outgoing(topic, value, key, list(headers or []))
        self._unconfirmed[self._seq] = it
        self._send(self._seq, it)

    def _send(self, seq: int, it: Outgoing) -> None:
        gen = self.renewals
        try:
            produce_tracked(self._producer, it, lambda i, e: self._reported(seq, i, e, gen))
        except KafkaException as exc:  # the producer died (fatal) before the send
            it.state = "new"
            self._renew = str(exc)

    def _reported(self, seq: int, it: Outgoing, error: KafkaError | None, gen: int) -> None:
        if error is None:
            if self._unconfirmed.pop(seq, None) is not None:
                self.confirmed += 1
        elif gen != self.renewals:  # a report of a replaced producer: the message went again
            return
        elif error.fatal() or error.code() in _RESEND:
            it.state = "new"
            self._renew = self._renew or error.str()
        elif error.code() != KafkaError._PURGE_QUEUE:  # purged by a renewal: resent
            self._unconfirmed.pop(seq, None)
            self.failed.append(it.error or error.str())
            log.error("delivery failed", extra={"topic": it.topic, "error": error.str()})

    def _renew_if_dead(self) -> None:
        if self._renew is None:
            return
        reason, self._renew = self._renew, None
        log.warning(
            "Kafka producer unusable: replacing it, resending the unconfirmed messages",
            extra={"error": reason, "unconfirmed": len(self._unconfirmed)},
        )
        old, self._producer = self._producer, self._make()
        self.renewals += 1  # from here on, the old client's failure reports are ignored
        with contextlib.suppress(SystemError, KafkaException, RuntimeError):
            old.purge()
            old.flush(0)  # the purged messages' reports, before they go out again
            old.close()
        for seq, it in list(self._unconfirmed.items()):
            it.state = "new"
            self._send(seq, it)

    def _serve(self, call: Callable[[float], object], timeout: float) -> None:
        """Run the client's poll or flush. Once, mid-way through a broker restart, the client's
        flush failed with 'returned NULL without setting an exception' (a SystemError from
        the binding, cause not found): the client is then treated as dead and replaced, its
        unconfirmed messages sent again, rather than the stream stopping."""
        try:
            call(timeout)
        except (SystemError, KafkaException) as exc:
            self._renew = self._renew or f"{type(exc).__name__}: {exc}"

    def poll(self, timeout: float = 0.0) -> None:
        self._serve(self._producer.poll, timeout)
        self._renew_if_dead()

    def flush(self, timeout: float = 300.0, log_every: float = 10.0) -> int:
        """Wait up to ``timeout`` s until every message is confirmed (replacing a dead producer
        meanwhile); returns how many are still unconfirmed. Says every ``log_every`` s that it
        waits, and once that the broker confirmed the rest after a wait."""
        deadline = time.monotonic() + timeout
        next_note, waited = time.monotonic() + log_every, False
        while self._unconfirmed and (left := deadline - time.monotonic()) > 0:
            self._serve(self._producer.flush, min(left, 1.0))
            self._renew_if_dead()
            if self._unconfirmed and time.monotonic() >= next_note:
                next_note, waited = time.monotonic() + log_every, True
                log.warning("waiting for the broker to confirm",
                            extra={"unconfirmed": len(self._unconfirmed)})  # fmt: skip
        if waited and not self._unconfirmed:
            log.info("the broker confirmed every message")
        return len(self._unconfirmed)

    def close(self, timeout: float = 10.0) -> int:
        """Flush for up to ``timeout`` s, then shut the client down; returns what was dropped."""
        remaining = self.flush(timeout)
        return remaining + close_producer(self._producer, timeout=0)


def producer_dead(exc: BaseException) -> bool:
    """A fatal producer error: the client is unusable and must be replaced. The idempotent
    producer ends so when a restarted broker forgot its sequence numbers
    (OUT_OF_ORDER_SEQUENCE_NUMBER, found by bench.faults: every retry after it failed)."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(err, KafkaError) and (err.fatal() or err.code() == KafkaError._FATAL)


EVICTED = "held a batch past max.poll.interval.ms: the group took this member's partitions"


def split_errors(msgs: list[Message]) -> tuple[list[Message], list[str]]:
    """A consume call's records and its errors (broker down, transport): errors were dropped
    silently before, so a service waiting for a dead broker logged nothing.

    The error that says the member held a batch longer than max.poll.interval.ms (a database
    outage outlasted it) is no broker outage: it is logged as what it is and not returned.
    The group has taken the partitions away (the batch's commit failed); this consume call
    rejoins, and the batches from the last commit replay, stored once (the writes upsert)."""
    ok, errors = [], []
    for m in msgs:
        if m.error() is None:
            ok.append(m)
        elif m.error().code() == KafkaError._MAX_POLL_EXCEEDED:
            log.warning(f"{EVICTED}; rejoining, uncommitted batches replay",
                        extra={"error": m.error().str()})  # fmt: skip
        else:
            errors.append(m.error().str())
    return ok, errors


def check_broker(consumer: Consumer, topic: str, metrics: ServiceMetrics) -> None:
    """While a service waits for the broker, ask it for metadata: an idle service learns
    that the broker is back without a message to prove it."""
    if metrics.health.waiting_for != "kafka":
        return
    try:
        consumer.list_topics(topic, timeout=1.0)
    except KafkaException:
        return
    metrics.health.reachable("kafka")
    metrics.up.set(1)
    log.info("Kafka reachable again")


def error_reporter(metrics: ServiceMetrics) -> Callable[[KafkaError], None]:
    """An ``error_cb`` for a service's clients: librdkafka reports a broker that went away
    (all brokers down, transport errors) here, not as a consumed record, so without it a
    service waiting for a dead broker looked healthy."""

    def report(err: KafkaError) -> None:
        down = err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT)
        if (down or err.fatal()) and metrics.waiting("kafka", err.str()):
            log.error("Kafka unreachable: waiting for the broker", extra={"error": err.str()})

    return report


class KafkaService:
    """What the scorer and the monitor services share about their Kafka clients: health turns
    ok once the group has assigned partitions, a producer that a broker restart killed is
    replaced (its unconfirmed messages resent), and a batch held through an outage backs off
    and logs the same way. The service provides ``assigned`` and ``stop_event`` (Events),
    ``metrics`` (ServiceMetrics), ``cfg.bootstrap``, ``cfg.group``, ``cfg.max_message_bytes``,
    ``cfg.max_poll_interval_ms`` and ``_producer``."""

    assigned: threading.Event
    stop_event: threading.Event
    metrics: ServiceMetrics
    cfg: Any
    _producer: Producer

    def _on_assign(self, *_args: object) -> None:
        """Joined the group: only now does /health say ok. It said so at subscribe time, and
        a test that stopped a service as soon as it was "ok" (in the middle of its first join)
        left the embedded broker's group serving no later member of it."""
        self.assigned.set()
        self.metrics.health.running()

    def _new_consumer(self) -> Consumer:
        """The group member; ``cfg.max_poll_interval_ms`` bounds how long it may go without
        polling before the group evicts it (a batch held through a long outage)."""
        return Consumer(
            consumer_config(
                self.cfg.bootstrap, self.cfg.group, error_cb=error_reporter(self.metrics),
                **{"max.poll.interval.ms": self.cfg.max_poll_interval_ms},
            )
        )  # fmt: skip

    def _new_producer(self) -> Producer:
        return Producer(
            producer_config(
                self.cfg.bootstrap, self.cfg.max_message_bytes,
                error_cb=error_reporter(self.metrics),
            )
        )  # fmt: skip

    def _renew_producer(self, outbox: Outbox | None, error: str) -> None:
        """Replace a dead producer; the batch's unconfirmed messages go out on the new one."""
        log.warning("Kafka producer unusable: replacing it", extra={"error": error})
        old, self._producer = self._producer, self._new_producer()
        close_producer(old, timeout=1.0)
        if outbox is not None:
            outbox.requeue()

    def _hold(self, exc: Exception, outbox: Outbox | None, backoff: Backoff) -> bool:
        """A batch met an outage (database or broker): replace a dead producer, log once per
        outage (then a warning per retry), wait the back-off. False if asked to stop meanwhile
        (the batch is then replayed from its uncommitted offsets)."""
        what, error = outage_kind(exc), describe_outage(exc)
        if producer_dead(exc):
            self._renew_producer(outbox, error)
        delay = backoff.next()
        first = self.metrics.waiting(what, error)
        problem = "database disk full" if disk_full(exc) else f"{what} unreachable"
        (log.error if first else log.warning)(
            f"{problem}: batch held, retrying",
            extra={"error": error, "retry_in_s": round(delay, 2), "attempt": backoff.n},
        )
        return not self.stop_event.wait(delay)
