"""The real-photograph data sets: disjoint regions, seeded defects with exact masks, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from ingest.simulate.cli import app
from ingest.simulate.photos import DEFECTS, PHOTOS, REGIONS, load_photo, plant, region, write_photos

runner = CliRunner()


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert img is not None, path
    return img


def test_photographs_ship_with_scikit_image() -> None:
    for name in PHOTOS:
        photo = load_photo(name)
        assert photo.shape == (512, 512) and photo.dtype == np.uint8 and photo.std() > 10
    with pytest.raises(ValueError, match="unknown photograph"):
        load_photo("moon-rock")


def test_regions_never_overlap_and_fit_a_crop() -> None:
    photo = load_photo("gravel")
    owner = np.zeros(photo.shape, np.int32)
    for i, name in enumerate(REGIONS, start=1):
        r0, r1, c0, c1 = REGIONS[name]
        view = owner[round(r0 * 512) : round(r1 * 512), round(c0 * 512) : round(c1 * 512)]
        assert (view == 0).all(), f"{name} overlaps another region"
        view[:] = i
        assert min(region(photo, name).shape) >= 128
    assert (owner > 0).all()  # the four regions tile the photograph


@pytest.mark.parametrize("kind", sorted(DEFECTS))
def test_each_defect_changes_its_mask_and_nothing_else(kind: str) -> None:
    photo = load_photo("gravel")
    donor = region(photo, "train").astype(np.float32)
    base = region(photo, "test")[:128, :128].copy()
    img, mask = plant(base, kind, np.random.default_rng(3), donor)
    again, mask2 = plant(base, kind, np.random.default_rng(3), donor)
    np.testing.assert_array_equal(img, again)  # seeded
    np.testing.assert_array_equal(mask, mask2)
    changed = img != base
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert 20 <= mask.sum() <= 0.2 * mask.size
    assert not changed[mask == 0].any(), "pixels outside the mask changed"
    assert changed[mask == 1].mean() > 0.5, "most of the mask must differ from the clean crop"


def test_write_photos_layout_determinism_and_masks(tmp_path: Path) -> None:
    kw = dict(size=64, n_train=3, n_calibration=2, n_test_good=2, n_test_defect=1, seed=4)
    a = write_photos(tmp_path / "a", "gravel", **kw)  # type: ignore[arg-type]
    write_photos(tmp_path / "b", "gravel", **kw)  # type: ignore[arg-type]
    root = Path(a["root"])
    assert "CC0" in a["licence"] and a["granular"]
    files = sorted(p.relative_to(root) for p in root.rglob("*.png"))
    assert len(files) == 3 + 2 + 2 * (2 + 2 * len(DEFECTS))  # images + masks, two test splits
    for rel in files:  # same seed, same bytes
        assert (root / rel).read_bytes() == (tmp_path / "b" / "gravel" / rel).read_bytes()
    for base in (root, root / "holdout"):
        for kind in DEFECTS:
            img = _read(base / "test" / kind / "000.png")
            mask = _read(base / "ground_truth" / kind / "000_mask.png")
            assert img.shape == mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
            assert mask.any()
    assert (root / "calibration" / "good" / "001.png").is_file()
    manifest = json.loads((root / "simulation.json").read_text())
    splits = {r["split"] for r in manifest["images"]}
    assert splits == {"train", "calibration", "test", "holdout"}
    # the tuning and the holdout test crops differ (other region, other draws)
    t = _read(root / "test" / "good" / "000.png")
    h = _read(root / "holdout" / "test" / "good" / "000.png")
    assert not np.array_equal(t, h)


def test_cli_writes_a_category_and_rejects_an_unknown_one(tmp_path: Path) -> None:
    args = ["photos", str(tmp_path), "--category", "brick", "--size", "64", "--train", "2"]
    res = runner.invoke(
        app, [*args, "--calibration", "2", "--test-good", "1", "--test-defect", "1"]
    )
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "brick" / "train" / "good").iterdir())) == 2
    bad = runner.invoke(app, ["photos", str(tmp_path), "--category", "marble"])
    assert bad.exit_code == 2 and "unknown photograph" in bad.output
