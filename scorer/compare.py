"""Accuracy/speed comparison of every scoring method on the same data with the same budget.

    layerwatch bench compare DATASET_ROOT [--categories a,b,c] [--max-minutes M] [--out DIR]

Each method trains through ``train_model`` (same normal images, same hold-out split, same
wall-clock budget, same U-Net settings), is reloaded from its artifact as a deployment would,
and is evaluated by ``scorer.evaluate`` at its own decision (thresholds from normal data only).
Speed is measured in the same process, one method after another, warm-up and loading excluded.
Missing categories are generated with the simulator.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from scorer.methods import TrainSettings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Benchmarks.")
console = Console()


@app.callback()
def _group() -> None:
    """Benchmarks (a group, so ``compare`` keeps its name even as the only command)."""


METHODS = ("radar", "diffusionad", "ddpm-recon", "pca")
REFERENCE = "radar"
DEFAULT_CATEGORIES = "fdm_rectilinear,fdm_grid,lpbf_fused"
# (key, Markdown header, format) of the table columns after category and method.
COLUMNS = (
    ("accuracy", "accuracy", "{:.3f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("f1", "F1", "{:.3f}"),
    ("image_auroc", "image AUROC", "{:.3f}"),
    ("pixel_auroc", "pixel AUROC", "{:.3f}"),
    ("ms_per_image", "ms/image", "{:.1f}"),
    ("images_per_second", "images/s", "{:.2f}"),
    ("speed_vs_radar", "speed ÷ RADAR", "{:.3f}"),
    ("train_seconds", "train s", "{:.0f}"),
    ("engine", "engine", "{}"),
)


@dataclass(frozen=True)
class DataSpec:
    """How to simulate a missing category."""

    size: int = 256
    n_train: int = 100
    n_test_good: int = 40
    n_test_defect: int = 5  # per defect kind
    seed: int = 0


@dataclass
class Row:
    """One method on one category."""

    category: str
    method: str
    accuracy: float
    precision: float
    recall: float
    f1: float
    image_auroc: float
    pixel_auroc: float
    pro: float
    false_positive_rate: float
    ms_per_image: float
    images_per_second: float
    train_seconds: float
    n_good: int
    n_defect: int
    model_version: str
    speed_vs_radar: float = float("nan")
    # The engine that ran the method's network: a speed ratio between methods on different
    # engines measures the engines too, so the record says which ran.
    engine: str = ""


def ensure_category(root: Path, category: str, spec: DataSpec) -> Path:
    """The category folder, simulated first when it has no train/good and test/ images."""
    path = root / category
    if (path / "train" / "good").is_dir() and (path / "test").is_dir():
        return path
    from rich.progress import Progress

    from ingest.simulate import CATEGORIES, kinds_for, write_dataset

    if category not in CATEGORIES:
        raise typer.BadParameter(f"{category!r} is neither in {root} nor a simulator category")
    total = (
        spec.n_train + spec.n_test_good + spec.n_test_defect * len(kinds_for(CATEGORIES[category]))
    )
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {category}", total=total)
        write_dataset(
            root,
            category,
            size=spec.size,
            n_train=spec.n_train,
            n_test_good=spec.n_test_good,
            n_test_defect=spec.n_test_defect,
            seed=spec.seed,
            on_image=lambda _: progress.advance(task),
        )
    return path


def add_speed_ratios(rows: list[Row]) -> None:
    """images/s of each method ÷ RADAR's images/s on the same category in the same run."""
    ref = {r.category: r.images_per_second for r in rows if r.method == REFERENCE}
    for r in rows:
        if r.category in ref:
            r.speed_vs_radar = r.images_per_second / ref[r.category]


def mean_rows(rows: list[Row]) -> list[Row]:
    """Per-method means over categories (the ratio is the mean of per-category ratios)."""
    import numpy as np

    out = []
    for method in dict.fromkeys(r.method for r in rows):
        sel = [r for r in rows if r.method == method]
        nums = {
            k: float(np.mean([getattr(r, k) for r in sel]))
            for k, v in asdict(sel[0]).items()
            if isinstance(v, float)
        }
        out.append(
            Row(
                category="mean",
                method=method,
                n_good=sum(r.n_good for r in sel),
                n_defect=sum(r.n_defect for r in sel),
                model_version="",
                engine=", ".join(dict.fromkeys(r.engine for r in sel)),
                **nums,
            )
        )
    return out


