"""`layerwatch demo`: a simulated print through the whole system, on the embedded servers.

simulator → Kafka (layers, each with its expected outline) → scorer service (RADAR) →
PostgreSQL + Kafka (scores) → monitor
service (control charts, alarms) → printer action (the built-in virtual printer, or a real
OctoPrint). The services are the production classes, run in threads of this process and
talking over TCP to the broker and the database; the model is trained once and cached in the
state directory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import text

from layerwatch.core.settings import Settings

PRINTER = "demo-printer"


@dataclass
class DemoOptions:
    layers: int = 40
    defect_at: int = 25
    defect: str = "stringing"
    severity: float = 0.8
    category: str = "fdm_rectilinear"
    size: int = 128
    interval: float = 0.6
    train_minutes: float = 6.0
    # A fixed step count, not only a time budget, so the demo model (and so the run) is the
    # same on a fast and a slow machine; the time budget only guards against a very slow one.
    train_steps: int = 400
    train_images: int = 160
    seed: int = 11
    octoprint: str | None = None
    api_key: str | None = None
    summary: Path | None = None
    report: Path | None = None
    keep_servers: bool = False
    # The demo's own consumer groups: a `layerwatch up` on the same broker keeps its "scorer"
    # and "monitor" groups to itself, and the demo never waits on their rebalances.
    group_prefix: str = "demo"


@dataclass
class Summary:
    job: str
    layers_planned: int
    layers_sent: int
    layers_scored: int
    onset_layer: int
    first_alarm_layer: int | None
    first_stop_layer: int | None
    false_alarms: int
    stop_action: str | None
    stop_result: str | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    model_version: str
    report: str | None
    stop_channels: str | None = None  # the detector channels that fired behind the stop

    @property
    def detected_in_time(self) -> bool:
        return (
            self.first_alarm_layer is not None
            and self.onset_layer <= self.first_alarm_layer <= self.onset_layer + 2
            and self.false_alarms == 0
        )


# --------------------------------------------------------------------------- the model


def write_normal_layers(category: Path, opts: DemoOptions, on_image: Any = None) -> None:
    """``opts.train_images`` normal layers in ``category``/train/good, each from a print of its
    own (so the calibration hold-out is as independent of the training layers as a new print
    is), at any layer height, with their references (the same job's previous layer and the
    layer's expected outline, in the data sets' layout, ``scorer.data.reference_paths``) for
    the geometry channel. The simulator's data sets skip the solid bottom layers (0–3); a model
    that never saw them flagged layers 0–3 of every demo print once the residual was whitened."""
    from ingest.simulate import expected_outline, make_renderer, render_layer
    from ingest.simulate.categories import resolve_category
    from ingest.simulate.dataset import save_png
    from scorer.data import reference_paths

    cat = resolve_category(opts.category, "fdm")
    rng = np.random.default_rng(opts.seed + 1000)
    for i in range(opts.train_images):
        renderer = make_renderer(cat, opts.seed + 1000 + i, opts.size, opts.layers, False)
        layer = int(rng.integers(0, opts.layers))
        path = category / "train" / "good" / f"{i:04d}_{layer:03d}.png"
        save_png(path, render_layer(renderer, layer, []).image)
        previous, outline = reference_paths(path)  # type: ignore[misc]
        if layer > 0:  # layer 0 has no previous layer: the outline alone is its reference
            save_png(previous, render_layer(renderer, layer - 1, []).image)
        save_png(outline, expected_outline(renderer, layer) * np.uint8(255))
        if on_image is not None:
            on_image()


# Bumped whenever the demo's training or the scorer's defaults change, so a cached model from
# before is not reused: v2 trained on whole prints (v1 never saw the bottom layers); v3 has
# 2 noise draws, the low-pass pixel map and the one-sided forest; v4 the tail score and w = 32;
# v5 the leave-one-out threshold; v6 stores the calibration images' defect-cluster areas; v7 is
# RADAR + geometry.
DEMO_MODEL_VERSION = "v7"
# The demo's layers carry their references (the previous layer, the expected outline, and the
# scorer keeps the job's normal placement of the part), and its model has both channels, so a
# layer shift or a warped corner (`--defect layer_shift|warping`) is caught by the geometry
# channel and a texture defect by RADAR.
DEMO_METHOD = "radar-geometry"
# The policy leaves each job's first layers uncharted: the solid bottom layers and the first
# sparse layer over them look unlike every later layer, once a print (issue 18's stream test).
DEMO_WARMUP_LAYERS = 5


def demo_model_dir(home: Path, category: str, size: int) -> Path:
    """Where ``layerwatch demo`` caches its model."""
    return home / "models" / f"demo-{category}-{size}-{DEMO_MODEL_VERSION}"


def demo_model(settings: Settings, opts: DemoOptions, console: Console):
    """The cached demo model, trained on simulated normal layers the first time."""
    from scorer.artifact import ArtifactError
    from scorer.device import pick_device
    from scorer.methods import TrainSettings, load_model
    from scorer.train import train_model

    model_dir = demo_model_dir(settings.home, opts.category, opts.size)
    device = pick_device("auto")
    if (model_dir / "config.json").exists():
        try:
            model = load_model(model_dir, device)
            console.print(f"model    cached {model_dir} ({model.model_version})")
            return model
        except ArtifactError as exc:
            console.print(f"[yellow]cached model unusable ({exc}); training again[/]")
    data = Path(tempfile.mkdtemp(prefix="lw-demo-data-"))
    try:
        with Progress(
            TextColumn("simulating normal layers"), BarColumn(), TextColumn("{task.completed}"),
            TimeElapsedColumn(), console=console, transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("", total=opts.train_images)
            write_normal_layers(data, opts, lambda: bar.advance(task))
        console.print(
            f"training RADAR + geometry: {opts.train_steps} steps (at most "
            f"{opts.train_minutes:g} min) on {opts.train_images} normal layers"
        )
        result = train_model(
            data, model_dir, DEMO_METHOD,
            TrainSettings(max_minutes=opts.train_minutes, steps=opts.train_steps, seed=opts.seed),
            device="auto", console=console,
        )  # fmt: skip
    finally:
        shutil.rmtree(data, ignore_errors=True)
    console.print(f"model    trained in {result.seconds:.0f}s → {model_dir}")
    return result.method


# --------------------------------------------------------------------------- the run


def phase1_layers(opts: DemoOptions) -> int:
    """Phase I comes from the model's calibration (the product default); only if the model had
    none would the job's first layers serve: up to 20, ending at least 3 layers before the
    defect so that the charts are live when it starts."""
    return max(5, min(20, opts.defect_at - 3))


class DemoPrinter:
    """Where the monitor's stop goes, and whether the print still runs."""

    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts

    def policy_printers(self):
        from monitor.actions import PrinterConfig

        if self.opts.octoprint:
            return {PRINTER: PrinterConfig(kind="octoprint", url=self.opts.octoprint,
                                           api_key_env="LAYERWATCH_OCTOPRINT_API_KEY")}  # fmt: skip
        return {PRINTER: PrinterConfig(kind="builtin")}

    def printing(self) -> bool:
        if self.opts.octoprint:
            import httpx

            try:
                r = httpx.get(f"{self.opts.octoprint.rstrip('/')}/api/job", timeout=5,
                              headers={"X-Api-Key": self.opts.api_key or ""})  # fmt: skip
                return not r.json().get("state", "").startswith(("Paused", "Pausing"))
            except (httpx.HTTPError, ValueError):
                return True
        from monitor.actions.printers import BUILTIN_STATES

        return BUILTIN_STATES.get(PRINTER, "printing") == "printing"


