"""The train / score / evaluate commands and the evaluation metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from scorer.batch import CSV_COLUMNS, map_name
from scorer.cli import register
from scorer.device import pick_device
from scorer.evaluate import bootstrap_ci, evaluate, pro_auc
from scorer.methods import TrainSettings, load_model
from scorer.train import split_holdout
from scorer.training_loop import PatchSampler

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()
    register(a)
    return a


TINY = [
    "--width", "8", "--channel-mults", "1,2", "--attention", "8", "--patch", "16",
    "--stride", "8", "--steps", "20", "--batch", "8", "--t-candidates", "100",
]  # fmt: skip


def test_train_score_evaluate_commands(app: typer.Typer, category: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    res = runner.invoke(
        app, ["train", str(category), "--out", str(model), "--device", "cpu", *TINY]
    )
    assert res.exit_code == 0, res.output
    assert "model written to" in res.output and (model / "model.safetensors").is_file()
    doc = json.loads((model / "config.json").read_text())
    assert doc["training"]["n_train_images"] + doc["training"]["n_calibration_images"] == 14

    out_csv, maps = tmp_path / "r.csv", tmp_path / "maps"
    test_dir = category / "test"
    res = runner.invoke(
        app, ["score", str(model), str(test_dir), "--out", str(out_csv), "--maps", str(maps)]
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out_csv.open()))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 8
    assert rows[0]["path"] == str(test_dir / "blob" / "000.png")
    assert {r["anomalous"] for r in rows} <= {"0", "1"}
    amap = np.load(maps / "blob__000.npy")
    assert amap.shape == (32, 32) and amap.dtype == np.float32
    assert (maps / "blob__000.png").is_file() and (maps / "good__003.npy").is_file()

    one = tmp_path / "one.csv"
    single = test_dir / "good" / "001.png"
    res = runner.invoke(
        app, ["score", str(model), str(single), "--out", str(one), "--maps", str(maps)]
    )
    assert res.exit_code == 0, res.output
    assert next(csv.DictReader(one.open()))["path"] == str(single)
    assert (maps / "001.npy").is_file()

    res = runner.invoke(app, ["evaluate", str(model), str(category)])
    assert res.exit_code == 0, res.output
    report = json.loads((model / "eval" / "stripes.json").read_text())
    assert (model / "eval" / "stripes.png").stat().st_size > 1000
    for key in ("image_auroc", "f1", "pixel_auroc", "pro", "images_per_second"):
        assert key in report and key in res.output
    assert report["n_good"] == 4 and report["n_defect"] == 4


def test_score_reports_artifact_errors(app: typer.Typer, tmp_path: Path) -> None:
    res = runner.invoke(app, ["score", str(tmp_path / "nope"), str(tmp_path), "--out", "x.csv"])
    assert res.exit_code != 0 and "does not exist" in str(res.exception)


def test_evaluate_metrics_on_the_tiny_model(
    tiny_model_dir: Path, category: Path, tmp_path: Path
) -> None:
    model = load_model(tiny_model_dir, pick_device("cpu"))
    report = evaluate(model, category, tmp_path / "e.json", tmp_path / "e.png", batch_size=3)
    assert 0.0 <= report.image_auroc <= 1.0 and 0.0 <= report.pixel_auroc <= 1.0
    assert report.image_auroc >= 0.75  # blobs are blatant
    assert report.images_per_second > 0 and report.per_kind["blob"]["n"] == 4
    # one defect kind: its AUROC against the good images is the overall one
    assert report.per_kind["blob"]["image_auroc"] == report.image_auroc
    assert np.isnan(report.per_kind["good"]["image_auroc"])
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["category"] == str(category)
    lo, hi = saved["ci95"]["image_auroc"]
    assert lo <= report.image_auroc <= hi


def test_bootstrap_intervals() -> None:
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(40, int), np.zeros(60, int)]
    separated = bootstrap_ci(y, y + 0.1 * rng.random(100), y)
    assert np.allclose([*separated["image_auroc"], *separated["f1"]], 1.0)
    noise = rng.random(100)
    ci = bootstrap_ci(y, noise, (noise > 0.5).astype(int))
    lo, hi = ci["image_auroc"]
    assert lo < 0.5 < hi and hi - lo > 0.1  # chance, and 100 images cannot pin it down
    assert ci["f1"][0] < ci["f1"][1]
    assert bootstrap_ci(np.zeros(5, int), noise[:5], np.zeros(5, int)) == {}


def test_pro_perfect_random_and_empty() -> None:
    rng = np.random.default_rng(0)
    masks = [np.zeros((32, 32), bool) for _ in range(3)]
    masks[0][4:10, 4:10] = True
    masks[1][20:30, 2:6] = True
    perfect = [m.astype(np.float32) + 0.01 * rng.random(m.shape) for m in masks]
    assert pro_auc(perfect, masks) == pytest.approx(1.0, abs=1e-3)
    noise = [rng.random(m.shape).astype(np.float32) for m in masks]
    assert 0.05 < pro_auc(noise, masks) < 0.3  # random ≈ FPR averaged over [0, 0.3] = 0.15
    assert np.isnan(pro_auc(noise, [np.zeros_like(m) for m in masks]))


def test_map_names() -> None:
    root = Path("/data/in")
    assert map_name(root / "crack" / "003.png", Path("/")) == "data__in__crack__003"
    assert map_name(Path("/x/y.png"), Path("/x/y.png")) == "y"


def test_split_and_sampler(make_texture) -> None:
    paths = [Path(f"{i}.png") for i in range(10)]
    train, cal = split_holdout(paths, 0.2, seed=1)
    assert (
        len(cal) == 2 and not set(train) & set(cal) and split_holdout(paths, 0.2, 1) == (train, cal)
    )
    rng = np.random.default_rng(0)
    images = [make_texture(rng) for _ in range(3)]
    import torch

    s = PatchSampler(images, 1, 16, TrainSettings(jitter=0.1), torch.Generator().manual_seed(0))
    batch = s.sample(12)
    assert batch.shape == (12, 1, 16, 16) and batch.min() >= -1 and batch.max() <= 1
    s2 = PatchSampler(images, 1, 16, TrainSettings(jitter=0.1), torch.Generator().manual_seed(0))
    assert torch.equal(s2.sample(12), batch)


def test_score_skips_bad_files_and_mixed_sizes(
    app: typer.Typer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import cv2

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 255, (32, 32), dtype=np.uint8))
    cv2.imwrite(str(folder / "c.png"), rng.integers(0, 255, (48, 40), dtype=np.uint8))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "r.csv"
    res = runner.invoke(app, ["score", str(tiny_model_dir), str(folder), "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "b.png" in res.output and "1 file(s) not scored" in res.output
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["path"]).name for r in rows] == ["a.png", "c.png"]  # the rest went on
    assert all(float(r["score"]) == float(r["score"]) for r in rows)
