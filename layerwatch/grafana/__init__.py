"""Grafana as code: dashboards built with grafana-foundation-sdk, provisioning files, the
``layerwatch grafana`` commands (export, sync) and alarm annotations.

No Grafana server can run in the build environment, so the dashboards are proven by running
their SQL, with Grafana's macros expanded by :mod:`layerwatch.grafana.macros`, on PostgreSQL.
"""

from pathlib import Path

# The dashboards directory of the checked-in provisioning tree (datasources/ is its sibling).
DEFAULT_OUT = Path("deploy/grafana/provisioning/dashboards")