def _stream(opts: DemoOptions, job: str, bootstrap: str, topics, settings, printer: DemoPrinter,
            sent: list[int], stop: threading.Event, captures: Path) -> None:  # fmt: skip
    """The camera: one simulated layer every ``interval`` s while the printer prints; it keeps
    each image in ``captures`` (the database keeps only scores and maps) for the report."""
    import cv2

    from ingest.messages import LayerMessage
    from ingest.producer import LayerProducer
    from ingest.simulate import DefectEvent, expected_outline, make_renderer, simulate_print
    from ingest.simulate.categories import resolve_category

    defect = DefectEvent(opts.defect, opts.defect_at, opts.severity)
    frames = simulate_print(opts.layers, [defect], seed=opts.seed, size=opts.size,
                            category=opts.category)  # fmt: skip
    # the slicer's view of the same job: each layer goes out with its expected outline
    designed = make_renderer(resolve_category(opts.category, "fdm"), opts.seed, opts.size,
                             opts.layers)  # fmt: skip
    with LayerProducer(bootstrap, settings.max_message_bytes, topics.layers) as producer:
        start = time.monotonic()
        for i, frame in enumerate(frames):
            if stop.wait(max(0.0, start + i * opts.interval - time.monotonic())):
                return
            if not printer.printing():
                return  # a paused printer prints no more layers
            cv2.imwrite(str(captures / f"{frame.layer:05d}.png"), frame.image)  # the camera's copy
            producer.send(LayerMessage.from_image(
                PRINTER, job, frame.layer, frame.image, z_mm=frame.z_mm,
                outline=expected_outline(designed, frame.layer),
            ))  # fmt: skip
            producer.flush()
            sent.append(frame.layer)


