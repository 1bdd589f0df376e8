"""The test rig: own servers, the real services as processes, a print that streams, faults.

One :class:`Rig` owns a temporary home with its own PostgreSQL and a broker that keeps its
data across restarts (Tansu on a local S3 emulator), so a fault can stop either and start it
again on the same port while the services run, as a plant's servers restart under running
clients. The scorer(s) and the monitor run as `layerwatch scorer run` / `monitor run`
processes (a SIGKILL kills a real process); the monitor stops a :class:`CountingPrinter`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text

from bench.faults.model import defect, make_quick_model, stripes
from bench.faults.objectstore import EmbeddedObjectStore
from bench.faults.printer import CountingPrinter
from ingest.messages import LayerMessage
from ingest.producer import LayerProducer
from layerwatch.core.embedded import (
    DB_WRITER,
    PG_SUPERUSER,
    PG_SYSTEM_USER,
    EmbeddedKafka,
    EmbeddedPostgres,
    free_port,
    pid_alive,
)
from layerwatch.core.health import fetch_health
from layerwatch.core.kafka import ensure_topics
from layerwatch.core.topics import Topics
from storage import db

BIN = Path(sys.executable).parent / "layerwatch"
FULL_DISK_TABLES = ("scores", "chart_points")  # one the scorer writes, one the monitor


@dataclass
class RigOptions:
    printers: int = 2
    layers: int = 30  # per printer
    interval_s: float = 0.1  # between layers of one printer
    defect_at: int = 20  # from this layer on, every printer's layers are defective
    defect: str = "stringing"  # the simulator's defect kind in `feed_ingest`'s prints
    severity: float = 0.9
    category: str | None = None  # the simulator category of `feed_ingest` (None: its default)
    scorers: int = 1
    phase1_layers: int = 10  # the monitor's Phase I: each job's first layers
    phase1: str = "job"  # or "model": the model's calibration is the Phase I, charts from layer 0
    warmup_layers: int = 0  # the policy's [start] warmup_layers: each job's first layers uncharted
    partitions: int = 4
    batch: int = 4
    size: int = 32
    max_poll_interval_ms: int | None = None  # the services' poll limit (None: the default)


@dataclass
class Bad:
    """A record that must end in the dead letters: raw key, value and headers."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    kind: str
    topic: str = "layers"  # layers | scores
    lead: tuple[Bad, ...] = ()  # good records that must go first (an out-of-order layer's
    # later layer); they are scored like any layer, under a job of their own


@dataclass
class Feed:
    """What the print sent: the good layers' keys and the bad records."""

    good: list[tuple[str, str, int]] = field(default_factory=list)
    bad: list[Bad] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    dead_before: int = 0  # the highest dead-letter id before this print


