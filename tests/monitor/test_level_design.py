"""The job centre's memory as a design output (issue 20): a longer memory than the fitted one
is taken only when the normal wander lets it stay within the false-stop budget."""

from __future__ import annotations

import pytest

from monitor.design import ChartDesign
from monitor.level_design import design_memory
from monitor.levels import LevelModel

DESIGN = ChartDesign(layers=200, levels=True)


def test_a_slowly_wandering_level_gets_a_longer_memory_within_the_budget() -> None:
    fitted = LevelModel(m0=0.0, kappa0=0.3, a0=20.0, b0=19.0, discount=0.98)  # 50 layers
    choice = design_memory(fitted, DESIGN, runs=100, memories=(100, 200))
    by_memory = {round(r["memory"]): r for r in choice.candidates}
    assert choice.memory > choice.fitted_memory
    assert by_memory[round(choice.memory)]["false_stop_prob"] <= DESIGN.stop_false_alarm_prob
    chosen, kept = by_memory[round(choice.memory)], by_memory[round(choice.fitted_memory)]
    assert chosen["stopped_within_window"] >= kept["stopped_within_window"]
    assert choice.levels.memory == pytest.approx(choice.memory)
    # the rest of the fitted model is kept
    assert (choice.levels.m0, choice.levels.a0, choice.levels.b0) == (0.0, 20.0, 19.0)


def test_a_fast_wander_keeps_the_fitted_memory() -> None:
    """With the level wandering as fast as on the demo model's prints (memory about 6 layers),
    every longer memory stops normal prints far beyond the budget."""
    fitted = LevelModel(m0=0.0, kappa0=0.3, a0=4.0, b0=3.0, discount=0.83)
    choice = design_memory(fitted, DESIGN, runs=100, memories=(15, 30))
    assert choice.memory == choice.fitted_memory and choice.levels == fitted
    longer = [r for r in choice.candidates if r["memory"] > choice.fitted_memory]
    assert longer and all(r["false_stop_prob"] > DESIGN.stop_false_alarm_prob for r in longer)
