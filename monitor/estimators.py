"""Scale estimators for Phase I, shared by the calibration and the Individuals chart."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

D2 = 1.128  # E|X1 - X2| / sigma for normal data: the MR-to-sigma constant for n = 2
MAD_TO_SIGMA = 1.482602218505602


def mr_sigma(x: Sequence[float]) -> float:
    """sigma = MRbar/d2: insensitive to slow drifts in Phase I that inflate the plain s.d."""
    a = np.asarray(x, dtype=float)
    if a.size < 2:
        raise ValueError("the moving range needs at least 2 values")
    return float(np.abs(np.diff(a)).mean() / D2)


def mad_sigma(x: Sequence[float]) -> float:
    a = np.asarray(x, dtype=float)
    return float(MAD_TO_SIGMA * np.median(np.abs(a - np.median(a))))
