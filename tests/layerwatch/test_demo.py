"""`layerwatch demo` end to end on the test broker and database, with a tiny model."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from layerwatch.core.embedded import Endpoints
from layerwatch.core.settings import Settings
from layerwatch.demo import DemoOptions, demo_model_dir, run_demo

SUMMARY_KEYS = {
    "onset_layer", "first_alarm_layer", "false_alarms", "stop_action", "stop_result",
    "latency_p50_ms", "latency_p95_ms",
}  # fmt: skip


def test_demo_streams_a_print_through_the_pipeline_and_caches_its_model(
    endpoints: Endpoints, topic_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(
        home=tmp_path / "home", kafka_bootstrap=endpoints.kafka_bootstrap,
        database_url=endpoints.database_url, database_admin_url=endpoints.database_admin_url,
        topic_prefix=topic_prefix, topic_partitions=1,
    )  # fmt: skip
    opts = DemoOptions(
        layers=12, defect_at=9, size=64, interval=0.0, train_steps=15, train_images=20,
        summary=tmp_path / "summary.json", report=tmp_path / "report.html",
        group_prefix=topic_prefix,  # groups of its own on the shared test broker
    )  # fmt: skip
    out = io.StringIO()
    code = run_demo(settings, opts, Console(file=out, width=140))
    text = out.getvalue()
    assert code in (0, 2), text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) >= SUMMARY_KEYS
    assert summary["onset_layer"] == 9
    # Every layer the camera sent was scored: nothing lost between Kafka and PostgreSQL.
    assert 1 <= summary["layers_sent"] == summary["layers_scored"] <= 12
    assert summary["latency_p50_ms"] > 0 and summary["latency_p95_ms"] >= summary["latency_p50_ms"]
    assert (code == 0) == (
        summary["first_alarm_layer"] is not None
        and 9 <= summary["first_alarm_layer"] <= 11
        and summary["false_alarms"] == 0
    )
    if summary["stop_action"] is not None:  # a stop pauses the built-in printer: no more layers
        assert summary["stop_result"].startswith("ok")
        assert summary["layers_sent"] <= summary["first_stop_layer"] + 3
    report = (tmp_path / "report.html").read_text()
    assert summary["job"] in report and "over the layer image" in report
    model_dir = demo_model_dir(settings.home, "fdm_rectilinear", 64)
    assert (model_dir / "model.safetensors").is_file() and "training RADAR" in text

    again = io.StringIO()
    run_demo(settings, opts, Console(file=again, width=140))
    assert "cached" in again.getvalue() and "training RADAR" not in again.getvalue()


def test_demo_training_layers_cover_whole_prints_with_their_references(tmp_path: Path) -> None:
    from layerwatch.demo import write_normal_layers
    from scorer.data import load_reference

    opts = DemoOptions(layers=12, size=64, train_images=30)
    write_normal_layers(tmp_path, opts)
    images = sorted((tmp_path / "train" / "good").glob("*.png"))
    assert len(images) == 30
    layers = [int(p.stem.split("_")[1]) for p in images]
    assert min(layers) <= 3 and max(layers) <= 11  # bottom layers included, within the print
    for path, layer in zip(images, layers, strict=True):
        ref = load_reference(path, (64, 64))
        assert ref is not None and ref.outline is not None and ref.outline.any()
        assert (ref.previous is None) == (layer == 0)
        assert ref.outline_error is None or layer == 0  # layer 0's missing previous is said