def _snapshot(engine, job: str) -> dict[str, Any]:
    with engine.connect() as conn:
        scores = conn.execute(text(
            "SELECT layer, score, anomalous, fired, e2e_latency_ms FROM scores WHERE job=:j "
            "ORDER BY layer"), {"j": job}).all()  # fmt: skip
        points = conn.execute(text(
            "SELECT layer, chart, statistic, ucl, signal FROM chart_points WHERE job=:j"),
            {"j": job}).all()  # fmt: skip
        alarms = conn.execute(text(
            "SELECT a.id, a.layer, a.chart, a.level, a.rule, a.channels, x.command, x.ok, x.result "
            "FROM alarms a LEFT JOIN LATERAL (SELECT command, ok, result FROM actions "
            "WHERE alarm_id = a.id ORDER BY attempt DESC LIMIT 1) x ON true "
            "WHERE a.job=:j ORDER BY a.layer, a.id"), {"j": job}).all()  # fmt: skip
    charts: dict[int, dict[str, Any]] = {}
    for p in points:
        charts.setdefault(p.layer, {})[p.chart] = p
    return {"scores": scores, "charts": charts, "alarms": alarms}


def _view(snap: dict[str, Any], opts: DemoOptions, sent: list[int], printer: DemoPrinter):
    t = Table(title=f"layers (defect from layer {opts.defect_at})", expand=False)
    for col in ("layer", "truth", "score", "model", "shewhart z", "ewma", "cusum", "alarm"):
        t.add_column(col, justify="right")
    alarm_at = {}
    for a in snap["alarms"]:
        alarm_at.setdefault(a.layer, []).append(f"{a.level}:{a.chart}")
    for s in snap["scores"][-14:]:
        c = snap["charts"].get(s.layer, {})

        def cell(name: str, c=c) -> str:
            p = c.get(name)
            if p is None:
                return "phase I" if not c else "-"
            mark = "[bold red]" if p.signal else ""
            return f"{mark}{p.statistic:6.2f}"

        t.add_row(
            str(s.layer), "[red]defect[/]" if s.layer >= opts.defect_at else "normal",
            f"{s.score:.3f}",
            f"[red]anomalous[/] {s.fired or ''}".rstrip() if s.anomalous else "ok",
            cell("shewhart"), cell("ewma"), cell("cusum"),
            "[bold red]" + " ".join(alarm_at.get(s.layer, [])) + "[/]",
        )  # fmt: skip
    state = "printing" if printer.printing() else "[bold red]PAUSED by LayerWatch[/]"
    head = f"printer {PRINTER}: {state} · layers sent {len(sent)}/{opts.layers}"
    return Group(head, t)


