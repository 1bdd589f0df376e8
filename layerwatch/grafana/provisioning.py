"""Grafana provisioning files and the data source model, from one definition.

The data source that file provisioning creates (with ``$ENV`` placeholders Grafana expands)
and the one ``layerwatch grafana sync`` pushes (with real values) come from
:func:`datasource_model`, so the two cannot drift apart. Files are written as YAML by a small
emitter (block style, JSON-quoted strings): the project needs no YAML library at run time.
"""

from __future__ import annotations

import json
import re
from typing import Any

from layerwatch.grafana.sdk import DATASOURCE_NAME, DATASOURCE_UID, PLUGIN_ID
from storage.models import READER_ROLE

FOLDER_UID = "layerwatch"
FOLDER_TITLE = "LayerWatch"
# Where the deb/docker images read provisioning; compose mounts deploy/grafana/provisioning here.
CONTAINER_DASHBOARDS = "/etc/grafana/provisioning/dashboards"

# Environment variables the provisioned data source reads (Grafana expands ${VAR} at start).
ENV_HOST = "LAYERWATCH_GRAFANA_DB_HOST"  # host:port as Grafana reaches PostgreSQL
ENV_DATABASE = "LAYERWATCH_GRAFANA_DB_NAME"
ENV_SSLMODE = "LAYERWATCH_GRAFANA_DB_SSLMODE"  # disable | require | verify-ca | verify-full
ENV_PASSWORD = "LAYERWATCH_GRAFANA_DB_PASSWORD"  # the same variable the migration reads


def datasource_model(url: str, database: str, password: str, sslmode: str) -> dict[str, Any]:
    """The PostgreSQL data source as the API and provisioning take it (read-only role).

    Since Grafana 12 the database belongs in jsonData and the password in secureJsonData.
    """
    return {
        "name": DATASOURCE_NAME,
        "uid": DATASOURCE_UID,
        "type": PLUGIN_ID,
        "access": "proxy",
        "url": url,
        "user": READER_ROLE,
        "isDefault": False,
        "jsonData": {
            "database": database,
            "sslmode": sslmode,
            "postgresVersion": 1500,
            "timescaledb": False,
            "maxOpenConns": 10,
            "maxIdleConns": 2,
            "connMaxLifetime": 14400,
            "timeInterval": "1s",
        },
        "secureJsonData": {"password": password},
    }


def datasources_file() -> dict[str, Any]:
    ds = datasource_model(
        f"${{{ENV_HOST}}}", f"${{{ENV_DATABASE}}}", f"${{{ENV_PASSWORD}}}", f"${{{ENV_SSLMODE}}}"
    )
    return {
        "apiVersion": 1,
        "datasources": [{"name": ds["name"], "orgId": 1, "editable": False, **ds}],
    }


def dashboards_file(path: str = CONTAINER_DASHBOARDS) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "layerwatch",
                "orgId": 1,
                "folder": FOLDER_TITLE,
                "folderUid": FOLDER_UID,
                "type": "file",
                "disableDeletion": True,
                "updateIntervalSeconds": 30,
                "allowUiUpdates": False,
                "options": {"path": path, "foldersFromFilesStructure": False},
            }
        ],
    }


# --- YAML ---------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return json.dumps(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a YAML double-quoted one
    raise TypeError(f"cannot write {type(v).__name__} as YAML")


def _key(k: str) -> str:
    return k if _PLAIN_KEY.match(k) else json.dumps(k, ensure_ascii=False)


def _lines(v: Any, indent: int) -> list[str]:
    pad = " " * indent
    if isinstance(v, dict):
        if not v:
            return [pad + "{}"]
        out = []
        for k, item in v.items():
            if isinstance(item, dict | list) and item:
                out += [f"{pad}{_key(k)}:", *_lines(item, indent + 2)]
            else:
                out.append(f"{pad}{_key(k)}: {_inline(item)}")
        return out
    if isinstance(v, list):
        if not v:
            return [pad + "[]"]
        out = []
        for item in v:
            sub = _lines(item, indent + 2)
            out += [f"{pad}- {sub[0].lstrip()}", *sub[1:]]
        return out
    return [pad + _scalar(v)]


def _inline(v: Any) -> str:
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return _scalar(v)


def to_yaml(doc: dict[str, Any], header: str = "") -> str:
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + "\n".join(_lines(doc, 0)) + "\n"
