"""`layerwatch ingest ...`: sources → topic ``layerwatch.layers`` (keyed by printer id)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import typer

from ingest.messages import JPEG, PNG, LayerMessage
from ingest.producer import LayerProducer, ProduceError
from layerwatch.core.console import console

app = typer.Typer(help="Send layer images to Kafka from a folder, a simulator or a webcam.")
log = logging.getLogger(__name__)

PRINTER = typer.Option(..., "--printer", "-p", help="Printer id (the Kafka key).")
JOB = typer.Option(..., "--job", "-j", help="Print job id.")


@contextmanager
def _producer() -> Iterator[tuple[LayerProducer, threading.Event]]:
    """A producer on the configured (or embedded) broker, and a stop flag set by SIGTERM/^C."""
    from layerwatch.core.console import endpoints
    from layerwatch.core.kafka import ensure_configured_topics
    from layerwatch.core.settings import get_settings

    s = get_settings()
    ep = endpoints()
    ensure_configured_topics(s, ep.kafka_bootstrap)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    producer = LayerProducer(ep.kafka_bootstrap, s.max_message_bytes, s.topics.layers)
    try:
        yield producer, stop
        producer.flush()  # waits through a broker restart (up to 5 min), resending what it must
    except ProduceError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    finally:
        st = producer.stats
        renewed = f" (producer replaced {st.renewals}x: broker restarts)" if st.renewals else ""
        console.print(
            f"sent {st.sent} layer(s), confirmed {st.confirmed} by {ep.kafka_bootstrap}{renewed}"
        )
        producer.shutdown()


@app.command("folder")
def folder(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="Watched folder."),
    printer: str = PRINTER,
    job: str = JOB,
    order: str = typer.Option("name", help="Layer order: name | mtime."),
    first_layer: int = typer.Option(0, help="Layer index of the first file sent."),
    settle: float = typer.Option(1.0, help="Seconds a file must stay unchanged before sending."),
    archive: Path | None = typer.Option(None, help="Move sent files here."),
    once: bool = typer.Option(False, "--once", help="Send what is there, then exit."),
) -> None:
    """Watch DIRECTORY for layer images (PNG/JPEG) and send each complete file once."""
    from ingest.sources.folder import FolderWatcher
    from layerwatch.core.settings import get_settings

    ledger = get_settings().home / "ingest" / f"{_safe(printer)}__{_safe(job)}.jsonl"
    watcher = FolderWatcher(directory, ledger, order=order, settle_s=settle, archive=archive)
    next_layer = first_layer + _ledger_count(ledger)

    with _producer() as (producer, stop):

        def send(f) -> None:
            nonlocal next_layer
            msg = _file_message(printer, job, next_layer, f.data)
            producer.send(msg)
            producer.flush()  # durable before the ledger says "sent"
            console.print(f"layer {next_layer:5d}  {f.path.name}")
            next_layer += 1

        watcher.watch(send, once=once, stop=stop.is_set)


def _ledger_count(ledger: Path) -> int:
    return (
        sum(1 for line in ledger.read_text().splitlines() if line.strip()) if ledger.exists() else 0
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _file_message(printer: str, job: str, layer: int, data: bytes) -> LayerMessage:
    """Send the file's bytes as they are (no re-encoding). A file that is not a readable image
    still goes out, sized 1×1 in its headers, so the scorer dead-letters it with the reason."""
    from ingest.images import ImageError, image_size

    try:
        w, h = image_size(data)
    except ImageError:
        w, h = 1, 1
    ctype = JPEG if data[:2] == b"\xff\xd8" else PNG
    return LayerMessage(
        printer=printer, job=job, layer=layer, payload=data, width=w, height=h,
        channels=1, content_type=ctype, captured_at=datetime.now(UTC),
    )  # fmt: skip


@app.command("simulate")
def simulate(
    printer: str = PRINTER,
    job: str = JOB,
    layers: int = typer.Option(60, min=1, help="Layers in the print."),
    defect: list[str] = typer.Option([], help="KIND@LAYER[:severity], repeatable."),
    interval: float = typer.Option(1.0, min=0.0, help="Seconds between layers (0 = at once)."),
    process: str = typer.Option("fdm", help="fdm | lpbf."),
    category: str | None = typer.Option(None, help="Simulator category preset."),
    size: int = typer.Option(256, help="Image size in pixels."),
    seed: int = typer.Option(0, help="Random seed of the print."),
) -> None:
    """Stream a simulated print in real time, one layer every INTERVAL seconds."""
    from ingest.simulate import DefectEvent, simulate_print

    try:
        events = [DefectEvent.parse(d) for d in defect]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--defect") from exc
    frames = simulate_print(
        layers, events, seed=seed, size=size, process=process, category=category
    )
    with _producer() as (producer, stop):
        start = time.monotonic()
        for i, frame in enumerate(frames):
            wait = start + i * interval - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            if stop.is_set():
                break
            producer.send(
                LayerMessage.from_image(printer, job, frame.layer, frame.image, z_mm=frame.z_mm)
            )
            tag = ", ".join(d["kind"] for d in frame.defects) or "normal"
            console.print(f"layer {frame.layer:5d}  z={frame.z_mm:6.2f} mm  {tag}")


@app.command("http")
def http(
    url: str = typer.Argument(..., help="Snapshot URL of the webcam (returns a JPEG/PNG)."),
    printer: str = PRINTER,
    job: str = JOB,
    octoprint: str | None = typer.Option(None, help="OctoPrint base URL: snapshot on Z change."),
    api_key: str | None = typer.Option(
        None, envvar="LAYERWATCH_OCTOPRINT_API_KEY", help="OctoPrint API key (or env)."
    ),
    interval: float = typer.Option(2.0, help="Poll period; without --octoprint, snapshot period."),
    max_layers: int | None = typer.Option(None, help="Stop after this many layers."),
) -> None:
    """Take a webcam snapshot each time the printer starts a new layer (OctoPrint), or every
    INTERVAL seconds without a printer link."""
    from ingest.sources.snapshot import IntervalTrigger, OctoPrintLayerTrigger, SnapshotSource

    if octoprint and not api_key:
        raise typer.BadParameter("needs --api-key or LAYERWATCH_OCTOPRINT_API_KEY", "--api-key")
    trigger = (
        OctoPrintLayerTrigger(octoprint, api_key or "", interval)
        if octoprint
        else IntervalTrigger(interval)
    )
    source = SnapshotSource(url, trigger)
    with _producer() as (producer, stop):
        for n, (layer, z, data) in enumerate(source.layers(stop)):
            producer.send(_file_message(printer, job, layer, data).with_z(z))
            console.print(f"layer {layer:5d}  z={z if z is not None else float('nan'):6.2f} mm")
            if max_layers is not None and n + 1 >= max_layers:
                break