def targets(means: list[Row]) -> dict[str, dict[str, float | bool]]:
    """The issue's acceptance targets, computed from the measured means."""
    by = {r.method: r for r in means}
    if REFERENCE not in by:
        return {}
    radar = by[REFERENCE]
    out: dict[str, dict[str, float | bool]] = {}
    for other in ("diffusionad", "pca"):
        if other in by:
            margin = radar.f1 - by[other].f1
            out[f"F1 margin over {other} (≥ 0.05)"] = {"value": margin, "met": margin >= 0.05}
    if "ddpm-recon" in by:
        ratio = radar.images_per_second / by["ddpm-recon"].images_per_second
        out["speed-up over ddpm-recon (≥ 10×)"] = {"value": ratio, "met": ratio >= 10}
    if "diffusionad" in by:
        ratio = radar.ms_per_image / by["diffusionad"].ms_per_image
        out["latency ÷ DiffusionAD latency (≤ 1/0.6 = 1.667)"] = {
            "value": ratio,
            "met": ratio <= 1 / 0.6,
        }
    return out


def _cells(r: Row) -> list[str]:
    return [r.category, r.method] + [fmt.format(getattr(r, k)) for k, _, fmt in COLUMNS]


def markdown(rows: list[Row], means: list[Row], context: dict[str, Any]) -> str:
    head = ["category", "method"] + [h for _, h, _ in COLUMNS]
    lines = [
        "# Method comparison: accuracy and speed",
        "",
        "Written by `layerwatch bench compare`; every number below was measured in one run.",
        "",
        "Setup: " + ", ".join(f"{k} {v}" for k, v in context.items()) + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows + means]
    goals = targets(means)
    if goals:
        lines += ["", "## RADAR against the issue's targets (means over categories)", ""]
        lines += ["| target | measured | met |", "|---|---|---|"]
        lines += [
            f"| {name} | {g['value']:.3f} | {'yes' if g['met'] else 'no'} |"
            for name, g in goals.items()
        ]
    lines += [
        "",
        "Accuracy, precision, recall and F1 are at each method's own decision threshold, set on "
        "held-out normal training images only; AUROCs are threshold-free. `speed ÷ RADAR` is the "
        "method's images/s divided by RADAR's on the same category (above 1 = faster).",
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    """F1 and ms/image per category and method, grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cats = list(dict.fromkeys(r.category for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / max(len(methods), 1)
    for ax, key, label, log in (
        (axes[0], "f1", "F1 at own threshold", False),
        (axes[1], "image_auroc", "image AUROC", False),
        (axes[2], "ms_per_image", "ms per image (log)", True),
    ):
        for j, m in enumerate(methods):
            vals = [next((getattr(r, key) for r in rows if r.category == c and r.method == m), 0)
                    for c in cats]  # fmt: skip
            ax.bar(np.arange(len(cats)) + j * width, vals, width, label=m)
        ax.set_xticks(np.arange(len(cats)) + width * (len(methods) - 1) / 2)
        ax.set_xticklabels(cats, fontsize=8)
        ax.set_title(label)
        if log:
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(rows: list[Row], means: list[Row]) -> None:
    table = Table(title="method comparison")
    table.add_column("category")
    table.add_column("method")
    for _, head, _ in COLUMNS:
        table.add_column(head, justify="right")
    for r in rows + means:
        table.add_row(*_cells(r), end_section=r is rows[-1])
    console.print(table)
    for name, g in targets(means).items():
        console.print(f"{name}: {g['value']:.3f} → {'met' if g['met'] else '[red]not met[/red]'}")


def run_compare(
    root: Path,
    categories: list[str],
    methods: list[str],
    settings: TrainSettings,
    out: Path,
    spec: DataSpec,
    device: str = "cpu",
    batch_size: int = 8,
) -> list[Row]:
    """Train and evaluate every method on every category; returns the per-category rows."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from scorer.device import pick_device
    from scorer.evaluate import evaluate
    from scorer.methods import load_model
    from scorer.train import train_model

    paths = {c: ensure_category(root, c, spec) for c in categories}
    rows: list[Row] = []
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task("compare", total=len(categories) * len(methods))
        for cat in categories:
            for method in methods:
                progress.update(task, description=f"{cat}: training {method}")
                model_dir = out / "models" / cat / method
                result = train_model(paths[cat], model_dir, method, settings, device, console)
                progress.update(task, description=f"{cat}: evaluating {method}")
                model = load_model(model_dir, pick_device(device))
                rep = evaluate(
                    model, paths[cat], out / "eval" / cat / f"{method}.json", None, batch_size
                )
                rows.append(
                    Row(
                        category=cat,
                        method=method,
                        accuracy=rep.accuracy,
                        precision=rep.precision,
                        recall=rep.recall,
                        f1=rep.f1,
                        image_auroc=rep.image_auroc,
                        pixel_auroc=rep.pixel_auroc,
                        pro=rep.pro,
                        false_positive_rate=rep.false_positive_rate,
                        ms_per_image=rep.latency_ms_mean,
                        images_per_second=rep.images_per_second,
                        train_seconds=result.seconds,
                        n_good=rep.n_good,
                        n_defect=rep.n_defect,
                        model_version=rep.model_version,
                        # RADAR and ddpm-recon run on the scorer's engine (EngineMixin); the
                        # other methods' networks run in eager PyTorch.
                        engine=str(getattr(model, "engine", "eager")),
                    )
                )
                progress.advance(task)
    add_speed_ratios(rows)
    return rows


def write_outputs(rows: list[Row], out: Path, context: dict[str, Any]) -> list[Row]:
    """compare.md, compare.png and compare.json in ``out``; returns the mean rows."""
    means = mean_rows(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(markdown(rows, means, context))
    plot(rows, out / "compare.png")
    doc = {
        "context": context,
        "rows": [asdict(r) for r in rows],
        "means": [asdict(r) for r in means],
        "targets": targets(means),
    }
    (out / "compare.json").write_text(json.dumps(doc, indent=2))
    return means


@app.command("compare")
def compare(
    dataset_root: Path = typer.Argument(..., help="root holding CATEGORY/ folders (MVTec layout)"),
    categories: str = typer.Option(DEFAULT_CATEGORIES, help="comma-separated categories"),
    methods: str = typer.Option(",".join(METHODS), help="comma-separated registered methods"),
    max_minutes: float = typer.Option(3.0, help="training budget per method per category"),
    out: Path = typer.Option(Path("bench-out/compare"), "--out", help="output folder"),
    steps: int = typer.Option(4000, help="maximum optimiser steps (same for every method)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="auto|cpu|cuda"),
    threads: int = typer.Option(0, help="torch CPU threads (0 = torch's default)"),
    batch_size: int = typer.Option(8, help="images per scoring batch"),
    size: int = typer.Option(256, help="image size of simulated categories"),
    n_train: int = typer.Option(100, help="normal training images of simulated categories"),
    n_test_good: int = typer.Option(40, help="good test images of simulated categories"),
    n_test_defect: int = typer.Option(5, help="test images per defect kind (simulated)"),
    option: list[str] = typer.Option(
        [], "--option", help="TrainSettings field=value for every method (repeatable)"
    ),
) -> None:
    """Train and evaluate every method on the same categories, data and budget; write a
    Markdown table and a PNG (accuracy, precision, recall, F1, AUROCs, ms/image, speed ÷ RADAR,
    and the engine that ran each method's network)."""
    import torch

    from scorer.cli import _options
    from scorer.methods import TrainSettings, method_names

    if threads > 0:
        torch.set_num_threads(threads)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = sorted(set(names) - set(method_names()))
    if unknown:
        raise typer.BadParameter(f"unknown methods {unknown}; known: {method_names()}")
    cats = [c.strip() for c in categories.split(",") if c.strip()]
    settings = replace(
        TrainSettings(seed=seed, max_minutes=max_minutes, steps=steps, show_progress=False),
        **_options(option),
    )
    spec = DataSpec(size, n_train, n_test_good, n_test_defect, seed)
    load = os.getloadavg()[0]
    start = time.monotonic()
    rows = run_compare(dataset_root, cats, names, settings, out, spec, device, batch_size)
    context = {
        "device": device,
        "torch threads": torch.get_num_threads(),
        "training budget": f"{max_minutes:g} min per method per category",
        "max steps": settings.steps,
        "U-Net width": settings.width,
        "patch/stride": f"{settings.patch}/{settings.stride}",
        "scoring batch": batch_size,
        "load average at start/end": f"{load:.2f}/{os.getloadavg()[0]:.2f}",
        "wall time": f"{(time.monotonic() - start) / 60:.1f} min",
    }
    means = write_outputs(rows, out, context)
    print_table(rows, means)
    console.print(f"written {out / 'compare.md'}, {out / 'compare.png'}, {out / 'compare.json'}")
