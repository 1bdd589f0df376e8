"""The PostgreSQL dataquery the foundation SDK lacks (its "custom query" pattern).

The SDK ships no SQL dataquery, so panels, variables and annotations carry this variant; it is
registered with the SDK runtime so ``Dashboard.from_json`` decodes our targets instead of
falling back to an untyped bag.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

PLUGIN_ID = "grafana-postgresql-datasource"
DATASOURCE_UID = "layerwatch-pg"
DATASOURCE_NAME = "LayerWatch PostgreSQL"
DATASOURCE = DataSourceRef(type_val=PLUGIN_ID, uid=DATASOURCE_UID)

Format = Literal["time_series", "table"]


class PostgresQuery(cogvariants.Dataquery):
    """A raw-SQL target as Grafana's PostgreSQL query editor saves it in code mode."""

    def __init__(
        self,
        raw_sql: str = "",
        fmt: Format = "table",
        ref_id: str = "A",
        datasource: DataSourceRef | None = None,
    ) -> None:
        self.raw_sql = raw_sql
        self.format = fmt
        self.ref_id = ref_id
        self.datasource = datasource or DATASOURCE

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": self.datasource.to_json(),
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        ds = data.get("datasource")
        return cls(
            raw_sql=data.get("rawSql", ""),
            fmt=data.get("format", "table"),
            ref_id=data.get("refId", "A"),
            datasource=DataSourceRef.from_json(ds) if isinstance(ds, dict) else None,
        )


class SQL(cogbuilder.Builder[PostgresQuery]):
    """Builder for :class:`PostgresQuery`, used like the SDK's own dataquery builders."""

    def __init__(self, raw_sql: str, fmt: Format = "table") -> None:
        self._internal = PostgresQuery(raw_sql, fmt)

    def build(self) -> PostgresQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self


def register() -> None:
    """Make the SDK decode ``grafana-postgresql-datasource`` targets as :class:`PostgresQuery`."""
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=PLUGIN_ID, from_json_hook=PostgresQuery.from_json)
    )