def _summary(snap, job: str, opts: DemoOptions, sent: list[int], model_version: str,
             report: str | None) -> Summary:  # fmt: skip
    alarms = snap["alarms"]
    stops = [a for a in alarms if a.level == "stop"]
    lat = np.array([s.e2e_latency_ms for s in snap["scores"] if s.e2e_latency_ms is not None])
    first_stop = stops[0] if stops else None
    return Summary(
        job=job, layers_planned=opts.layers, layers_sent=len(sent),
        layers_scored=len(snap["scores"]), onset_layer=opts.defect_at,
        first_alarm_layer=min((a.layer for a in alarms), default=None),
        first_stop_layer=first_stop.layer if first_stop else None,
        false_alarms=sum(1 for a in alarms if a.layer < opts.defect_at),
        stop_action=first_stop.command if first_stop else None,
        stop_result=(("ok: " if first_stop.ok else "failed: ") + (first_stop.result or ""))
        if first_stop and first_stop.command else None,
        latency_p50_ms=round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        latency_p95_ms=round(float(np.percentile(lat, 95)), 1) if lat.size else None,
        stop_channels=first_stop.channels if first_stop else None,
        model_version=model_version, report=report,
    )  # fmt: skip


def run_demo(settings: Settings, opts: DemoOptions, console: Console) -> int:
    """Run the demo; 0 when the defect was caught within 2 layers with no false alarm,
    2 when the pipeline ran but the detection missed that mark."""
    import os

    from layerwatch.core.embedded import resolve_endpoints, servers
    from layerwatch.core.kafka import ensure_configured_topics
    from monitor.alarms import AlarmPolicy, PolicySet, StartPolicy
    from monitor.service import MonitorConfig, MonitorService
    from scorer.service import ScorerService, ServiceConfig
    from storage import db

    console.rule("LayerWatch demo")
    kafka_srv, pg_srv = servers(settings)
    were_running = (kafka_srv.running() is not None, pg_srv.running() is not None)
    ep = resolve_endpoints(settings)
    console.print(f"kafka    {ep.kafka_bootstrap}\npostgres ready")
    db.upgrade(ep.database_admin_url)
    topics = settings.topics
    ensure_configured_topics(settings, ep.kafka_bootstrap)
    model = demo_model(settings, opts, console)
    if opts.api_key:
        os.environ["LAYERWATCH_OCTOPRINT_API_KEY"] = opts.api_key

    printer = DemoPrinter(opts)
    from monitor.actions.printers import BUILTIN_STATES

    BUILTIN_STATES[PRINTER] = "printing"
    scorer = ScorerService(model, ServiceConfig(
        bootstrap=ep.kafka_bootstrap, database_url=ep.database_url, topics=topics,
        max_image_pixels=settings.max_image_pixels, max_message_bytes=settings.max_message_bytes,
        batch_size=4, max_wait_ms=50, group=f"{opts.group_prefix}.scorer",
    ))  # fmt: skip
    monitor = MonitorService(MonitorConfig(
        bootstrap=ep.kafka_bootstrap, database_url=ep.database_url, topics=topics,
        policies=PolicySet(AlarmPolicy(start=StartPolicy(warmup_layers=DEMO_WARMUP_LAYERS))),
        printers=printer.policy_printers(), phase1="model",
        phase1_layers=phase1_layers(opts), max_wait_ms=50, group=f"{opts.group_prefix}.monitor",
    ))  # fmt: skip
    threads = [threading.Thread(target=s.run, daemon=True) for s in (scorer, monitor)]
    for th in threads:
        th.start()
    job = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    engine = db.make_engine(ep.database_url)
    captures = settings.home / "captures" / job
    captures.mkdir(parents=True, exist_ok=True)
    sent: list[int] = []
    stop = threading.Event()
    try:
        with console.status("scorer and monitor joining their consumer groups"):
            for svc in (scorer, monitor):
                if not svc.assigned.wait(60):
                    raise RuntimeError("a service did not join its consumer group in 60 s")
        console.print(f"job      {job}: {opts.layers} layers, {opts.defect} from layer "
                      f"{opts.defect_at}, one layer every {opts.interval:g}s")  # fmt: skip
        feeder = threading.Thread(
            target=_stream, args=(opts, job, ep.kafka_bootstrap, topics, settings, printer,
                                  sent, stop, captures), daemon=True,
        )  # fmt: skip
        feeder.start()
        with Live(console=console, refresh_per_second=4) as live:
            deadline = None
            while True:
                snap = _snapshot(engine, job)
                live.update(_view(snap, opts, sent, printer))
                done_feeding = not feeder.is_alive()
                uncharted = max(monitor.cfg.phase1_layers, DEMO_WARMUP_LAYERS)
                charted = set(snap["charts"]) | {
                    s.layer for s in snap["scores"] if s.layer < uncharted
                }
                if (
                    done_feeding
                    and set(sent) <= charted
                    and set(sent) <= {s.layer for s in snap["scores"]}
                ):
                    time.sleep(1.0)  # the last alarm's action
                    snap = _snapshot(engine, job)
                    live.update(_view(snap, opts, sent, printer))
                    break
                if done_feeding:
                    deadline = deadline or time.monotonic() + 120
                    if time.monotonic() > deadline:
                        console.print("[red]timed out waiting for the last layers[/]")
                        break
                time.sleep(0.25)
    finally:
        stop.set()
        for svc in (scorer, monitor):
            svc.stop_event.set()
        for th in threads:
            th.join(30)
        # each service closes its Kafka clients as its run ends, before the broker stops

    report_path = opts.report or settings.home / "reports" / f"{job}.html"
    try:
        from layerwatch.report.render import render_report

        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(
            render_report(ep.database_url, job, PRINTER, images=str(captures / "{layer:05d}.png")),
            encoding="utf-8",
        )
        report = str(report_path)
    except Exception as exc:  # the run itself succeeded; say why there is no report
        console.print(f"[yellow]report not written: {exc}[/]")
        report = None
    summary = _summary(snap, job, opts, sent, model.model_version, report)
    _print_summary(summary, console)
    if opts.summary:
        opts.summary.parent.mkdir(parents=True, exist_ok=True)
        opts.summary.write_text(json.dumps(summary.__dict__, indent=2))
        console.print(f"summary  {opts.summary}")
    if not opts.keep_servers:
        for srv, was in zip((kafka_srv, pg_srv), were_running, strict=True):
            if not was and srv.name == "kafka" and settings.uses_embedded_kafka:
                srv.stop()
            if not was and srv.name == "postgres" and settings.uses_embedded_database:
                srv.stop()
    return 0 if summary.detected_in_time else 2


def _print_summary(s: Summary, console: Console) -> None:
    t = Table(title="demo summary", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("job", s.job),
        ("layers sent / scored", f"{s.layers_sent} / {s.layers_scored} of {s.layers_planned}"),
        ("defect onset layer", str(s.onset_layer)),
        ("first alarm layer", str(s.first_alarm_layer)),
        ("first stop layer", str(s.first_stop_layer)),
        ("false alarms before onset", str(s.false_alarms)),
        ("stop action", f"{s.stop_action} → {s.stop_result}"),
        ("channels that fired behind the stop", s.stop_channels or "-"),
        ("latency p50 / p95 (capture → score stored)",
         f"{s.latency_p50_ms} ms / {s.latency_p95_ms} ms"),
        ("report", str(s.report)),
        ("verdict", "[green]caught within 2 layers, no false alarm[/]" if s.detected_in_time
         else "[red]missed the 2-layer / no-false-alarm mark[/]"),
    ]  # fmt: skip
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
