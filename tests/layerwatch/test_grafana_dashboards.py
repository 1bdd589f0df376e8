"""The checked-in provisioning tree is what the code generates, decodes with the SDK, points
at the provisioned data source, and follows the provisioning format (GRAFANA.md A3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard
from typer.testing import CliRunner

from layerwatch.grafana import DEFAULT_OUT, sdk
from layerwatch.grafana.charts import CHARTS
from layerwatch.grafana.cli import app
from layerwatch.grafana.dashboards import DASHBOARDS
from layerwatch.grafana.export import provisioning_files, stale_files
from layerwatch.grafana.provisioning import CONTAINER_DASHBOARDS, ENV_PASSWORD
from storage.models import READER_ROLE

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / DEFAULT_OUT


def _dashboards() -> dict[str, dict[str, Any]]:
    return {uid: json.loads((OUT / f"{uid}.json").read_text()) for uid in DASHBOARDS}


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [q for p in panels for q in (p, *_panels(p.get("panels", [])))]


def test_checked_in_files_are_what_the_code_generates() -> None:
    stale = stale_files(provisioning_files(OUT))
    assert not stale, f"run `layerwatch grafana export`: {stale}"


def test_export_writes_then_check_passes_and_catches_an_edit(tmp_path: Path) -> None:
    out = tmp_path / "provisioning" / "dashboards"
    runner = CliRunner()
    assert runner.invoke(app, ["export", "--out", str(out)]).exit_code == 0
    assert (tmp_path / "provisioning" / "datasources" / "layerwatch.yaml").is_file()
    assert runner.invoke(app, ["export", "--out", str(out), "--check"]).exit_code == 0
    (out / "layerwatch-job.json").write_text("{}")
    res = runner.invoke(app, ["export", "--out", str(out), "--check"])
    assert res.exit_code == 1 and "layerwatch-job.json" in res.output


def test_dashboards_decode_with_the_sdk_and_keep_their_sql() -> None:
    register_default_plugins()
    sdk.register()
    for uid, d in _dashboards().items():
        model = Dashboard.from_json(d)
        assert model.uid == uid
        raw = [t["rawSql"] for p in d["panels"] for t in p.get("targets", [])]
        decoded = [t for p in model.panels or [] for t in getattr(p, "targets", None) or []]
        assert decoded and all(isinstance(t, sdk.PostgresQuery) for t in decoded)
        assert [t.raw_sql for t in decoded] == raw


def test_every_query_uses_the_provisioned_datasource_and_ids_are_unique() -> None:
    for d in _dashboards().values():
        panels = _panels(d["panels"])
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids))
        for p in panels:
            if p["type"] == "row":
                continue
            assert p["datasource"] == {"type": sdk.PLUGIN_ID, "uid": sdk.DATASOURCE_UID}
            assert all(t["datasource"]["uid"] == sdk.DATASOURCE_UID for t in p["targets"])
            assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


def test_control_charts_style_limits_dashed_and_signals_red() -> None:
    job = _dashboards()["layerwatch-job"]
    charts = {p["title"]: p for p in _panels(job["panels"])}
    for spec in CHARTS:
        for title, kind in ((spec.title, "timeseries"), (f"{spec.title} (by layer)", "trend")):
            panel = charts[title]
            assert panel["type"] == kind
            props = {
                o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
                for o in panel["fieldConfig"]["overrides"]
            }
            for limit in ("LCL", "UCL"):
                assert props[limit]["custom.lineStyle"]["fill"] == "dash"
                assert props[limit]["color"]["fixedColor"] == "red"
            assert props["signal"]["custom.drawStyle"] == "points"
        assert charts[f"{spec.title} (by layer)"]["options"]["xField"] == "layer"


def test_chart_names_are_the_monitors() -> None:
    from monitor.engine import CHART_NAMES

    assert {c.name for c in CHARTS} <= set(CHART_NAMES)


def test_provisioning_yaml_has_the_documented_keys() -> None:
    yaml = pytest.importorskip("yaml")  # PyYAML: a test dependency
    base = OUT.parent
    ds_file = yaml.safe_load((base / "datasources" / "layerwatch.yaml").read_text())
    assert ds_file["apiVersion"] == 1
    (ds,) = ds_file["datasources"]
    allowed = {
        "name",
        "uid",
        "type",
        "access",
        "orgId",
        "url",
        "user",
        "isDefault",
        "editable",
        "jsonData",
        "secureJsonData",
    }
    assert set(ds) == allowed
    assert (ds["uid"], ds["type"], ds["access"], ds["user"]) == (
        sdk.DATASOURCE_UID,
        "grafana-postgresql-datasource",
        "proxy",
        READER_ROLE,
    )
    # Grafana 12: database in jsonData, password in secureJsonData, from the environment.
    assert "database" not in ds and "password" not in ds
    assert ds["jsonData"]["database"].startswith("${") and ds["url"].startswith("${")
    assert ds["secureJsonData"] == {"password": f"${{{ENV_PASSWORD}}}"}
    assert set(ds["jsonData"]) <= {
        "database",
        "sslmode",
        "postgresVersion",
        "timescaledb",
        "maxOpenConns",
        "maxIdleConns",
        "connMaxLifetime",
        "timeInterval",
    }

    prov = yaml.safe_load((base / "dashboards" / "layerwatch.yaml").read_text())
    assert prov["apiVersion"] == 1
    (p,) = prov["providers"]
    assert p["type"] == "file" and p["folderUid"] == "layerwatch"
    assert set(p) == {
        "name",
        "orgId",
        "folder",
        "folderUid",
        "type",
        "disableDeletion",
        "updateIntervalSeconds",
        "allowUiUpdates",
        "options",
    }
    # The provider reads the directory the JSON files are checked into (mounted there).
    assert p["options"]["path"] == CONTAINER_DASHBOARDS
    assert Path(CONTAINER_DASHBOARDS).name == OUT.name
    assert sorted(x.stem for x in OUT.glob("*.json")) == sorted(DASHBOARDS)
