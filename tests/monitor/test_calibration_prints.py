"""Simulated prints scored as the scorer service scores them: a layer-aware model gets each
layer's previous layer and expected outline, a plain model the images alone."""

from __future__ import annotations

import numpy as np

from ingest.simulate import DefectEvent, expected_outline, make_renderer, simulate_print
from ingest.simulate.categories import resolve_category
from monitor.calibration_prints import COLUMNS, score_simulated_print
from scorer.methods import ScoreResult


class _Recorder:
    """Scores each layer by its mean grey level and keeps what it was given."""

    def __init__(self, uses_references: bool) -> None:
        self.uses_references = uses_references
        self.images: list[np.ndarray] = []
        self.references: list = []

    def score_batch(self, images, references=None):
        self.images += list(images)
        self.references += list(references) if references is not None else [None] * len(images)
        return [
            ScoreResult(float(i.mean()), False, 1.0, 2.0, 0.0, 0, None, np.zeros(i.shape), 0.0)
            for i in images
        ]


def test_a_layer_aware_model_gets_the_previous_layer_and_the_outline_of_every_layer() -> None:
    model = _Recorder(uses_references=True)
    shift = DefectEvent("layer_shift", 4, 0.9)
    rows = score_simulated_print(
        model, 7, 6, size=64, category="fdm_grid", defects=[shift], batch=4
    )
    assert rows.shape == (6, len(COLUMNS))
    frames = list(simulate_print(6, [shift], seed=7, size=64, category="fdm_grid"))
    designed = make_renderer(resolve_category("fdm_grid", "fdm"), 7, 64, 6)
    assert [r.previous is None for r in model.references] == [True] + [False] * 5
    for i, ref in enumerate(model.references):
        np.testing.assert_array_equal(model.images[i], frames[i].image)
        if i:
            np.testing.assert_array_equal(ref.previous, frames[i - 1].image)
        np.testing.assert_array_equal(ref.outline, expected_outline(designed, i))
    np.testing.assert_allclose(rows[:, 0], [f.image.mean() for f in frames])


def test_a_plain_model_is_scored_on_the_images_alone() -> None:
    model = _Recorder(uses_references=False)
    rows = score_simulated_print(model, 7, 3, size=64, category="fdm_grid")
    assert rows.shape == (3, len(COLUMNS)) and model.references == [None] * 3
