"""The platform commands as a new user would try them: help, config, servers, db, topics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "layerwatch"


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERWATCH_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120
    )


def test_help_lists_the_commands() -> None:
    res = run("--help")
    assert res.returncode == 0
    for cmd in ("config", "servers", "db", "topics", "demo"):
        assert cmd in res.stdout


def test_config_show_masks_secrets_and_reads_toml(tmp_path: Path) -> None:
    (tmp_path / "layerwatch.toml").write_text('topic_partitions = 9\nlog_level = "DEBUG"\n')
    env = {
        "LAYERWATCH_DATABASE_URL": "postgresql://svc:hunter2@db.example:5432/lw",
        "LAYERWATCH_GRAFANA_TOKEN": "glsa_secret_token",
        "LAYERWATCH_LOG_LEVEL": "WARNING",  # the environment beats the file
    }
    res = run("config", "show", "--json", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    values = json.loads(res.stdout)
    assert values["topic_partitions"] == 9
    assert values["log_level"] == "WARNING"
    assert values["database_url"] == "postgresql://svc:***@db.example:5432/lw"
    assert values["grafana_token"] == "********"
    assert "hunter2" not in res.stdout and "glsa_secret_token" not in res.stdout


def test_invalid_setting_is_reported(tmp_path: Path) -> None:
    res = run("config", "show", env={"LAYERWATCH_TOPIC_PARTITIONS": "zero"}, cwd=tmp_path)
    assert res.returncode != 0
    assert "topic_partitions" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_servers_and_db_lifecycle(tmp_path: Path) -> None:
    env = {"LAYERWATCH_HOME": str(tmp_path / "home")}
    try:
        assert run("servers", "status", env=env).returncode == 1  # nothing yet
        res = run("servers", "start", env=env)
        assert res.returncode == 0, res.stderr
        assert "kafka     running 127.0.0.1:" in res.stdout
        res = run("servers", "status", env=env)
        assert res.returncode == 0 and res.stdout.count("running") == 2
        res = run("db", "status", env=env)
        assert res.returncode == 1 and "layerwatch db upgrade" in res.stdout
        res = run("db", "upgrade", env=env)
        assert res.returncode == 0, res.stderr
        res = run("db", "status", env=env)
        assert res.returncode == 0 and "up to date" in res.stdout
        res = run("topics", "create", env=env)
        assert res.returncode == 0 and res.stdout.count("created") == 4
        assert run("topics", "create", env=env).stdout.count("exists") == 4
    finally:
        res = run("servers", "stop", env=env)
    assert res.returncode == 0 and res.stdout.count("stopped") == 2
    assert run("servers", "status", env=env).returncode == 1


def test_db_status_with_unreachable_database_is_clear(tmp_path: Path) -> None:
    env = {"LAYERWATCH_DATABASE_URL": "postgresql://x@127.0.0.1:1/none?connect_timeout=2"}
    res = run("db", "status", env=env, cwd=tmp_path)
    assert res.returncode == 1
    assert "cannot reach PostgreSQL" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / ".layerwatch" / "kafka").exists()  # db commands start no broker


def test_admin_url_without_service_url_is_refused(tmp_path: Path) -> None:
    env = {"LAYERWATCH_DATABASE_ADMIN_URL": "postgresql://owner@127.0.0.1:1/x"}
    res = run("db", "status", env=env, cwd=tmp_path)
    assert res.returncode == 1
    assert "LAYERWATCH_DATABASE_URL is not" in res.stderr
    assert not (tmp_path / ".layerwatch" / "postgres").exists()  # no embedded server started


def test_topics_create_needs_no_database(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {"LAYERWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap, "LAYERWATCH_TOPIC_PREFIX": "tnodb"}
    res = run("topics", "create", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "tnodb.layers" in res.stdout
    assert not (tmp_path / ".layerwatch" / "postgres").exists()
