"""The design checked by simulation on a fitted level model, and on the real score streams.

The chart limits come from the i.i.d. N(0, 1) ARL machinery (monitor.design), which is exact
for the innovations of a correctly specified level model. What a plant needs to know is
whether its streams fit that model, and what it buys per print: this module runs the whole
monitor (the job's centre, the charts, the alarm tracker) on prints drawn from the fitted
model, in control and with a step, and on the given real prints, and reports the per-print
false-stop probability for N layers, the delay to a shift, and the innovations' own spread
and autocorrelation on the real streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monitor.alarms import AlarmPolicy
from monitor.calibration import Calibration
from monitor.design import ChartDesign
from monitor.engine import UNIT_SCORE, JobMonitor
from monitor.levels import LevelModel, innovations, simulate_levels

SHIFT_AT = 30  # layer of the simulated step


@dataclass(frozen=True)
class LevelDesignReport:
    layers: int
    runs: int
    cusum_k: float
    false_stop_prob: float  # P(a stop within `layers` layers of a normal print), simulated
    false_warn_prob: float
    shift: float  # the simulated step, in within-print s.d.
    shift_delay_mean: float | None  # layers from the step to the stop (runs stopped after it)
    shift_detected: float  # share of runs stopped at or after the step within `layers`
    real_prints: int = 0
    real_false_stops: int = 0
    real_innovation_sd: float | None = None
    real_innovation_lag1: float | None = None


def _first(monitor: JobMonitor, z: Sequence[float]) -> tuple[int | None, int | None]:
    """(first warn layer, first stop layer) of one print's z sequence (1-based layers)."""
    warn = stop = None
    for layer, value in enumerate(z, start=1):
        if value != value:
            continue
        for e in monitor.update(layer, float(value))[1]:
            if e.level == "stop" and stop is None:
                stop = layer
            elif e.level == "warn" and warn is None:
                warn = layer
        if stop is not None:
            break
    return warn, stop


def level_design_report(
    levels: LevelModel,
    design: ChartDesign,
    policy: AlarmPolicy | None = None,
    runs: int = 300,
    shift: float = 2.0,
    seed: int = 0,
    real: Sequence[Sequence[float]] = (),
) -> LevelDesignReport:
    """Simulate ``runs`` normal prints of ``design.layers`` layers and as many with a step of
    ``shift`` within-print s.d. at layer SHIFT_AT; run the real sequences ``real`` (values of
    the level model's statistic) too."""
    cal = Calibration(score=UNIT_SCORE, levels=levels)  # the values are the statistic itself
    design = design.model_copy(update={"levels": True})
    rng = np.random.default_rng(seed)

    def monitor() -> JobMonitor:
        return JobMonitor("design", "sim", design=design, policy=policy, calibration=cal)

    normal = simulate_levels(levels, runs, design.layers, rng)
    outcomes = [_first(monitor(), z) for z in normal]
    stepped = simulate_levels(levels, runs, design.layers, rng)
    stepped[:, SHIFT_AT - 1 :] += shift * levels.within_sd
    delays = []
    for z in stepped:
        _, stop = _first(monitor(), z)
        if stop is not None and stop >= SHIFT_AT:
            delays.append(stop - SHIFT_AT)
    report = LevelDesignReport(
        layers=design.layers,
        runs=runs,
        cusum_k=design.cusum_k,
        false_stop_prob=sum(s is not None for _, s in outcomes) / runs,
        false_warn_prob=sum(w is not None for w, _ in outcomes) / runs,
        shift=shift,
        shift_delay_mean=float(np.mean(delays)) if delays else None,
        shift_detected=len(delays) / runs,
    )
    if not real:
        return report
    width = max(len(z) for z in real)
    padded = np.full((len(real), width), np.nan)
    for i, z in enumerate(real):
        padded[i, : len(z)] = z
    r, _ = innovations(levels, padded)
    ok = np.isfinite(r)
    pairs = ok[:, 1:] & ok[:, :-1]
    lag1 = float(np.mean((r[:, 1:] * r[:, :-1])[pairs])) / float(np.var(r[ok]))
    stops = sum(_first(monitor(), z)[1] is not None for z in real)
    return LevelDesignReport(
        **{**report.__dict__, "real_prints": len(real), "real_false_stops": stops,
           "real_innovation_sd": float(np.std(r[ok])), "real_innovation_lag1": lag1},
    )  # fmt: skip
