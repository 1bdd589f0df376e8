"""Migrations up and down on the real PostgreSQL, idempotent upserts, least-privileged roles."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from storage import db, repository
from storage.models import READER_ROLE, Base

TABLES = {t.name for t in Base.metadata.sorted_tables}


def test_upgrade_downgrade_upgrade(fresh_database: tuple[str, str]) -> None:
    _, admin = fresh_database
    assert db.current_revision(admin) is None
    db.upgrade(admin)
    assert db.current_revision(admin) == db.head_revision()
    assert set(inspect(db.make_engine(admin)).get_table_names()) >= TABLES
    db.downgrade(admin, "base")
    db.make_engine(admin).dispose()
    assert db.current_revision(admin) is None
    assert not TABLES & set(inspect(db.make_engine(admin)).get_table_names())
    db.upgrade(admin)
    assert db.current_revision(admin) == db.head_revision()


def test_services_refuse_an_old_schema(fresh_database: tuple[str, str]) -> None:
    url, admin = fresh_database
    with pytest.raises(db.SchemaError, match="layerwatch db upgrade"):
        db.require_current_schema(admin)
    db.upgrade(admin)
    db.require_current_schema(url)  # the writer role can check it too


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(db.SchemaError, match="cannot reach PostgreSQL"):
        db.current_revision("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def _score(layer: int, score: float) -> dict:
    now = datetime.now(UTC)
    return {
        "printer": "p", "job": "j", "layer": layer, "model_version": "m1", "score": score,
        "anomalous": score > 1, "f1": 0.1, "f2": 0.2, "defect_area": 0.0, "latency_ms": 5.0,
        "captured_at": now, "scored_at": now,
    }  # fmt: skip


def test_replayed_upsert_leaves_one_row(migrated_database: tuple[str, str]) -> None:
    url, _ = migrated_database
    engine = db.make_engine(url)
    for replay_score in (0.5, 2.5):  # the same layers written twice (a replay after a crash)
        with engine.begin() as conn:
            repository.register_jobs(conn, [("p", "j")])
            repository.upsert_scores(conn, [_score(i, replay_score) for i in range(5)])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT layer, score, anomalous FROM scores ORDER BY layer"))
        rows = rows.all()
        jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
    assert [r.layer for r in rows] == [0, 1, 2, 3, 4]
    assert all(r.score == 2.5 and r.anomalous for r in rows)  # the last write wins
    assert jobs == 1


def test_dead_letters_keep_one_row_per_source(migrated_database: tuple[str, str]) -> None:
    url, _ = migrated_database
    engine = db.make_engine(url)
    row = {"source": "t:0:7", "stage": "scorer", "reason": "bad", "payload": b"\x00"}
    for _ in range(2):
        with engine.begin() as conn:
            repository.add_dead_letters(conn, [row])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM dead_letters")).scalar_one() == 1


def test_grafana_role_reads_but_cannot_write(migrated_database: tuple[str, str]) -> None:
    url, _ = migrated_database
    reader = make_url(url).set(username=READER_ROLE)
    engine = create_engine(reader)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM scores")).scalar_one() == 0
        with engine.begin() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text("INSERT INTO printers(printer) VALUES ('x')"))
    finally:
        engine.dispose()


def test_writer_role_cannot_change_the_schema(migrated_database: tuple[str, str]) -> None:
    url, _ = migrated_database
    with db.make_engine(url).begin() as conn, pytest.raises(ProgrammingError):
        conn.execute(text("DROP TABLE scores"))


def test_layer_images_are_trimmed_per_job_and_hidden_from_grafana(
    migrated_database: tuple[str, str],
) -> None:
    url, _ = migrated_database
    engine = db.make_engine(url)
    with engine.begin() as conn:
        for n in range(5):  # one batch per layer, as the scorer writes them
            repository.store_layer_images(
                conn,
                [
                    {"printer": "p", "job": j, "layer": n, "image": bytes([n]), "channels": 1}
                    for j in "ab"
                ],
                2,
            )
        repository.store_layer_images(conn, [{"printer": "p", "job": "a", "layer": 1,
                                              "image": b"replayed", "channels": 1}], 2)  # fmt: skip
    with engine.connect() as conn:
        assert [n for n, *_ in repository.recent_layer_images(conn, "p", "a", 10, 5)] == [4, 3]
        assert repository.recent_layer_images(conn, "p", "b", 4, 5) == [(3, b"\x03", 1)]
    reader = create_engine(make_url(url).set(username=READER_ROLE))
    try:
        with reader.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text("SELECT count(*) FROM layer_images"))
    finally:
        reader.dispose()


def test_an_alarm_records_the_channels_that_fired_on_its_layers(
    migrated_database: tuple[str, str],
) -> None:
    url, _ = migrated_database
    engine = db.make_engine(url)
    fired = {3: "texture", 6: "geometry", 8: "texture,geometry", 9: ""}
    with engine.begin() as conn:
        repository.register_jobs(conn, [("p", "j")])
        repository.upsert_scores(conn, [_score(n, 0.5) | {"fired": fired.get(n, "")}
                                        for n in range(12)])  # fmt: skip
        assert repository.fired_channels(conn, "p", "j", 9) == "geometry,texture"  # layers 5-9
        assert repository.fired_channels(conn, "p", "j", 7) == "geometry,texture"  # 3-7
        assert repository.fired_channels(conn, "p", "j", 2) is None
        assert repository.fired_channels(conn, "p", "other", 9) is None


def test_a_jobs_outline_states_are_read_back_for_its_model_unflagged_only(
    migrated_database: tuple[str, str],
) -> None:
    url, _ = migrated_database
    now = datetime.now(UTC)
    base = {"printer": "p", "job": "a", "f1": 0.0, "f2": 0.0, "defect_area": 0.0,
            "latency_ms": 1.0, "captured_at": now, "scored_at": now}  # fmt: skip
    rows = [
        base | {"layer": n, "model_version": "m1", "score": 0.1, "anomalous": n == 3,
                "outline_state": None if n == 1 else [float(n), 0.0, 1.0]}
        for n in range(6)
    ] + [base | {"layer": 4, "model_version": "m0", "score": 0.1, "anomalous": False,
                 "outline_state": [99.0, 0.0, 0.0]}]  # fmt: skip
    engine = db.make_engine(url)
    with engine.begin() as conn:
        repository.upsert_scores(conn, rows)
    with engine.connect() as conn:
        # layer 1 had none (SQL NULL, not JSON null), 3 was flagged, m0 placed its own part
        assert repository.recent_outline_states(conn, "p", "a", "m1", 5, 3) == [
            (0.0, 0.0, 1.0), (2.0, 0.0, 1.0), (4.0, 0.0, 1.0)
        ]  # fmt: skip
        assert repository.recent_outline_states(conn, "p", "a", "m1", 3, 1) == [(2.0, 0.0, 1.0)]
