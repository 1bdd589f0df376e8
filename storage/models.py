"""SQLAlchemy 2 typed models: the tables the services write and Grafana reads.

Rows are keyed by natural keys — (printer, job, layer[, model_version | chart]) — so that a
replayed Kafka message upserts the same row instead of adding a second one. Surrogate ids
exist only where other rows point at them (alarms ← actions).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = String(200)


class Base(DeclarativeBase):
    pass


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Printer(Base):
    __tablename__ = "printers"
    printer: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str | None] = mapped_column(String(40))  # octoprint | moonraker | webhook
    url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class Job(Base):
    __tablename__ = "jobs"
    printer: Mapped[str] = mapped_column(ID, primary_key=True)
    job: Mapped[str] = mapped_column(ID, primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="running", nullable=False)
    started_at: Mapped[datetime] = _created()
    last_layer_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Layer(Base):
    __tablename__ = "layers"
    printer: Mapped[str] = mapped_column(ID, primary_key=True)
    job: Mapped[str] = mapped_column(ID, primary_key=True)
    layer: Mapped[int] = mapped_column(Integer, primary_key=True)
    z_mm: Mapped[float | None] = mapped_column(Float)
    captured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    received_at: Mapped[datetime] = _created()


class ModelRecord(Base):
    __tablename__ = "models"
    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    method: Mapped[str] = mapped_column(String(40), nullable=False)
    metrics: Mapped[dict] = mapped_column(JSONB, default=dict, nullable=False)
    config: Mapped[dict] = mapped_column(JSONB, default=dict, nullable=False)
    created_at: Mapped[datetime] = _created()


class PrintCalibration(Base):
    """Whole normal prints of one model version (per print, per layer in order: [score, f1,
    f2]) and the level model fitted on them (for display; the monitor refits from ``prints``)."""

    __tablename__ = "print_calibrations"
    model_version: Mapped[str] = mapped_column(String(100), primary_key=True)
    source: Mapped[str] = mapped_column(String(200), nullable=False)
    prints: Mapped[list] = mapped_column(JSONB, nullable=False)
    levels: Mapped[dict] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _created()


class Score(Base):
    __tablename__ = "scores"
    printer: Mapped[str] = mapped_column(ID, primary_key=True)
    job: Mapped[str] = mapped_column(ID, primary_key=True)
    layer: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version: Mapped[str] = mapped_column(String(100), primary_key=True)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    anomalous: Mapped[bool] = mapped_column(Boolean, nullable=False)
    f1: Mapped[float] = mapped_column(Float, nullable=False)
    f2: Mapped[float] = mapped_column(Float, nullable=False)
    defect_area: Mapped[float] = mapped_column(Float, nullable=False)
    largest_area: Mapped[float] = mapped_column(Float, default=0.0, nullable=False)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False)  # model time for the layer
    e2e_latency_ms: Mapped[float | None] = mapped_column(Float)  # captured → score durable
    captured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # Issue 18 (migration 0003): per-channel scores of a multi-channel method, and the
    # channels that fired, comma-separated ("texture", "geometry", "texture,geometry", "").
    channel_scores: Mapped[dict] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb"), nullable=False
    )
    fired: Mapped[str] = mapped_column(Text, default="", server_default="", nullable=False)
    outline_error: Mapped[str | None] = mapped_column(Text)  # why a sent outline was not used
    # Migration 0004: the layer's placement against its outline, [dx, dy, shape] px
    # (scorer.geometry.OUTLINE_STATE), when it may serve the job's normal placement; else NULL.
    outline_state: Mapped[list | None] = mapped_column(JSONB(none_as_null=True))
    __table_args__ = (Index("ix_scores_scored_at", "scored_at"),)


class LayerImage(Base):
    """The last layer images of each job (migration 0003): the scorer's previous-layer
    reference, read back after a restart. ``image`` is the layer message's own file (PNG or
    JPEG, decoded as ``channels`` says, as the scorer decoded it); the scorer keeps a few per
    job and deletes older."""

    __tablename__ = "layer_images"
    printer: Mapped[str] = mapped_column(ID, primary_key=True)
    job: Mapped[str] = mapped_column(ID, primary_key=True)
    layer: Mapped[int] = mapped_column(Integer, primary_key=True)
    image: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    channels: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = _created()


class AnomalyMap(Base):
    """The pixel map as a 16-bit PNG scaled by ``scale`` (map = png / 65535 * scale)."""

    __tablename__ = "anomaly_maps"
    printer: Mapped[str] = mapped_column(ID, primary_key=True)
    job: Mapped[str] = mapped_column(ID, primary_key=True)
    layer: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version: Mapped[str] = mapped_column(String(100), primary_key=True)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    scale: Mapped[float] = mapped_column(Float, nullable=False)
    png: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class ChartPoint(Base):
    __tablename__ = "chart_points"
    printer: Mapped[str] = mapped_column(ID, primary_key=True)
    job: Mapped[str] = mapped_column(ID, primary_key=True)
    layer: Mapped[int] = mapped_column(Integer, primary_key=True)
    chart: Mapped[str] = mapped_column(String(40), primary_key=True)
    statistic: Mapped[float] = mapped_column(Float, nullable=False)
    center: Mapped[float] = mapped_column(Float, nullable=False)
    lcl: Mapped[float | None] = mapped_column(Float)
    ucl: Mapped[float | None] = mapped_column(Float)
    signal: Mapped[bool] = mapped_column(Boolean, nullable=False)
    rule: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = _created()
    __table_args__ = (Index("ix_chart_points_created_at", "created_at"),)


class Alarm(Base):
    """One alarm per (job, chart, level, episode); state open → acknowledged → resolved."""

    __tablename__ = "alarms"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    printer: Mapped[str] = mapped_column(ID, nullable=False)
    job: Mapped[str] = mapped_column(ID, nullable=False)
    chart: Mapped[str] = mapped_column(String(40), nullable=False)
    episode: Mapped[int] = mapped_column(Integer, nullable=False)
    layer: Mapped[int] = mapped_column(Integer, nullable=False)
    level: Mapped[str] = mapped_column(String(10), nullable=False)  # warn | stop
    rule: Mapped[str | None] = mapped_column(String(60))
    # The detector channels that fired on the layers behind the alarm (migration 0003).
    channels: Mapped[str | None] = mapped_column(String(60))
    state: Mapped[str] = mapped_column(String(20), default="open", nullable=False)
    opened_at: Mapped[datetime] = _created()
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    note: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        UniqueConstraint("printer", "job", "chart", "level", "episode", name="uq_alarms_episode"),
        Index("ix_alarms_state", "state"),
    )


class Action(Base):
    """Every attempt to act on a printer (or webhook / topic) and what came back."""

    __tablename__ = "actions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarms.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(40), nullable=False)  # octoprint | moonraker | ...
    command: Mapped[str] = mapped_column(String(20), nullable=False)  # pause | cancel | notify
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    request: Mapped[dict] = mapped_column(JSONB, default=dict, nullable=False)
    ok: Mapped[bool] = mapped_column(Boolean, nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    __table_args__ = (
        UniqueConstraint("alarm_id", "target", "command", "attempt", name="uq_actions_attempt"),
    )


class DeadLetter(Base):
    """A record that could not be processed, kept with the reason (``source`` is unique)."""

    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text, nullable=False, unique=True)  # topic:partition:offset
    stage: Mapped[str] = mapped_column(String(40), nullable=False)  # scorer | monitor | ingest
    field: Mapped[str | None] = mapped_column(String(60))
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    headers: Mapped[dict] = mapped_column(JSONB, default=dict, nullable=False)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _created()


WRITER_ROLE = "layerwatch_writer"
READER_ROLE = "layerwatch_grafana"
