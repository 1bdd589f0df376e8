"""Calibration pieces shared by every method: the stored in-control defect-cluster areas."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from scorer.artifact import ArtifactError
from scorer.calibration import cluster_areas, read_areas
from scorer.features import FeatureConfig


def test_cluster_areas_are_the_largest_kept_component_per_map() -> None:
    cfg = FeatureConfig()
    quiet = np.zeros((64, 64), np.float32)
    speckled = quiet.copy()
    speckled[5, 5] = speckled[40, 9] = 2.0  # single hot pixels: removed by the opening
    blobs = quiet.copy()
    cv2.circle(blobs, (20, 20), 6, 2.0, -1)  # the largest cluster
    cv2.rectangle(blobs, (45, 45), (50, 50), 2.0, -1)  # 36 px, smaller
    below = blobs * 0.4  # the same clusters under the threshold
    areas = cluster_areas([quiet, speckled, blobs, below], 1.0, cfg)
    disc = int(np.count_nonzero(cv2.circle(np.zeros((64, 64), np.uint8), (20, 20), 6, 1, -1)))
    assert areas[:2] == [0, 0] and areas[3] == 0
    assert abs(areas[2] - disc) <= 4  # the opening may trim the disc's rim by a pixel or so
    assert all(isinstance(a, int) for a in areas)


def test_read_areas_accepts_old_artifacts_and_rejects_garbage() -> None:
    where = Path("model/config.json")
    assert read_areas({}, where) == []  # stored before the areas were kept
    assert read_areas({"largest_areas": [0, 12, 300]}, where) == [0, 12, 300]
    for bad in ("12", [1.5], [True], [-3]):
        with pytest.raises(ArtifactError, match="largest_areas"):
            read_areas({"largest_areas": bad}, where)
