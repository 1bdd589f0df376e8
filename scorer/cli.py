"""``train``, ``score`` and ``evaluate`` commands; ``register(app)`` adds them to a Typer app."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from layerwatch.core.settings import BACKEND_HELP, DEFAULT_MAX_PIXELS

# torch loads only when a command runs, so ``layerwatch --help`` stays fast.

console = Console()


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _options(pairs: list[str]) -> dict[str, object]:
    """``key=value`` pairs; values parsed as bool (true/false), int, float or left as strings."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected key=value, got {pair!r}")
        value: object = raw
        if raw.strip().lower() in ("true", "false"):
            out[key.strip()] = raw.strip().lower() == "true"
            continue
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        out[key.strip()] = value
    return out


def _device(device: str, backend: str | None):  # -> DeviceInfo (torch loads lazily)
    """The device and network engine from the options; a bad value is a usage error."""
    from scorer.device import pick_device

    try:
        return pick_device(device, backend)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


def export_cmd(
    model: Path = typer.Argument(..., help="RADAR model directory (from `train`)"),
    device: str = typer.Option("cpu", help="auto|cpu|cuda: where the check runs"),
) -> None:
    """Export the model's network to MODEL/model.onnx for the ONNX engines (onnxruntime,
    onnxruntime-int8, openvino, openvino-bf16). The file records the SHA-256 of the weights it
    was made from; loading refuses it for any other weights. Without it those engines export
    at load time."""
    from layerwatch.core.console import fail
    from scorer.artifact import ArtifactError
    from scorer.backends import EXPORT_FILE, make_backend, weights_sha256, write_export
    from scorer.methods import load_model

    try:
        m = load_model(model, _device(device, "eager"))
    except ArtifactError as exc:
        raise fail(str(exc)) from exc
    if not hasattr(m, "export_file"):
        raise fail(f"{model}: method {m.name!r} has no exportable network engine (RADAR has)")
    start = time.perf_counter()
    path = write_export(m.model, model / EXPORT_FILE, m.model_version)
    check = make_backend("onnxruntime", m.model, m.device, path, m.model_version)
    console.print(
        f"written {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)"
        f" for {m.model_version}, weights sha256 {weights_sha256(m.model)[:12]}; checked with "
        f"{check.name} against eager"
    )


