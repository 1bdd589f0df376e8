"""Real infrastructure for the tests: a Kafka-protocol broker and PostgreSQL over TCP.

Order of choice: external servers named by ``LAYERWATCH_KAFKA_BOOTSTRAP`` /
``LAYERWATCH_DATABASE_URL``; testcontainers when ``LAYERWATCH_TEST_DOCKER=1`` and a Docker
engine answers; otherwise the embedded Tansu broker and PostgreSQL in a temporary home.
"""

from __future__ import annotations

import os

# A fixed, wide terminal for the error panels of every CLI the tests run (in process or as a
# subprocess), whatever the terminal or folder the suite runs in: typer's panels wrap at the
# terminal width, and a wrap inside an asserted message made a test pass or fail with the
# clone's path length. Typer reads TERMINAL_WIDTH once, at import, so this comes first. (Not
# COLUMNS: pytest's own lines would grow to that width.) LayerWatch's consoles do not wrap
# text when they write to a pipe, which is what the tests give them.
TEST_TERMINAL_WIDTH = "4000"
os.environ["TERMINAL_WIDTH"] = TEST_TERMINAL_WIDTH
# The scoring network runs eagerly in float32 unless a test asks for another engine: the
# product's `auto` (openvino-bf16 on a CPU with bf16 in hardware) exports the network at every
# model load (2-4 s, hundreds of loads in the suite), and the tests' expected values are those
# of float32. tests/scorer/test_backends.py runs every engine against eager and checks what
# `auto` resolves to.
os.environ.setdefault("LAYERWATCH_SCORER_BACKEND", "eager")

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from layerwatch.core.embedded import (
    DB_WRITER,
    PG_SUPERUSER,
    EmbeddedKafka,
    EmbeddedPostgres,
    Endpoints,
)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _kafka(home: Path) -> Iterator[str]:
    if bootstrap := os.environ.get("LAYERWATCH_KAFKA_BOOTSTRAP"):
        yield bootstrap
    elif os.environ.get("LAYERWATCH_TEST_DOCKER") == "1" and _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kc:
            yield kc.get_bootstrap_server()
    else:
        broker = EmbeddedKafka(home)
        st = broker.start()
        try:
            yield st.address
        finally:
            broker.stop()


@contextlib.contextmanager
def _postgres(home: Path) -> Iterator[tuple[str, str, str]]:
    """(service url, admin url, superuser url) of a server where the admin creates databases;
    the superuser (the admin on external servers) drops them, ending every session first."""
    if url := os.environ.get("LAYERWATCH_DATABASE_URL"):
        admin = os.environ.get("LAYERWATCH_DATABASE_ADMIN_URL", url)
        yield url, admin, admin
    elif os.environ.get("LAYERWATCH_TEST_DOCKER") == "1" and _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver="psycopg") as pc:
            yield pc.get_connection_url(), pc.get_connection_url(), pc.get_connection_url()
    else:
        pg = EmbeddedPostgres(home)
        st = pg.start()
        try:
            superuser = EmbeddedPostgres.url(st.port, PG_SUPERUSER, "postgres")
            yield EmbeddedPostgres.url(st.port, DB_WRITER), st.address, superuser
        finally:
            pg.stop()


@pytest.fixture(scope="session")
def lw_home() -> Iterator[Path]:
    """State directory of the test servers. Not under pytest's tmp dir: pytest resets that to
    mode 0700 whenever a session starts, which would lock out the ``pgserver`` user."""
    home = Path(tempfile.mkdtemp(prefix="layerwatch-test-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(lw_home: Path) -> Iterator[str]:
    with _kafka(lw_home) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def pg_server(lw_home: Path) -> Iterator[tuple[str, str, str]]:
    with _postgres(lw_home) as urls:
        yield urls


@pytest.fixture
def fresh_database(pg_server: tuple[str, str, str]) -> Iterator[tuple[str, str]]:
    """A new, empty database for one test: (service url, admin url); dropped afterwards."""
    url, admin, superuser = pg_server
    name = f"lwtest_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    new_url = make_url(url).set(database=name).render_as_string(hide_password=False)
    new_admin = make_url(admin).set(database=name).render_as_string(hide_password=False)
    try:
        yield new_url, new_admin
    finally:
        from storage.db import make_engine

        for u in (new_url, new_admin):
            make_engine(u).dispose()
        engine.dispose()
        dropper = create_engine(superuser, isolation_level="AUTOCOMMIT")
        with dropper.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        dropper.dispose()


@pytest.fixture
def migrated_database(fresh_database: tuple[str, str]) -> tuple[str, str]:
    """A fresh database at the newest schema revision."""
    from storage import db

    db.upgrade(fresh_database[1])
    return fresh_database


@pytest.fixture
def endpoints(kafka_bootstrap: str, migrated_database: tuple[str, str]) -> Endpoints:
    return Endpoints(kafka_bootstrap, migrated_database[0], migrated_database[1])


@pytest.fixture
def topic_prefix() -> str:
    """Unique topic names per test, so tests sharing one broker never see each other's data."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def virtual_printer(tmp_path_factory: pytest.TempPathFactory):
    """A real OctoPrint with its virtual printer (venv cached in .layerwatch/test-cache)."""
    from layerwatch.virtual_printer import start_virtual_printer

    venv = Path(__file__).resolve().parents[1] / ".layerwatch" / "test-cache" / "octoprint-venv"
    printer = start_virtual_printer(venv, tmp_path_factory.mktemp("octoprint"))
    try:
        printer.connect()
        yield printer
    finally:
        printer.stop()


@pytest.fixture(scope="session")
def moonraker(tmp_path_factory: pytest.TempPathFactory):
    """A real Moonraker (no Klipper: print actions answer 503)."""
    from layerwatch.virtual_printer import start_moonraker

    venv = Path(__file__).resolve().parents[1] / ".layerwatch" / "test-cache" / "moonraker-venv"
    server = start_moonraker(venv, tmp_path_factory.mktemp("moonraker"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def quick_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved PCA scorer on 32² stripes, fitted in about 2 s (``bench.faults.model``): for
    tests of the services' delivery, where what the model says matters less than that every
    layer gets a score (RADAR's own tests use the tiny trained RADAR in tests/scorer)."""
    from bench.faults.model import make_quick_model

    return make_quick_model(tmp_path_factory.mktemp("quick-model"))


@pytest.fixture
def quick_model(quick_model_dir: Path):
    """A fresh load of the quick model (each service gets its own)."""
    from scorer.device import pick_device
    from scorer.methods import load_model

    return load_model(quick_model_dir, pick_device("cpu"))