class Rig:
    def __init__(self, opts: RigOptions | None = None, model_dir: Path | None = None) -> None:
        self.opts = opts or RigOptions()
        self.home = Path(tempfile.mkdtemp(prefix="lw-faults-"))
        self.logs = self.home / "logs"
        self.logs.mkdir()
        self.model_dir = model_dir
        self.topics = Topics(f"f{int(time.time() * 1000) % 10**9}")
        self.job = "job-1"
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.store = EmbeddedObjectStore(self.home)
        self.kafka: EmbeddedKafka | None = None
        self.pg = EmbeddedPostgres(self.home)
        self.printer: CountingPrinter | None = None
        self.bootstrap = ""
        self.database_url = ""
        self.admin_url = ""
        self.kafka_port = self.pg_port = 0
        self._dead_before = 0
        self._disk: str | None = None  # how fill_disk fills it, once chosen
        self._disk_dir = self.home / "small-disk"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Rig:
        try:
            self.store.start()
            self.kafka = EmbeddedKafka(self.home, self.store.storage, self.store.broker_env())
            st = self.kafka.start()
            self.bootstrap, self.kafka_port = st.address, st.port
            pst = self.pg.start()
            self.pg_port = pst.port
            self.admin_url = pst.address
            self.database_url = EmbeddedPostgres.url(pst.port, DB_WRITER)
            db.upgrade(self.admin_url)
            ensure_topics(self.bootstrap, self.topics, self.opts.partitions)
            if self.model_dir is None:
                self.model_dir = make_quick_model(self.home / "model", self.opts.size)
            self.printer = CountingPrinter()
            self.policy = self.home / "policy.toml"
            self.policy.write_text(self._policy())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for proc in self.procs.values():  # all at once: each finishes its batch meanwhile
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in list(self.procs):
            self.stop(name)
        if self.printer is not None:
            self.printer.close()
        db.make_engine(self.database_url).dispose() if self.database_url else None
        if self.kafka is not None:
            self.kafka.stop()
        self.pg.stop()
        if self._disk not in (None, "trigger"):
            subprocess.run(["umount", "-l", str(self._disk_dir)], capture_output=True)
        self.store.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def _policy(self) -> str:
        lines = [
            f"[start]\nwarmup_layers = {self.opts.warmup_layers}\n",
            '[stop]\naction = "pause"\n',
        ]
        for p in range(self.opts.printers):
            lines.append(
                f'[printers.p{p}.target]\nkind = "webhook"\nurl = "{self.printer.url}"\n'  # type: ignore[union-attr]
                "retries = 1\nbackoff_s = 0.1\n"
            )
        return "\n".join(lines)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERWATCH_")}
        env.update(
            LAYERWATCH_HOME=str(self.home), LAYERWATCH_KAFKA_BOOTSTRAP=self.bootstrap,
            LAYERWATCH_DATABASE_URL=self.database_url, LAYERWATCH_TOPIC_PREFIX=self.topics.prefix,
            LAYERWATCH_TOPIC_PARTITIONS=str(self.opts.partitions),
            LAYERWATCH_METRICS_HOST="127.0.0.1",
        )  # fmt: skip
        if self.opts.max_poll_interval_ms is not None:
            env["LAYERWATCH_MAX_POLL_INTERVAL_MS"] = str(self.opts.max_poll_interval_ms)
        return env

    # ------------------------------------------------------------------ services

    def argv(self, name: str) -> list[str]:
        port = self.ports.setdefault(name, free_port())
        if name.startswith("scorer"):
            return [str(BIN), "scorer", "run", "--model", str(self.model_dir),
                    "--batch", str(self.opts.batch), "--max-wait-ms", "100",
                    "--metrics-port", str(port)]  # fmt: skip
        return [str(BIN), "monitor", "run", "--phase1", self.opts.phase1, "--phase1-layers",
                str(self.opts.phase1_layers), "--policy", str(self.policy),
                "--metrics-port", str(port)]  # fmt: skip

    def start(self, name: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            self.argv(name), env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def start_all(self, timeout: float = 90.0) -> None:
        """Start the scorers and the monitor and wait until each reports health ok."""
        names = [f"scorer-{i}" for i in range(self.opts.scorers)] + ["monitor"]
        for name in names:
            self.start(name)
        for name in names:
            self.wait_healthy(name, timeout)

    def start_up(self, timeout: float = 120.0) -> subprocess.Popen:
        """The services under `layerwatch up`'s supervisor instead (for its own faults)."""
        scorer, monitor = (self.ports.setdefault(n, free_port()) for n in ("scorer-0", "monitor"))
        env = self.env() | {"LAYERWATCH_METRICS_PORT": str(scorer),
                            "LAYERWATCH_MONITOR_METRICS_PORT": str(monitor)}  # fmt: skip
        argv = [str(BIN), "up", "--model", str(self.model_dir), "--phase1", self.opts.phase1,
                "--phase1-layers", str(self.opts.phase1_layers),
                "--policy", str(self.policy)]  # fmt: skip
        log = (self.logs / "up.log").open("ab")
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.procs["up"] = proc
        for name in ("scorer-0", "monitor"):
            if not self._wait_port(name, timeout, healthy=True):
                raise RuntimeError(
                    f"{name} under `layerwatch up` not healthy in {timeout:g} s:\n"
                    f"{self.log(name)}\n--- up\n{self.log('up')}"
                )
        return proc

    def _wait_port(self, name: str, timeout: float, healthy: bool) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if bool(fetch_health(self.ports[name], timeout=1).get("ok")) == healthy:
                return True
            time.sleep(0.2)
        return False

    def wait_down(self, name: str, timeout: float = 60.0) -> bool:
        """Until the service's health endpoint stops answering ok (it stopped)."""
        return self._wait_port(name, timeout, healthy=False)

    def wait_healthy(self, name: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                code = self.procs[name].returncode
                raise RuntimeError(f"{name} exited {code}:\n{self.log(name)}")
            if fetch_health(self.ports[name], timeout=1).get("ok"):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not healthy after {timeout:.0f}s:\n{self.log(name)}")

    def health(self, name: str) -> dict:
        return fetch_health(self.ports[name], timeout=1) if name in self.ports else {}

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(30)

    def stop(self, name: str) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    # ------------------------------------------------------------------ servers

    def stop_database(self) -> None:
        self.pg.stop()

    def start_database(self) -> None:
        self.pg.start(port=self.pg_port)

    def slow_database(self, delay_s: float | None) -> None:
        """Delay every insert statement into scores and chart points by ``delay_s`` (a
        statement trigger running pg_sleep, as a database under load would); None ends it."""
        from sqlalchemy import create_engine

        engine = create_engine(self.admin_url)
        with engine.begin() as conn:
            for table in ("scores", "chart_points"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS lw_fault_slow ON {table}"))
            if delay_s is not None:
                conn.execute(text(
                    "CREATE OR REPLACE FUNCTION lw_fault_sleep() RETURNS trigger AS "
                    f"$$ BEGIN PERFORM pg_sleep({float(delay_s)}); RETURN NULL; END $$ "
                    "LANGUAGE plpgsql"
                ))  # fmt: skip
                for table in ("scores", "chart_points"):
                    conn.execute(text(
                        f"CREATE TRIGGER lw_fault_slow BEFORE INSERT ON {table} "
                        "FOR EACH STATEMENT EXECUTE FUNCTION lw_fault_sleep()"
                    ))  # fmt: skip
        engine.dispose()

    def fill_disk(self, full: bool) -> str:
        """Make the disk under the scores and chart points full (``full``) or give the space
        back; returns how. As root: the two tables move (once) to a tablespace on a tiny
        tmpfs, and a file fills what is left of it, so PostgreSQL itself fails to extend the
        tables (SQLSTATE 53100, 'No space left on device'); with a fillfactor of 10 a page
        takes a few rows, so a write needs a new page within seconds. Where mounting is not
        allowed: a trigger raises the same SQLSTATE on every insert into them."""
        if self._disk is None:
            self._disk = self._small_tablespace() or "trigger"
        if self._disk == "trigger":
            self._disk_full_trigger(full)
        elif full:
            filler = self._disk_dir / "filler"
            with contextlib.suppress(OSError), filler.open("wb") as f:
                while True:
                    f.write(b"\0" * (1 << 16))
                    f.flush()
        else:
            (self._disk_dir / "filler").unlink(missing_ok=True)
        return self._disk

    def _small_tablespace(self, size: str = "4m") -> str | None:
        if os.geteuid() != 0:
            return None
        self._disk_dir.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(self._disk_dir)], capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            self._disk_dir.rmdir()
            return None
        try:
            pw = pwd.getpwnam(PG_SYSTEM_USER)
            (self._disk_dir / "pg").mkdir()
            os.chown(self._disk_dir / "pg", pw.pw_uid, pw.pw_gid)
            self._admin(
                f"CREATE TABLESPACE lw_small LOCATION '{self._disk_dir / 'pg'}'",
                *(f"ALTER TABLE {t} SET TABLESPACE lw_small" for t in FULL_DISK_TABLES),
                *(f"ALTER TABLE {t} SET (fillfactor = 10)" for t in FULL_DISK_TABLES),
            )
        except BaseException:  # no mount outlives the rig
            subprocess.run(["umount", "-l", str(self._disk_dir)], capture_output=True)
            raise
        return f"tmpfs of {size}"

    def _disk_full_trigger(self, full: bool) -> None:
        drop = [f"DROP TRIGGER IF EXISTS lw_fault_disk ON {t}" for t in FULL_DISK_TABLES]
        if not full:
            self._admin(*drop)
            return
        self._admin(
            *drop,
            "CREATE OR REPLACE FUNCTION lw_fault_disk() RETURNS trigger AS $$ BEGIN RAISE "
            "EXCEPTION 'could not extend table %: No space left on device', TG_TABLE_NAME "
            "USING ERRCODE = 'disk_full'; END $$ LANGUAGE plpgsql",
            *(f"CREATE TRIGGER lw_fault_disk BEFORE INSERT ON {t} FOR EACH STATEMENT "
              "EXECUTE FUNCTION lw_fault_disk()" for t in FULL_DISK_TABLES),
        )  # fmt: skip

    def _admin(self, *statements: str) -> None:
        # The superuser of the rig's own server: only it may create a tablespace.
        url = EmbeddedPostgres.url(self.pg_port, PG_SUPERUSER)
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                for sql in statements:
                    conn.execute(text(sql))
        finally:
            engine.dispose()

    def stop_broker(self) -> None:
        assert self.kafka is not None
        self.kafka.stop()

    def start_broker(self) -> None:
        assert self.kafka is not None
        self.kafka.start(port=self.kafka_port)

    def broker_pid(self) -> int | None:
        st = self.kafka.running() if self.kafka else None
        return st.pid if st and pid_alive(st.pid) else None

    # ------------------------------------------------------------------ the print

    def feed(self, bad: list[tuple[int, Bad]] | None = None, seed: int = 0) -> Feed:
        """Stream the print in a thread: layer i of every printer, then the next after
        ``interval_s``; ``bad`` records go in after the good layer of the given index."""
        feed = Feed()
        feed.dead_before = int(self.query("SELECT coalesce(max(id), 0) FROM dead_letters")[0][0])
        by_index: dict[int, list[Bad]] = {}
        for i, b in bad or []:
            by_index.setdefault(i, []).append(b)

        def run() -> None:
            rng = np.random.default_rng(seed)
            o = self.opts
            try:
                with LayerProducer(self.bootstrap, 1 << 24, self.topics.layers) as prod:
                    for i in range(o.layers):
                        for p in range(o.printers):
                            img = stripes(rng, o.size)
                            img = defect(img) if i >= o.defect_at else img
                            prod.send(LayerMessage.from_image(f"p{p}", self.job, i, img))
                            feed.good.append((f"p{p}", self.job, i))
                        for b in by_index.get(i, []):
                            for lead in b.lead:
                                _send_raw(prod, lead, getattr(self.topics, lead.topic))
                            _send_raw(prod, b, getattr(self.topics, b.topic))
                            feed.bad.append(b)
                        time.sleep(o.interval_s)
                    prod.flush(300)
            except BaseException as exc:  # reported by the caller
                feed.error = exc
            finally:
                feed.done.set()

        threading.Thread(target=run, name="feeder", daemon=True).start()
        return feed

    def feed_ingest(self, seed: int = 0, timeout: float = 400.0) -> Feed:
        """Stream the print through `layerwatch ingest simulate`, one process per printer (the
        CLI's own producer, as a plant runs it; simulated layers, each with its expected
        outline, with the options' defect from ``defect_at``). The feed fails if a process
        exits non-zero or confirms fewer layers than it sent."""
        feed = Feed()
        feed.dead_before = int(self.query("SELECT coalesce(max(id), 0) FROM dead_letters")[0][0])
        o = self.opts
        feed.good = [(f"p{p}", self.job, i) for i in range(o.layers) for p in range(o.printers)]
        procs: dict[str, subprocess.Popen] = {}
        for p in range(o.printers):
            argv = [str(BIN), "ingest", "simulate", "--printer", f"p{p}", "--job", self.job,
                    "--layers", str(o.layers), "--interval", str(o.interval_s),
                    "--size", str(o.size), "--seed", str(seed * 100 + p),
                    "--defect", f"{o.defect}@{o.defect_at}:{o.severity:g}",
                    *(["--category", o.category] if o.category else [])]  # fmt: skip
            log = (self.logs / f"ingest-p{p}.log").open("ab")
            procs[f"ingest-p{p}"] = subprocess.Popen(
                argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

        def wait() -> None:
            try:
                for name, proc in procs.items():
                    code = proc.wait(timeout)
                    said = self.log(name, 400)
                    if code != 0 or f"confirmed {o.layers} " not in said:
                        raise RuntimeError(f"{name} exited {code}: {said}")
            except BaseException as exc:
                feed.error = exc
                for proc in procs.values():
                    proc.kill()
            finally:
                feed.done.set()

        threading.Thread(target=wait, name="ingest-feed", daemon=True).start()
        return feed

    def query(self, sql: str, **params: object) -> list:
        with db.make_engine(self.database_url).connect() as conn:
            return conn.execute(text(sql), params).all()

    def new_print(self, n: int) -> None:
        """The next run on the same rig: a job of its own (checks are per job)."""
        self.job = f"job-{n}"

    def progress(self) -> tuple[int, int, int]:
        """(layers scored, layers charted, dead letters) so far; (-1, -1, -1) while the
        database is down."""
        try:
            (row,) = self.query(
                "SELECT (SELECT count(*) FROM scores WHERE job = :j),"
                " (SELECT count(DISTINCT (printer, layer)) FROM chart_points WHERE job = :j),"
                " (SELECT count(*) FROM dead_letters WHERE id > :d)",
                j=self.job,
                d=self._dead_before,
            )
            return int(row[0]), int(row[1]), int(row[2])
        except Exception:
            return -1, -1, -1

    def wait_scored(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.progress()[0] >= n:
                return True
            time.sleep(0.2)
        return False

    def wait_settled(self, feed: Feed, timeout: float = 120.0) -> bool:
        """Until every good layer is scored and charted and every bad one dead-lettered."""
        if not feed.done.wait(timeout):
            return False
        if feed.error is not None:
            raise RuntimeError(f"the feeder failed: {feed.error}")
        self._dead_before = feed.dead_before
        o = self.opts
        phase1 = o.warmup_layers + (o.phase1_layers if o.phase1 == "job" else 0)
        want = (len(feed.good), o.printers * max(o.layers - phase1, 0), len(feed.bad))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.progress()
            if got[0] >= want[0] and got[1] >= want[1] and got[2] >= want[2]:
                time.sleep(1.0)  # a last alarm's action
                return True
            time.sleep(0.3)
        return False


def _send_raw(prod: LayerProducer, b: Bad, topic: str) -> None:
    headers = [(k, v) for k, v in b.headers]
    while True:
        try:
            prod._producer.produce(topic, b.value, b.key, headers=headers)
            return
        except BufferError:
            prod._producer.poll(0.1)
