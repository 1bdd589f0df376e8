"""Push the data source, the folder and the dashboards to a running Grafana (idempotent).

For a Grafana that is not provisioned from files (Grafana Cloud, a shared server): the same
models as the provisioning files, created when missing and overwritten when present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from layerwatch.grafana.provisioning import FOLDER_TITLE, FOLDER_UID


@dataclass
class SyncReport:
    datasource: str = ""  # created | updated
    folder: str = ""  # created | exists
    dashboards: list[str] = field(default_factory=list)  # URLs Grafana answered


def _missing(exc: GrafanaClientError) -> bool:
    return exc.status_code == 404


def sync(
    api: GrafanaApi,
    datasource: dict[str, Any],
    dashboards: dict[str, dict[str, Any]],
    message: str = "layerwatch grafana sync",
) -> SyncReport:
    report = SyncReport()
    uid = datasource["uid"]
    try:
        api.datasource.get_datasource_by_uid(uid)
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.datasource.create_datasource(datasource)
        report.datasource = "created"
    else:
        api.datasource.update_datasource_by_uid(uid, datasource)
        report.datasource = "updated"
    try:
        api.folder.get_folder(FOLDER_UID)
        report.folder = "exists"
    except GrafanaClientError as exc:
        if not _missing(exc):
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        report.folder = "created"
    for dashboard in dashboards.values():
        answer = api.dashboard.update_dashboard(
            {"dashboard": dashboard, "folderUid": FOLDER_UID, "overwrite": True, "message": message}
        )
        report.dashboards.append(str((answer or {}).get("url", dashboard["uid"])))
    return report