def train_cmd(
    data: Path = typer.Argument(
        ..., help="MVTec category folder (uses train/good) or a folder of normal images"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="model directory to write"),
    method: str = typer.Option(
        "radar",
        help="scoring method: radar, radar-geometry (RADAR + the geometry channel; trains the "
        "geometry channel when DATA has references, see `simulate dataset --reference`), "
        "diffusionad, ddpm-recon, pca",
    ),
    max_minutes: float = typer.Option(10.0, help="wall-clock budget for training + calibration"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto|cpu|cuda"),
    width: int = typer.Option(16, help="U-Net base width"),
    channel_mults: str = typer.Option("1,2,2,2", help="U-Net channel multipliers"),
    attention: str = typer.Option("16,8", help="feature-map sizes with self-attention"),
    patch: int = typer.Option(64, help="patch size (pixels)"),
    stride: int = typer.Option(48, help="patch stride at inference"),
    steps: int = typer.Option(4000, help="maximum optimiser steps"),
    batch: int = typer.Option(32, help="patches per training step"),
    lr: float = typer.Option(1e-3),
    holdout: float = typer.Option(0.2, help="share of normal images kept for calibration"),
    t_candidates: str = typer.Option(
        "100",
        help="candidate t* values; with several, t* is chosen on the held-out normal images "
        "(RADAR: --option criterion=normal_peak|normal_spread|gaussianity)",
    ),
    rotations: bool = typer.Option(True, help="90° rotations in augmentation"),
    flips: bool = typer.Option(True, help="flips in augmentation"),
    option: list[str] = typer.Option(
        [],
        "--option",
        help="method option key=value (repeatable). RADAR, e.g.: draws=2, window=32, "
        "whiten=true|false, pixel_map=texture|lowpass|sobel, "
        "image_features=both|texture|residual, texture_scales=2+4+8, "
        "texture_statistics=residual+gradient+level, texture_bank=8192, texture_k=3, "
        "texture_search=ivf|exact, texture_cells=128, texture_probes=8, "
        "detector=tail|iforest, one_sided=true|false, contamination=0.02; before issue 23: "
        "pixel_map=lowpass image_features=residual; the paper's pipeline: whiten=false "
        "pixel_map=sobel image_features=residual detector=iforest one_sided=false draws=1 "
        "window=16",
    ),
) -> None:
    """Train a model on normal images and calibrate it on a held-out share."""
    from scorer.methods import TrainSettings, method_names
    from scorer.train import train_model

    if method not in method_names():
        raise typer.BadParameter(f"unknown method {method!r}; known: {method_names()}")
    settings = TrainSettings(
        seed=seed, max_minutes=max_minutes, steps=steps, batch_size=batch, width=width,
        channel_mults=_ints(channel_mults), attention_resolutions=_ints(attention), patch=patch,
        stride=stride, lr=lr, holdout=holdout, t_candidates=_ints(t_candidates),
        rotations=rotations, flips=flips, extra=_options(option),
    )  # fmt: skip
    result = train_model(data, out, method, settings, device, console)
    meta = getattr(result.method, "metadata", {})
    train_meta = meta.get("training", {})
    console.print(
        f"[green]model written to[/green] {result.model_dir} "
        f"(version {result.model_version}, {result.seconds / 60:.1f} min, "
        f"{train_meta.get('steps', '?')} steps, stopped by {train_meta.get('stopped_by', '?')}, "
        f"t* = {meta.get('t_selection', {}).get('chosen', '?')})"
    )
    if "geometry_channel" in meta:
        console.print(f"geometry channel: {meta['geometry_channel']}")


def score_cmd(
    model: Path = typer.Argument(..., help="model directory"),
    input_path: Path = typer.Argument(..., metavar="INPUT", help="image or folder (recursive)"),
    out: Path = typer.Option(..., "--out", "-o", help="results CSV"),
    maps: Path | None = typer.Option(None, "--maps", help="folder for .npy maps + PNG overlays"),
    device: str = typer.Option("auto", help="auto|cpu|cuda"),
    backend: str | None = typer.Option(
        None,
        help=BACKEND_HELP,
    ),
    batch_size: int = typer.Option(8, help="images per network batch"),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, help="refuse images larger than this"),
) -> None:
    """Score images with a trained model; one CSV row per image. Unreadable files are listed
    and skipped (exit code 1 at the end), the rest are scored."""
    from scorer.batch import score_paths
    from scorer.methods import load_model

    m = load_model(model, _device(device, backend))
    start = time.perf_counter()
    run = score_paths(m, input_path, out, maps, batch_size, max_pixels)
    console.print(f"scored {run.scored} images in {time.perf_counter() - start:.1f} s → {out}")
    if run.failed:
        for _path, why in run.failed:
            console.print(f"[red]not scored[/red] {why}", markup=True, highlight=False)
        console.print(f"[red]{len(run.failed)} file(s) not scored[/red] (listed above)")
        raise typer.Exit(1)


def evaluate_cmd(
    model: Path = typer.Argument(..., help="model directory"),
    category: Path = typer.Argument(..., help="MVTec-layout category folder"),
    json_out: Path | None = typer.Option(None, "--json", help="default MODEL/eval/CATEGORY.json"),
    png_out: Path | None = typer.Option(None, "--png", help="default MODEL/eval/CATEGORY.png"),
    device: str = typer.Option("auto", help="auto|cpu|cuda"),
    backend: str | None = typer.Option(
        None,
        help=BACKEND_HELP,
    ),
    batch_size: int = typer.Option(8, help="images per network batch"),
) -> None:
    """Image/pixel metrics at the model's own decision, throughput, a JSON and a PNG."""
    from scorer.evaluate import evaluate
    from scorer.methods import load_model

    m = load_model(model, _device(device, backend))
    name = Path(category).resolve().name
    json_out = json_out or model / "eval" / f"{name}.json"
    png_out = png_out or model / "eval" / f"{name}.png"
    report = evaluate(m, category, json_out, png_out, batch_size)
    table = Table(
        title=f"{report.method} on {name} ({report.n_good} good, {report.n_defect} defect)"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95 % bootstrap interval", justify="right")
    for key in (
        "image_auroc", "accuracy", "precision", "recall", "f1", "false_positive_rate",
        "pixel_auroc", "pro", "images_per_second", "latency_ms_mean",
    ):  # fmt: skip
        ci = report.ci95.get(key)
        table.add_row(key, f"{getattr(report, key):.4f}", f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "")
    console.print(table)
    console.print(f"written {json_out} and {png_out}")


def register(app: typer.Typer) -> None:
    """Add the scorer's top-level commands to the application."""
    app.command("train")(train_cmd)
    app.command("score")(score_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("export")(export_cmd)


if __name__ == "__main__":
    _app = typer.Typer(add_completion=False, no_args_is_help=True)
    register(_app)
    _app()
