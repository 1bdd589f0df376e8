"""``bench compare`` end to end on a tiny simulated category, plus its table arithmetic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from scorer.compare import METHODS, Row, add_speed_ratios, app, mean_rows, targets


def _row(method: str, category: str, f1: float, ips: float) -> Row:
    nan = float("nan")
    return Row(category, method, nan, nan, nan, f1, nan, nan, nan, nan, 1000 / ips, ips, 0.0, 1,
               1, "")  # fmt: skip


def test_ratios_means_and_targets() -> None:
    rows = [
        _row("radar", "a", 0.8, 20.0),
        _row("diffusionad", "a", 0.7, 10.0),
        _row("ddpm-recon", "a", 0.75, 1.0),
        _row("pca", "a", 0.5, 100.0),
        _row("radar", "b", 0.6, 10.0),
        _row("diffusionad", "b", 0.6, 10.0),
        _row("ddpm-recon", "b", 0.6, 2.0),
        _row("pca", "b", 0.6, 50.0),
    ]
    add_speed_ratios(rows)
    assert [r.speed_vs_radar for r in rows if r.category == "a"] == [1.0, 0.5, 0.05, 5.0]
    means = {r.method: r for r in mean_rows(rows)}
    assert means["radar"].f1 == pytest.approx(0.7)
    assert means["ddpm-recon"].speed_vs_radar == pytest.approx((0.05 + 0.2) / 2)
    goals = targets(list(means.values()))
    assert goals["F1 margin over diffusionad (≥ 0.05)"]["met"] is True  # 0.70 − 0.65
    assert goals["F1 margin over pca (≥ 0.05)"]["met"] is True  # 0.70 − 0.55
    assert goals["speed-up over ddpm-recon (≥ 10×)"]["value"] == pytest.approx(15 / 1.5)


@pytest.fixture()
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_compare_writes_table_and_png_for_every_method(
    tmp_path: Path, restore_threads: None
) -> None:
    out = tmp_path / "out"
    args = ["compare", str(tmp_path / "data"), "--categories", "fdm_grid", "--out", str(out),
            "--max-minutes", "0.5", "--size", "64", "--n-train", "8", "--n-test-good", "2",
            "--n-test-defect", "1", "--threads", "1"]  # fmt: skip
    for opt in ("width=8", "patch=32", "stride=16", "steps=4", "batch_size=4"):
        args += ["--option", opt]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    md = (out / "compare.md").read_text()
    assert "speed ÷ RADAR" in md
    lines = md.splitlines()
    head = next(line for line in lines if line.startswith("| category |")).strip("| ").split(" | ")
    table = {
        cells[1]: dict(zip(head, cells, strict=True))
        for cells in (line.strip("| ").split(" | ") for line in lines)
        if cells[0] == "fdm_grid"
    }
    assert sorted(table) == sorted(METHODS)
    assert table["radar"]["speed ÷ RADAR"] == "1.000"  # RADAR's own speed ratio
    # the speed ratio to ddpm-recon compares methods on one engine, and the record says which
    assert table["ddpm-recon"]["engine"] == table["radar"]["engine"] != ""
    assert table["diffusionad"]["engine"] == "eager"
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((out / "compare.json").read_text())
    assert {r["method"] for r in doc["rows"]} == set(METHODS)
    assert all((out / "models" / "fdm_grid" / m / "config.json").is_file() for m in METHODS)
