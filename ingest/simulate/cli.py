"""``layerwatch simulate``: data sets, single prints and the defect gallery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import cv2
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .categories import CATEGORIES, resolve_category
from .dataset import save_png, write_dataset
from .defect_types import DefectEvent
from .defects import kinds_for
from .gallery import make_gallery
from .photos import DEFECTS as PHOTO_DEFECTS
from .photos import PHOTOS, write_photos
from .printjob import simulate_print

app = typer.Typer(
    help="Simulate FDM / LPBF layer images with defects and pixel-exact ground-truth masks.",
    no_args_is_help=True,
)
console = Console()

Process = Annotated[str | None, typer.Option(help="fdm or lpbf (default: the category's)")]
Size = Annotated[int, typer.Option(help="image side, pixels")]
Seed = Annotated[int, typer.Option(help="random seed; same seed, same bytes")]
Rgb = Annotated[bool, typer.Option("--rgb/--grey", help="colour or greyscale images")]


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _fail(err: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {err}")
    return typer.Exit(2)


@app.command()
def dataset(
    out: Annotated[Path, typer.Argument(help="data-set root; the category folder goes inside")],
    category: Annotated[str, typer.Option(help=f"one of {', '.join(CATEGORIES)}")],
    size: Size = 256,
    train: Annotated[int, typer.Option(help="normal training images")] = 200,
    test_good: Annotated[int, typer.Option(help="normal test images")] = 50,
    test_defect: Annotated[int, typer.Option(help="test images per defect kind")] = 20,
    seed: Seed = 0,
    process: Process = None,
    rgb: Rgb = False,
    reference: Annotated[
        bool,
        typer.Option(
            "--reference",
            help="also write each image's previous layer and expected outline under "
            "OUT/CATEGORY/reference/ (for the layer-aware radar-geometry method)",
        ),
    ] = False,
) -> None:
    """Write one category in the MVTec-AD layout: OUT/CATEGORY/{train,test,ground_truth}."""
    try:
        cat = resolve_category(category, process, strict=True)
    except ValueError as err:
        raise _fail(err) from None
    total = train + test_good + test_defect * len(kinds_for(cat))
    with _progress() as bar:
        task = bar.add_task(cat.name, total=total)
        summary = write_dataset(
            out,
            cat.name,
            cat.process,
            size,
            train,
            test_good,
            test_defect,
            seed,
            rgb,
            on_image=lambda _: bar.advance(task),
            reference=reference,
        )
    table = Table(title=str(summary["root"]), caption=f"{cat.process}, {size} px, seed {seed}")
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_row("train/good", str(summary["train_good"]))
    table.add_row("test/good", str(summary["test_good"]))
    for kind, n in summary["test_defect"].items():
        table.add_row(f"test/{kind}", str(n))
    console.print(table)


@app.command()
def photos(
    out: Annotated[Path, typer.Argument(help="data-set root; the category folder goes inside")],
    category: Annotated[
        str, typer.Option(help=f"photograph: {', '.join(PHOTOS)} (gravel is the granular one)")
    ],
    size: Annotated[int, typer.Option(help="crop side, pixels")] = 128,
    train: Annotated[int, typer.Option(help="normal training crops (train region)")] = 200,
    calibration: Annotated[
        int, typer.Option(help="normal calibration crops (calibration region)")
    ] = 40,
    test_good: Annotated[int, typer.Option(help="normal crops per test split")] = 40,
    test_defect: Annotated[int, typer.Option(help="crops per defect kind and test split")] = 8,
    seed: Seed = 0,
) -> None:
    """Real photographs (scikit-image's texture photos, no download): crops of disjoint regions
    for train / calibration / test / holdout (untouched), defects painted by seeded
    procedures with exact masks, in the MVTec-AD layout (see docs/photos.md)."""
    try:
        with _progress() as bar:
            task = bar.add_task(category, total=train + calibration + 2 * (
                test_good + test_defect * len(PHOTO_DEFECTS)))  # fmt: skip
            summary = write_photos(
                out, category, size, train, calibration, test_good, test_defect, seed,
                on_image=lambda _: bar.advance(task),
            )  # fmt: skip
    except (ValueError, FileNotFoundError) as err:
        raise _fail(err) from None
    table = Table(title=str(summary["root"]), caption=f"{summary['licence']}")
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_row("train/good", str(summary["train_good"]))
    table.add_row("calibration/good", str(summary["calibration_good"]))
    for base in ("test", "holdout/test"):
        table.add_row(f"{base}/good", str(summary["test_good"]))
        for kind, n in summary["test_defect"].items():
            table.add_row(f"{base}/{kind}", str(n))
    console.print(table)


@app.command("print")
def print_job(
    out: Annotated[Path, typer.Argument(help="folder for layer_NNNN.png, masks/ and manifest")],
    layers: Annotated[int, typer.Option(help="number of layers")],
    defect: Annotated[
        list[str] | None,
        typer.Option(help="KIND@LAYER[:SEVERITY], repeatable, e.g. crack@40:0.8"),
    ] = None,
    seed: Seed = 0,
    process: Process = None,
    category: Annotated[str | None, typer.Option(help="preset (default per process)")] = None,
    size: Size = 256,
    rgb: Rgb = False,
) -> None:
    """Write one print's layers in order, their masks and a manifest with the truth."""
    try:
        events = [DefectEvent.parse(d) for d in defect or []]
        cat = resolve_category(category, process, strict=True)
        frames = simulate_print(layers, events, seed, size, cat.process, cat.name, rgb)
    except ValueError as err:
        raise _fail(err) from None
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("layer_*.png"), *out.glob("masks/layer_*.png")]:
        stale.unlink()  # an earlier, longer run must not leave layers behind
    records = []
    with _progress() as bar:
        task = bar.add_task(f"{cat.name} seed {seed}", total=layers)
        for frame in frames:
            name = f"layer_{frame.layer:04d}.png"
            save_png(out / name, frame.image)
            rec = frame.truth | {"file": name, "mask": None}
            if frame.mask_area:
                rec["mask"] = f"masks/{name}"
                save_png(out / "masks" / name, frame.mask)
            records.append(rec)
            bar.advance(task)
    manifest = {
        "category": cat.name,
        "process": cat.process,
        "seed": seed,
        "size": size,
        "rgb": rgb,
        "layers": layers,
        "defects": [str(e) for e in events],
        "frames": records,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    flagged = sum(1 for r in records if r["mask"])
    console.print(f"wrote {layers} layers to {out} ({flagged} with defects), manifest.json")


@app.command()
def gallery(
    out: Annotated[Path, typer.Argument(help="PNG file to write")],
    process: Annotated[str, typer.Option(help="fdm, lpbf or all")] = "all",
    size: Size = 256,
    seed: Seed = 6,
    severity: Annotated[float, typer.Option(help="severity of every defect shown")] = 0.6,
    rgb: Rgb = False,
) -> None:
    """One picture: each process's normal layers, then every defect kind beside its mask."""
    try:
        img = make_gallery(process, size, seed, severity=severity, rgb=rgb)
    except ValueError as err:
        raise _fail(err) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), img)
    console.print(f"wrote {out} ({img.shape[1]}x{img.shape[0]})")


if __name__ == "__main__":
    app()
