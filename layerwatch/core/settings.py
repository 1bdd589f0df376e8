"""Effective configuration: defaults < ``layerwatch.toml`` < ``LAYERWATCH_*`` environment variables.

One object is read once per process and passed down, so `layerwatch config show` prints what
the services use. Two kinds of secrets stay outside it on purpose: printer API keys, read from
the variable each printer's policy names (``api_key_env``) when an action runs, and the
``LAYERWATCH_GRAFANA_DB_*`` variables, which Grafana itself reads from the provisioned data
source, not LayerWatch.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from layerwatch.core.topics import Topics

# 4096×4096: far above a camera frame, far below a decompression bomb.
DEFAULT_MAX_PIXELS = 16_777_216
# Engines of the scoring network (scorer.backends); "auto" = the measured fastest for the
# device. Kept here, not in scorer/, so the CLI's --help does not import torch.
BACKEND_CHOICES = (
    "auto",
    "eager",
    "eager-bf16",
    "compile",
    "onnxruntime",
    "onnxruntime-int8",
    "openvino",
    "openvino-bf16",
)
BACKEND_HELP = (
    "engine of the network: "
    + "|".join(BACKEND_CHOICES)
    + " (default: the scorer_backend setting, LAYERWATCH_SCORER_BACKEND)"
)


def _toml_file() -> Path:
    return Path(os.environ.get("LAYERWATCH_CONFIG", "layerwatch.toml"))


class Settings(BaseSettings):
    """All LayerWatch settings. Every field maps to ``LAYERWATCH_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="LAYERWATCH_", extra="ignore")

    home: Path = Field(
        Path(".layerwatch"), description="State directory (embedded servers, models)."
    )
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset = start the embedded Tansu broker."
    )
    database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL for the services; unset = the embedded PostgreSQL."
    )
    database_admin_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL that runs migrations (schema owner); defaults to database_url.",
    )
    writer_db_password: SecretStr | None = Field(
        None, description="Password the migration gives the services' writer role."
    )
    grafana_db_password: SecretStr | None = Field(
        None, description="Password the migration gives the read-only Grafana role."
    )
    topic_prefix: str = Field(
        "layerwatch", pattern=r"^[A-Za-z0-9._-]{1,100}$", description="Prefix of the topic names."
    )
    topic_partitions: int = Field(6, ge=1, description="Partitions of the layer and score topics.")
    topic_replication: int = Field(1, ge=1, description="Replication factor of new topics.")
    max_image_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        description="Images above this pixel count are refused before decoding.",
    )
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Producer message limit.")
    max_poll_interval_ms: int = Field(
        300_000,
        ge=6000,
        description="How long a service may hold a batch (waiting for the database) before the "
        "broker takes its partitions away (Kafka's max.poll.interval.ms).",
    )
    log_level: str = Field("INFO", description="Log level of the services.")
    log_json: bool = Field(False, description="Structured JSON logs instead of the console format.")
    grafana_url: str | None = Field(None, description="Grafana URL for sync and annotations.")
    grafana_token: SecretStr | None = Field(None, description="Grafana service-account token.")
    metrics_port: int = Field(
        9464, ge=0, description="The scorer's metrics and health port (0 = disabled)."
    )
    monitor_metrics_port: int = Field(
        9465, ge=0, description="The monitor's metrics and health port (0 = disabled)."
    )
    metrics_host: str = Field(
        "0.0.0.0",
        description="Address the metrics and health endpoints listen on (127.0.0.1: this "
        "machine only).",
    )
    scorer_backend: str = Field(
        "auto",
        pattern="^(" + "|".join(BACKEND_CHOICES) + ")$",
        description="Engine that runs the scoring network: "
        + ", ".join(BACKEND_CHOICES)
        + " (auto: the measured fastest for the device; the -bf16 engines: bf16 inference "
        "on a CPU with AVX512-BF16/AMX).",
    )

    scorer_history_layers: int = Field(
        2,
        ge=0,
        description="Layer images the scorer keeps per job as references (the "
        "previous layer); 0 = none.",
    )
    scorer_history_jobs: int = Field(
        256,
        ge=1,
        description="Jobs whose last layers the scorer keeps in memory (least "
        "recently seen evicted; read back from the database when seen again).",
    )
    scorer_placement_layers: int = Field(
        16,
        ge=1,
        description="Unflagged layers whose median placement of the part against its "
        "expected outline is a job's normal placement (the geometry channel compares each "
        "layer with it; known once half of them are there).",
    )
    gcode_homography: (
        tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]
        | None
    ) = Field(
        None,
        description="3x3 homography from bed mm (x, y, 1) to camera pixels (column, "
        "row, 1), row-major, for outlines rendered from G-code (`ingest ... --gcode`).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_toml_file()),
        )

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def uses_embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    def masked(self) -> dict[str, Any]:
        """The effective configuration with secrets replaced, for display."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = "********"
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        for url_field in ("database_url", "database_admin_url"):
            raw = getattr(self, url_field)
            if raw is not None:
                out[url_field] = mask_url(raw.get_secret_value())
        return out


def mask_url(url: str) -> str:
    """Hide the password of a URL but keep user, host and database visible."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "********"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
