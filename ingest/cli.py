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
GCODE = typer.Option(
    None, "--gcode", exists=True, dir_okay=False,
    help="G-code file of the print: each layer's expected outline is rendered from its "
    "extrusion moves at the layer's Z (or, without a Z, the layer number) into the camera "
    "frame through the setting gcode_homography, and sent with the layer.",
)  # fmt: skip
OUTLINE_MODES = ("auto", "required", "off")


def _gcode_outlines(path: Path | None):
    """The G-code file's layers with the configured homography, or None without --gcode."""
    if path is None:
        return None
    from ingest.gcode import GcodeError, GcodeOutlines
    from layerwatch.core.settings import get_settings

    h = get_settings().gcode_homography
    if h is None:
        raise typer.BadParameter(
            "needs the setting gcode_homography (bed mm -> camera px), e.g. "
            "LAYERWATCH_GCODE_HOMOGRAPHY='[[11.6,0,-1152],[0,11.6,-1152],[0,0,1]]'",
            param_hint="--gcode",
        )
    try:
        return GcodeOutlines.load(path, h)
    except GcodeError as exc:
        raise typer.BadParameter(str(exc), param_hint="--gcode") from exc


def _with_outline(msg: LayerMessage, make, *args, **kwargs) -> LayerMessage:
    """``msg`` with the outline ``make(*args, **kwargs)`` gives (a mask, or None); an outline
    that cannot be made is reported and the layer goes out without one (it is still scored,
    by texture)."""
    from ingest.gcode import GcodeError
    from ingest.outline import OutlineError

    try:
        mask = make(*args, **kwargs)
        return msg if mask is None else msg.with_outline(mask)
    except (OutlineError, GcodeError) as exc:
        console.print(
            f"[yellow]outline not sent:[/] {exc} (layer {msg.layer} sent without an outline)"
        )
        log.warning("outline not sent", extra={"layer": msg.layer, "error": str(exc)})
        return msg


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
    outlines: str = typer.Option(
        "auto",
        help="Expected outlines beside the images (layer_0042.png + "
        "layer_0042.outline.png, a 0/1 or 0/255 PNG mask of the image's size): auto = send one "
        "when it exists; required = also report a missing one; off = never.",
    ),
    gcode: Path | None = GCODE,
) -> None:
    """Watch DIRECTORY for layer images (PNG/JPEG) and send each complete file once, with its
    expected outline when there is one."""
    from ingest.sources.folder import FolderWatcher
    from layerwatch.core.settings import get_settings

    if outlines not in OUTLINE_MODES:
        raise typer.BadParameter(f"one of {', '.join(OUTLINE_MODES)}", param_hint="--outlines")
    from_gcode = _gcode_outlines(gcode)
    max_pixels = get_settings().max_image_pixels
    ledger = get_settings().home / "ingest" / f"{_safe(printer)}__{_safe(job)}.jsonl"
    watcher = FolderWatcher(directory, ledger, order=order, settle_s=settle, archive=archive)
    next_layer = first_layer + _ledger_count(ledger)

    with _producer() as (producer, stop):

        def send(f) -> None:
            nonlocal next_layer
            msg = _file_message(printer, job, next_layer, f.data)
            if outlines != "off":
                msg = _with_outline(msg, _file_outline, f.path, msg, outlines, max_pixels)
            if from_gcode is not None and msg.outline is None:
                msg = _with_outline(msg, from_gcode.outline, msg.width, msg.height, layer=msg.layer)
            producer.send(msg)
            producer.flush()  # durable before the ledger says "sent"
            console.print(f"layer {next_layer:5d}  {f.path.name}")
            next_layer += 1

        watcher.watch(send, once=once, stop=stop.is_set)


def _file_outline(image: Path, msg: LayerMessage, mode: str, max_pixels: int):
    """The outline file beside ``image`` as a mask, None when there is none (an error when
    ``mode`` is ``required``)."""
    from ingest.outline import OutlineError, outline_path, read_outline_file

    path = outline_path(image)
    if not path.exists():
        if mode == "required":
            raise OutlineError(f"{path}: missing (--outlines required)")
        return None
    return read_outline_file(path, msg.width, msg.height, max_pixels)


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
    outline: bool = typer.Option(
        True,
        "--outline/--no-outline",
        help="Send each layer's expected outline (the designed part section, without defects) "
        "with it, for layer-aware scoring.",
    ),
    gcode: Path | None = GCODE,
) -> None:
    """Stream a simulated print in real time, one layer every INTERVAL seconds."""
    from ingest.simulate import DefectEvent, expected_outline, make_renderer, simulate_print
    from ingest.simulate.categories import resolve_category

    try:
        events = [DefectEvent.parse(d) for d in defect]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--defect") from exc
    frames = simulate_print(
        layers, events, seed=seed, size=size, process=process, category=category
    )
    from_gcode = _gcode_outlines(gcode)
    designed = make_renderer(resolve_category(category, process), seed, size, layers)
    with _producer() as (producer, stop):
        start = time.monotonic()
        for i, frame in enumerate(frames):
            wait = start + i * interval - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            if stop.is_set():
                break
            msg = LayerMessage.from_image(printer, job, frame.layer, frame.image, z_mm=frame.z_mm)
            if from_gcode is not None:
                msg = _with_outline(msg, from_gcode.outline, msg.width, msg.height, z=frame.z_mm)
            elif outline:
                msg = _with_outline(msg, expected_outline, designed, frame.layer)
            producer.send(msg)
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
    gcode: Path | None = GCODE,
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
    from_gcode = _gcode_outlines(gcode)
    with _producer() as (producer, stop):
        for n, (layer, z, data) in enumerate(source.layers(stop)):
            msg = _file_message(printer, job, layer, data).with_z(z)
            if from_gcode is not None:
                msg = _with_outline(
                    msg, from_gcode.outline, msg.width, msg.height, layer=msg.layer, z=z
                )
            producer.send(msg)
            console.print(f"layer {layer:5d}  z={z if z is not None else float('nan'):6.2f} mm")
            if max_layers is not None and n + 1 >= max_layers:
                break
