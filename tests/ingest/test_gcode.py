"""Outlines rendered from G-code: the shipped file (tests/data/fdm_grid_seed1.gcode, written by
ingest.simulate.gcode_writer from the simulator's job: a plate with holes) drawn through its
homography matches the simulator's designed section of the same layer."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ingest.gcode import GcodeError, GcodeOutlines, parse_gcode
from ingest.simulate import expected_outline, make_renderer
from ingest.simulate.categories import resolve_category

DATA = Path(__file__).resolve().parents[1] / "data"
GCODE = DATA / "fdm_grid_seed1.gcode"


def _job() -> tuple[dict, GcodeOutlines]:
    meta = json.loads((DATA / "fdm_grid_seed1.homography.json").read_text())
    return meta, GcodeOutlines.load(GCODE, meta["homography"])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("layer", [0, 5])
def test_shipped_gcode_outline_matches_the_simulated_part(layer: int) -> None:
    meta, outlines = _job()
    renderer = make_renderer(
        resolve_category(meta["category"], "fdm"), meta["seed"], meta["size"], meta["layers"]
    )
    want = expected_outline(renderer, layer)
    by_z = outlines.outline(meta["size"], meta["size"], z=renderer.job.z_mm(layer))
    by_number = outlines.outline(meta["size"], meta["size"], layer=layer)
    assert np.array_equal(by_z, by_number)
    assert _iou(by_z, want) >= 0.9
    # the plate's holes stay open, where the designed section has them
    contours, _ = cv2.findContours(by_z, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    holes = cv2.drawContours(np.zeros_like(by_z), contours, -1, 1, cv2.FILLED) & (1 - by_z)
    assert holes.sum() > 100 and (holes & want).sum() < 0.1 * holes.sum()
    assert by_z.dtype == np.uint8 and set(np.unique(by_z)) <= {0, 1}


def test_machine_state_relative_moves_and_travel() -> None:
    text = "\n".join([
        "G90", "M83", "G1 Z0.2", ";WIDTH:0.5",
        "G0 X10 Y10", "G1 X20 Y10 E0.5", "G1 X20 Y20 E0.5", "G1 X10 Y20 E0.5", "G1 X10 Y10 E0.5",
        "G0 X50 Y50",  # travel: no extrusion
        "G91", "G1 X5 E0.2", "G90",  # relative move with extrusion
        "G1 Z0.4", "M82", "G92 E0", "G1 X60 Y50 E1.0", "G1 X70 Y50 E1.0",  # E not growing
    ])  # fmt: skip
    layers = parse_gcode(text)
    assert [g.z for g in layers] == [0.2, 0.4]
    square, hop = layers[0].paths
    assert square.closed and square.signed_area() == pytest.approx(100.0)
    assert square.width == 0.5
    assert hop.points == [(50.0, 50.0), (55.0, 50.0)] and not hop.closed
    assert layers[1].paths[0].points == [(55.0, 50.0), (60.0, 50.0)]


def test_clear_errors(tmp_path: Path) -> None:
    _, outlines = _job()
    with pytest.raises(GcodeError, match=r"no layer at z = 9\.990 mm"):
        outlines.find(z=9.99)
    with pytest.raises(GcodeError, match=r"no layer 40 \(the file has 6\)"):
        outlines.find(layer=40)
    empty = tmp_path / "empty.gcode"
    empty.write_text("G28\nG1 X10 Y10\n")
    with pytest.raises(GcodeError, match=r"empty\.gcode: no extrusion moves"):
        GcodeOutlines.load(empty, np.eye(3))
    with pytest.raises(GcodeError, match="invertible 3x3"):
        GcodeOutlines.load(GCODE, np.zeros((3, 3)))
