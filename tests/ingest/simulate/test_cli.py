"""The simulate CLI commands on a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from ingest.simulate import kinds_for, write_dataset
from ingest.simulate.categories import CATEGORIES
from ingest.simulate.cli import app

runner = CliRunner()


def _read(path: Path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_dataset_writes_the_mvtec_layout(tmp_path: Path) -> None:
    args = ["dataset", str(tmp_path), "--category", "lpbf_powder", "--size", "64"]
    res = runner.invoke(app, [*args, "--train", "3", "--test-good", "2", "--test-defect", "1"])
    assert res.exit_code == 0, res.output
    root = tmp_path / "lpbf_powder"
    assert sorted(p.name for p in (root / "train" / "good").iterdir()) == [
        "000.png",
        "001.png",
        "002.png",
    ]
    assert len(list((root / "test" / "good").iterdir())) == 2
    for kind in kinds_for(CATEGORIES["lpbf_powder"]):
        img = _read(root / "test" / kind / "000.png")
        mask = _read(root / "ground_truth" / kind / "000_mask.png")
        assert img.shape == mask.shape == (64, 64)
        assert mask.max() == 255
    meta = json.loads((root / "simulation.json").read_text())
    assert meta["category"] == "lpbf_powder" and len(meta["images"]) == 3 + 2 + 5
    # rerunning replaces the category written before
    res = runner.invoke(app, [*args, "--train", "1", "--test-good", "1", "--test-defect", "1"])
    assert res.exit_code == 0, res.output
    assert len(list((root / "train" / "good").iterdir())) == 1


def test_dataset_with_reference_writes_previous_layers_and_outlines(tmp_path: Path) -> None:
    """--reference adds each image's previous layer (without a defect that starts on the
    image's layer) and its expected outline; the images and masks are those of a plain run."""
    base = ["dataset", "--category", "fdm_rectilinear", "--size", "64", "--train", "2"]
    counts = ["--test-good", "1", "--test-defect", "1"]
    plain, ref = tmp_path / "plain", tmp_path / "ref"
    assert runner.invoke(app, [base[0], str(plain), *base[1:], *counts]).exit_code == 0
    res = runner.invoke(app, [base[0], str(ref), *base[1:], *counts, "--reference"])
    assert res.exit_code == 0, res.output
    root, other = ref / "fdm_rectilinear", plain / "fdm_rectilinear"
    meta = json.loads((root / "simulation.json").read_text())
    assert meta["reference"] is True
    for rec in meta["images"]:
        img = _read(root / rec["file"])
        assert (img == _read(other / rec["file"])).all()  # same image as without --reference
        prev, outline = _read(root / rec["previous"]), _read(root / rec["outline"])
        assert prev.shape == outline.shape == img.shape
        assert set(np.unique(outline)) <= {0, 255} and outline.max() == 255
        assert not (prev == img).all()  # a different layer
        assert rec["previous"] == str(
            Path("reference") / Path(rec["file"]).parent / f"{Path(rec['file']).stem}_prev.png"
        )
        if "mask" in rec:
            assert (_read(root / rec["mask"]) == _read(other / rec["mask"])).all()
    # the previous layer of a defect image is the same job's layer without the defect: for a
    # layer shift it lines up with the outline, the image itself does not
    shift = next(r for r in meta["images"] if r.get("kind") == "layer_shift")
    from ingest.simulate import expected_outline, make_renderer, render_layer
    from ingest.simulate.categories import CATEGORIES as CATS

    renderer = make_renderer(CATS["fdm_rectilinear"], shift["job_seed"], 64, shift["layers"])
    clean_prev = render_layer(renderer, shift["layer"] - 1).image
    assert (clean_prev == _read(root / shift["previous"])).all()
    assert (
        expected_outline(renderer, shift["layer"]) * 255 == _read(root / shift["outline"])
    ).all()


def test_dataset_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "fdm_grid").mkdir()
    (tmp_path / "fdm_grid" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_dataset(tmp_path, "fdm_grid", size=64, n_train=1, n_test_good=0, n_test_defect=0)


def test_dataset_rejects_a_category_of_another_process(tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["dataset", str(tmp_path), "--category", "fdm_grid", "--process", "lpbf"]
    )
    assert res.exit_code == 2 and "lpbf" in res.output


def test_print_writes_layers_masks_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "job"
    res = runner.invoke(
        app,
        [
            "print",
            str(out),
            "--layers",
            "4",
            "--defect",
            "crack@2:0.8",
            "--defect",
            "spatter@1",
            "--process",
            "lpbf",
            "--size",
            "64",
            "--seed",
            "5",
        ],
    )
    assert res.exit_code != 0  # crack is an FDM defect
    res = runner.invoke(
        app,
        ["print", str(out), "--layers", "4", "--defect", "crack@2:0.8", "--size", "64"],
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("layer_*.png")) == [
        f"layer_{i:04d}.png" for i in range(4)
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["defects"] == ["crack@2:0.8"] and manifest["category"] == "fdm_rectilinear"
    frames = manifest["frames"]
    assert [f["layer"] for f in frames] == [0, 1, 2, 3]
    assert [f["mask"] is not None for f in frames] == [False, False, True, True]
    assert frames[2]["defects"][0]["kind"] == "crack" and frames[2]["mask_area"] > 0
    mask = _read(out / frames[3]["mask"])
    assert mask.shape == (64, 64) and (mask > 0).sum() == frames[3]["mask_area"]


def test_gallery_writes_one_labelled_picture(tmp_path: Path) -> None:
    out = tmp_path / "g.png"
    res = runner.invoke(app, ["gallery", str(out), "--process", "lpbf", "--size", "64"])
    assert res.exit_code == 0, res.output
    img = _read(out)
    assert img.ndim == 3 and img.shape[0] > 3 * 64 and img.shape[1] > 6 * 64
