"""The scorer service against the real broker and database: exactly-once effects, dead letters,
a SIGKILL mid-stream, two scorers sharing a consumer group, and layer-aware scoring (issue 18):
references (previous layer, outline) reaching the method, across a restart."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer
from sqlalchemy import text

from ingest.messages import LayerMessage
from ingest.producer import LayerProducer
from layerwatch.core.embedded import Endpoints, free_port
from layerwatch.core.kafka import consumer_config, ensure_topics
from layerwatch.core.topics import Topics
from scorer.device import pick_device
from scorer.messages import ScoreMessage
from scorer.methods import LayerReference, ScoreResult, load_model
from scorer.service import ScorerService, ServiceConfig
from storage import db

BIN = Path(sys.executable).parent / "layerwatch"


@pytest.fixture
def layers(make_texture):
    """layers(printers, per_printer, job) → layer messages of synthetic textures."""

    def make(printers: int, per_printer: int, job: str, seed: int = 0) -> list[LayerMessage]:
        return _layers(make_texture, printers, per_printer, job, seed)

    return make


def _layers(texture, printers: int, per_printer: int, job: str, seed: int) -> list[LayerMessage]:
    rng = np.random.default_rng(seed)
    return [
        LayerMessage.from_image(f"p{p}", job, i, texture(rng), z_mm=0.2 * (i + 1))
        for i in range(per_printer)
        for p in range(printers)
    ]


def _produce(ep: Endpoints, topics: Topics, msgs: list) -> None:
    with LayerProducer(ep.kafka_bootstrap, 1 << 22, topics.layers) as p:
        for m in msgs:
            p.send(m)


def _count(ep: Endpoints, sql: str, **params: object) -> int:
    with db.make_engine(ep.database_url).connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def _wait_rows(ep: Endpoints, job: str, n: int, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = _count(ep, "SELECT count(*) FROM scores WHERE job = :j", j=job)
        if got >= n:
            return got
        time.sleep(0.3)
    return got


def _wait_count(ep: Endpoints, sql: str, n: int, timeout: float = 30.0) -> None:
    """Until the count query reaches ``n`` (or the timeout; the caller asserts what it got)."""
    deadline = time.monotonic() + timeout
    while _count(ep, sql) < n and time.monotonic() < deadline:
        time.sleep(0.2)


def _score_messages(ep: Endpoints, topics: Topics, job: str, expect: int) -> list[ScoreMessage]:
    """Read the scores topic from the start with a fresh group; wait for quiet after ``expect``."""
    c = Consumer(consumer_config(ep.kafka_bootstrap, f"check-{job}-{time.time()}"))
    c.subscribe([topics.scores])
    out: list[ScoreMessage] = []
    deadline = time.monotonic() + 60
    quiet_until = None
    while time.monotonic() < deadline:
        m = c.poll(0.3)
        if m is not None and not m.error():
            sm = ScoreMessage.decode(m.value(), m.headers())
            if sm.job == job:
                out.append(sm)
        if len(out) >= expect:
            quiet_until = quiet_until or time.monotonic() + 3
            if time.monotonic() > quiet_until:
                break
    c.close()
    return out


def _config(ep: Endpoints, topics: Topics, **kw) -> ServiceConfig:
    base = dict(
        bootstrap=ep.kafka_bootstrap, database_url=ep.database_url, topics=topics,
        max_image_pixels=1_000_000, max_message_bytes=1 << 22, batch_size=4, max_wait_ms=100,
        # a group of the test's own: on the shared session broker a member another test left in
        # "scorer" held up the join (0 layers scored in 60 s, now and then)
        group=f"{topics.prefix}.scorer",
    )  # fmt: skip
    base.update(kw)
    return ServiceConfig(**base)


def _run_in_thread(service: ScorerService) -> threading.Thread:
    th = threading.Thread(target=service.run, daemon=True)
    th.start()
    return th


def test_n_layers_give_n_rows_and_n_messages(
    layers, endpoints: Endpoints, topic_prefix: str, tiny_model_dir: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 3)
    n, job = 12, "job-n"
    _produce(endpoints, topics, layers(3, 4, job))
    service = ScorerService(
        load_model(tiny_model_dir, pick_device("cpu")), _config(endpoints, topics)
    )
    th = _run_in_thread(service)
    try:
        assert _wait_rows(endpoints, job, n) == n
    finally:
        service.stop_event.set()
        th.join(30)
    with pytest.raises(RuntimeError, match="closed"):  # stopped: its producer is shut down
        service._producer.produce(topics.scores, b"")
    msgs = _score_messages(endpoints, topics, job, n)
    assert len(msgs) == n
    assert sorted((m.printer, m.layer) for m in msgs) == sorted(
        (f"p{p}", i) for p in range(3) for i in range(4)
    )
    assert _count(endpoints, "SELECT count(*) FROM anomaly_maps WHERE job = :j", j=job) == n
    assert _count(endpoints, "SELECT count(*) FROM layers WHERE job = :j", j=job) == n
    assert _count(endpoints, "SELECT count(*) FROM models WHERE config ? 'calibration'") == 1
    assert _count(endpoints, "SELECT count(*) FROM scores WHERE e2e_latency_ms > 0") >= n


def test_bad_records_go_to_dead_letters_and_the_stream_goes_on(
    layers, endpoints: Endpoints, topic_prefix: str, tiny_model_dir: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 1)
    job = "job-dlq"
    good = layers(1, 4, job)
    corrupt = LayerMessage(
        **{**good[0].__dict__, "layer": 10, "payload": b"\x89PNG\r\n\x1a\n" + b"x" * 50}
    )
    truncated = LayerMessage(**{**good[0].__dict__, "layer": 11, "payload": good[0].payload[:60]})
    stream = [good[0], corrupt, good[1], truncated, good[2]]
    _produce(endpoints, topics, stream)
    with LayerProducer(endpoints.kafka_bootstrap, 1 << 22, topics.layers) as p:
        bad_headers = [(k, b"layer/7" if k == "lw-schema" else v) for k, v in good[3].headers()]
        p._producer.produce(topics.layers, good[3].payload, good[3].key, headers=bad_headers)
        p.send(good[3])
    service = ScorerService(
        load_model(tiny_model_dir, pick_device("cpu")), _config(endpoints, topics)
    )
    th = _run_in_thread(service)
    try:
        assert _wait_rows(endpoints, job, 4) == 4
        _wait_count(endpoints, "SELECT count(*) FROM dead_letters", 3)
    finally:
        service.stop_event.set()
        th.join(30)
    with db.make_engine(endpoints.database_url).connect() as conn:
        rows = conn.execute(
            text("SELECT field, reason, payload FROM dead_letters ORDER BY id")
        ).all()
    assert len(rows) == 3
    assert [r.field for r in rows] == ["value", "value", "lw-schema"]
    assert "corrupt" in rows[0].reason or "truncated" in rows[0].reason
    assert "unsupported layer version 7" in rows[2].reason
    assert rows[1].payload == good[0].payload[:60]  # the bad record itself is kept
    layers = _count(endpoints, "SELECT count(DISTINCT layer) FROM scores WHERE job = :j", j=job)
    assert layers == 4


def _env(ep: Endpoints, topics: Topics, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERWATCH_")}
    env.update(
        LAYERWATCH_KAFKA_BOOTSTRAP=ep.kafka_bootstrap, LAYERWATCH_DATABASE_URL=ep.database_url,
        LAYERWATCH_TOPIC_PREFIX=topics.prefix, LAYERWATCH_TOPIC_PARTITIONS="4", **extra,
    )  # fmt: skip
    return env


def _scorer(ep: Endpoints, topics: Topics, model: Path, log: Path, port: int = 0):
    return subprocess.Popen(
        [str(BIN), "scorer", "run", "--model", str(model), "--batch", "2",
         "--metrics-port", str(port)],
        env=_env(ep, topics), stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.mark.slow
def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    layers, endpoints: Endpoints, topic_prefix: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 4)
    job, n = "job-kill", 40
    _produce(endpoints, topics, layers(4, 10, job))
    log = tmp_path / "scorer.log"
    proc = _scorer(endpoints, topics, tiny_model_dir, log)
    try:
        got = _wait_rows(endpoints, job, 6, timeout=90)
        assert 6 <= got < n, f"scorer was too fast or too slow to kill mid-stream ({got})"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = _count(endpoints, "SELECT count(*) FROM scores WHERE job = :j", j=job)
        proc = _scorer(endpoints, topics, tiny_model_dir, log)
        assert _wait_rows(endpoints, job, n, timeout=120) == n, log.read_text()[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    time.sleep(1)
    assert _count(endpoints, "SELECT count(*) FROM scores WHERE job = :j", j=job) == n
    layers = _count(
        endpoints, "SELECT count(DISTINCT (printer, layer)) FROM scores WHERE job = :j", j=job
    )
    assert layers == n
    assert before < n


def _metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


@pytest.mark.slow
def test_two_scorers_share_the_partitions(
    layers, endpoints: Endpoints, topic_prefix: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 4)
    ports = [free_port(), free_port()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [
        _scorer(endpoints, topics, tiny_model_dir, lg, pt)
        for lg, pt in zip(logs, ports, strict=True)
    ]
    try:
        # Both members must have joined before the layers arrive (steady state).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all("scorer running" in lg.read_text() for lg in logs if lg.exists()) and all(
                lg.exists() for lg in logs
            ):
                break
            time.sleep(0.3)
        time.sleep(8)  # the group settles (join delay ≈ session.timeout / 2)
        job, n = "job-two", 48
        _produce(endpoints, topics, layers(8, 6, job))
        assert _wait_rows(endpoints, job, n, timeout=120) == n
        counts = [_metric(p, "layerwatch_layers_scored") for p in ports]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
    assert all(c > 0 for c in counts), f"one scorer did no work: {counts}"
    assert sum(counts) == n, f"a layer was scored twice: {counts}"
    assert len(_score_messages(endpoints, topics, job, n)) == n


def test_repeated_and_late_layers(
    layers, endpoints: Endpoints, topic_prefix: str, quick_model
) -> None:
    """A layer sent twice in one micro-batch is scored once (it once failed the batch: an
    upsert may not touch a row twice); a layer older than one its job has is a dead letter."""
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 1)
    job = "job-order"
    good = layers(1, 4, job)
    late = LayerMessage(**{**good[0].__dict__, "layer": 1})  # after layer 3, never seen
    stream = [good[0], good[2], good[2], good[3], late]  # layer 1 comes last: late
    _produce(endpoints, topics, stream)
    service = ScorerService(quick_model, _config(endpoints, topics, batch_size=8))
    th = _run_in_thread(service)
    try:
        assert _wait_rows(endpoints, job, 3, timeout=60) == 3
        deadline = time.monotonic() + 30
        while _count(endpoints, "SELECT count(*) FROM dead_letters") < 1:
            assert time.monotonic() < deadline, "the late layer was not dead-lettered"
            time.sleep(0.2)
    finally:
        service.stop_event.set()
        th.join(30)
    assert service._writer_error is None
    rows = _count(endpoints, "SELECT count(*) FROM scores WHERE job = :j", j=job)
    assert rows == 3
    with db.make_engine(endpoints.database_url).connect() as conn:
        dead = conn.execute(text("SELECT field, reason FROM dead_letters")).one()
    assert dead.field == "layer" and "layer 1 of p0/job-order arrived after layer 3" in dead.reason


# ---------------------------------------------------------------- layer-aware scoring (issue 18)
# The method is a test double: the tiny RADAR model, wrapped to record the references it was
# given and to report a made-up second channel from them (the real geometry channel is the
# other half of issue 18).


class RecordingMethod:
    """Delegates to a real model; records (image, reference) per call; its "geometry" channel
    is the mean difference from the previous layer, and fires when there is one; a layer with
    an outline is placed at (number of layers seen, 0, 1) and never flagged."""

    uses_references = True

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seen: list[tuple[np.ndarray, LayerReference]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def score_batch(self, images, references) -> list[ScoreResult]:
        out = []
        for img, ref, res in zip(images, references, self.inner.score_batch(images), strict=True):
            self.seen.append((img, ref))
            diff = (
                None
                if ref.previous is None
                else float(np.abs(img - ref.previous.astype(float)).mean())
            )
            placed = None if ref.outline is None else (float(len(self.seen)), 0.0, 1.0)
            out.append(dataclasses.replace(
                res, channel_scores={"texture": res.score, "geometry": diff or 0.0},
                fired=("geometry",) if diff else (), outline_state=placed, anomalous=False,
            ))  # fmt: skip
        return out


def _run_until(service: ScorerService, until) -> None:
    th = threading.Thread(target=service.run, daemon=True)
    th.start()
    try:
        until()
    finally:
        service.stop_event.set()
        th.join(30)


def test_references_reach_the_method_and_survive_a_restart(
    make_texture, endpoints: Endpoints, topic_prefix: str, tiny_model_dir: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 1)
    job, rng = "job-refs", np.random.default_rng(3)
    images = [make_texture(rng) for _ in range(4)]
    mask = np.zeros(images[0].shape, np.uint8)
    mask[8:24, 8:24] = 1
    msgs = [LayerMessage.from_image("p0", job, n, im, outline=mask) for n, im in enumerate(images)]
    msgs[1] = dataclasses.replace(msgs[1], outline=b"not a png")
    _produce(endpoints, topics, msgs[:3])  # one micro-batch (batch_size 4)
    cfg = _config(endpoints, topics, history_layers=2, max_wait_ms=1500, placement_layers=2)
    model = load_model(tiny_model_dir, pick_device("cpu"))

    first = ScorerService(RecordingMethod(model), cfg)
    _run_until(first, lambda: _wait_rows(endpoints, job, 3))
    seen = first.model.seen
    assert len(seen) == 3
    assert seen[0][1].previous is None
    for n in (1, 2):  # the previous layer, though it came in the same batch
        assert np.array_equal(seen[n][1].previous, images[n - 1])
    assert np.array_equal(seen[0][1].outline, mask) and seen[0][1].outline_error is None
    assert seen[1][1].outline is None and "not a PNG" in seen[1][1].outline_error
    assert first.metrics.outline_errors._value.get() == 1

    _produce(endpoints, topics, msgs[3:])
    second = ScorerService(RecordingMethod(model), cfg)  # a restart: an empty memory
    _run_until(second, lambda: _wait_rows(endpoints, job, 4))
    assert len(second.model.seen) == 1
    assert np.array_equal(second.model.seen[0][1].previous, images[2])  # read back
    # the job's normal placement too: the median of layers 0 and 2 (1 had no usable outline)
    assert [r.placement for _, r in seen] == [None, None, None]  # one batch: none known yet
    assert second.model.seen[0][1].placement == (2.0, 0.0, 1.0)

    with db.make_engine(endpoints.database_url).connect() as conn:
        rows = conn.execute(
            text("SELECT layer, fired, channel_scores, outline_error, outline_state FROM scores "
                 "WHERE job = :j ORDER BY layer"), {"j": job},
        ).all()  # fmt: skip
    assert [r.layer for r in rows] == [0, 1, 2, 3]  # layer 1 scored despite its outline
    assert [r.fired for r in rows] == ["", "geometry", "geometry", "geometry"]
    assert set(rows[2].channel_scores) == {"texture", "geometry"}
    assert rows[1].outline_error.startswith("not a PNG")
    assert [r.outline_error for r in rows if r.layer != 1] == [None, None, None]
    assert [r.outline_state for r in rows] == [
        [1.0, 0.0, 1.0],
        None,
        [3.0, 0.0, 1.0],
        [1.0, 0.0, 1.0],
    ]
    stored = _count(endpoints, "SELECT count(*) FROM layer_images WHERE job = :j", j=job)
    assert stored == 2  # bounded: the last 2 layers of the job
    score_msgs = sorted(_score_messages(endpoints, topics, job, 4), key=lambda m: m.layer)
    assert [m.fired for m in score_msgs][-1] == ("geometry",)
    assert score_msgs[-1].channel_scores["geometry"] > 0


def test_a_method_without_references_stores_no_layer_images(
    make_texture, endpoints: Endpoints, topic_prefix: str, tiny_model_dir: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 1)
    job, rng = "job-plain", np.random.default_rng(4)
    mask = np.ones((32, 32), np.uint8)
    _produce(endpoints, topics, [
        LayerMessage.from_image("p0", job, n, make_texture(rng), outline=mask) for n in range(2)
    ])  # fmt: skip
    service = ScorerService(
        load_model(tiny_model_dir, pick_device("cpu")), _config(endpoints, topics)
    )
    assert not service.references
    _run_until(service, lambda: _wait_rows(endpoints, job, 2))
    assert (
        _count(endpoints, "SELECT count(*) FROM scores WHERE job = :j AND fired = ''", j=job) == 2
    )
    assert _count(endpoints, "SELECT count(*) FROM layer_images") == 0


class _InfiniteOnMarkedLayers:
    """The tiny model, except that a layer whose first pixel is 255 gets an infinite score:
    the fault a broken model (once the geometry channel on a blank previous layer) causes."""

    def __init__(self, model) -> None:
        self._model = model

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def score_batch(self, images):
        results = self._model.score_batch(images)
        for img, res in zip(images, results, strict=True):
            if img.flat[0] == 255:
                res.score = float("inf")
        return results


def test_a_non_finite_model_output_dead_letters_the_layer_and_the_stream_goes_on(
    layers, endpoints: Endpoints, topic_prefix: str, tiny_model_dir: Path
) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(endpoints.kafka_bootstrap, topics, 1)
    job = "job-inf"
    msgs = layers(1, 4, job)
    marked = msgs[1].image(1 << 20).copy()
    marked.flat[0] = 255
    msgs[1] = LayerMessage.from_image("p0", job, 1, marked, z_mm=0.4)
    _produce(endpoints, topics, msgs)
    model = _InfiniteOnMarkedLayers(load_model(tiny_model_dir, pick_device("cpu")))
    service = ScorerService(model, _config(endpoints, topics))  # type: ignore[arg-type]
    th = _run_in_thread(service)
    try:
        assert _wait_rows(endpoints, job, 3) == 3
        _wait_count(
            endpoints, "SELECT count(*) FROM dead_letters WHERE reason LIKE '%non-finite%'", 1
        )
        assert th.is_alive(), "the scorer stopped"
    finally:
        service.stop_event.set()
        th.join(30)
    with db.make_engine(endpoints.database_url).connect() as conn:
        (row,) = conn.execute(
            text("SELECT reason FROM dead_letters WHERE reason LIKE '%non-finite%'")
        ).all()
    assert "score" in row.reason and "inf" in row.reason
    with db.make_engine(endpoints.database_url).connect() as conn:
        scored = {
            r[0] for r in conn.execute(text("SELECT layer FROM scores WHERE job = :j"), {"j": job})
        }
    assert scored == {0, 2, 3}
