"""`layerwatch scorer run`: the Kafka scoring service."""

from __future__ import annotations

from pathlib import Path

import typer

from layerwatch.core.settings import BACKEND_HELP

app = typer.Typer(help="The scoring service (consumer group 'scorer').", no_args_is_help=True)


@app.command("run")
def run(
    model: Path = typer.Option(..., "--model", "-m", help="Model directory (from `train`)."),
    batch: int = typer.Option(8, min=1, help="Most layers per micro-batch."),
    max_wait_ms: int = typer.Option(200, min=1, help="Longest wait to fill a micro-batch."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    backend: str | None = typer.Option(
        None,
        help=BACKEND_HELP,
    ),
    metrics_port: int | None = typer.Option(
        None, help="Metrics and health port (default: settings; 0 = off)."
    ),
    no_maps: bool = typer.Option(False, "--no-maps", help="Do not store anomaly maps."),
) -> None:
    """Score layers from Kafka; write scores and maps to PostgreSQL and the scores topic.
    SIGTERM or Ctrl-C finishes the batch in hand, commits it and exits."""
    from layerwatch.core.console import endpoints, fail
    from layerwatch.core.settings import get_settings
    from scorer.artifact import ArtifactError
    from scorer.device import pick_device
    from scorer.methods import load_model
    from scorer.service import ScorerService, ServiceConfig
    from storage import db

    s = get_settings()
    ep = endpoints()
    try:
        db.require_current_schema(ep.database_url)
    except db.SchemaError as exc:
        raise fail(str(exc)) from exc
    try:
        method = load_model(model, pick_device(device, backend))
        engine = getattr(method, "backend", None)  # RADAR: build and check it before serving
    except (ArtifactError, ValueError, RuntimeError) as exc:
        raise fail(str(exc)) from exc
    if engine is not None:
        typer.echo(f"network engine: {engine.name}", err=True)
    from layerwatch.core.kafka import ensure_configured_topics

    ensure_configured_topics(s, ep.kafka_bootstrap)
    cfg = ServiceConfig(
        bootstrap=ep.kafka_bootstrap, database_url=ep.database_url, topics=s.topics,
        max_image_pixels=s.max_image_pixels, max_message_bytes=s.max_message_bytes,
        batch_size=batch, max_wait_ms=max_wait_ms,
        metrics_port=s.metrics_port if metrics_port is None else metrics_port,
        metrics_host=s.metrics_host,
        store_maps=not no_maps, max_poll_interval_ms=s.max_poll_interval_ms,
        history_layers=s.scorer_history_layers, history_jobs=s.scorer_history_jobs,
        placement_layers=s.scorer_placement_layers,
    )  # fmt: skip
    service = ScorerService(method, cfg)
    service.install_signal_handlers()
    service.run()
