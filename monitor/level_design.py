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
from dataclasses import dataclass, replace

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
    shift_delays: tuple[int, ...] = ()  # each of those runs' delay, layers
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
    monitor_levels: LevelModel | None = None,
) -> LevelDesignReport:
    """Simulate ``runs`` normal prints of ``design.layers`` layers and as many with a step of
    ``shift`` within-print s.d. at layer SHIFT_AT; run the real sequences ``real`` (values of
    the level model's statistic) too. The prints follow ``levels`` (the fit); the monitor's
    centre uses ``monitor_levels`` (default the same), e.g. with a longer memory."""
    cal = Calibration(score=UNIT_SCORE, levels=monitor_levels or levels)
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
        shift_delays=tuple(delays),
    )
    if not real:
        return report
    width = max(len(z) for z in real)
    padded = np.full((len(real), width), np.nan)
    for i, z in enumerate(real):
        padded[i, : len(z)] = z
    r, _ = innovations(monitor_levels or levels, padded)
    ok = np.isfinite(r)
    pairs = ok[:, 1:] & ok[:, :-1]
    lag1 = float(np.mean((r[:, 1:] * r[:, :-1])[pairs])) / float(np.var(r[ok]))
    stops = sum(_first(monitor(), z)[1] is not None for z in real)
    return LevelDesignReport(
        **{**report.__dict__, "real_prints": len(real), "real_false_stops": stops,
           "real_innovation_sd": float(np.std(r[ok])), "real_innovation_lag1": lag1},
    )  # fmt: skip


@dataclass(frozen=True)
class MemoryChoice:
    """The centre's memory chosen by design (``design_memory``), with what each candidate did."""

    levels: LevelModel  # the fitted model with the chosen discount
    fitted_memory: float
    memory: float
    shift: float
    window: int
    candidates: tuple[dict[str, float], ...]


def design_memory(
    levels: LevelModel,
    design: ChartDesign,
    policy: AlarmPolicy | None = None,
    shift: float = 2.0,
    window: int = 10,
    memories: Sequence[float] = (10, 15, 20, 30, 50),
    runs: int = 200,
    seed: int = 0,
) -> MemoryChoice:
    """The job centre's memory (1 / (1 − discount)), chosen for the shift that matters.

    The maximum-likelihood discount follows the normal level's wander, and that fast a centre
    also learns a step defect before a chart has seen enough of it (on the demo model's prints
    it remembered about 6 layers and missed mild layer shifts). A longer memory keeps a step in
    the innovations for longer but tracks the normal wander worse, which costs false stops. So
    the memory is a design output: prints are simulated from the fitted model (its own
    discount: how normal prints really wander) and judged by a centre with each candidate
    memory; among the candidates whose per-print false-stop probability over ``design.layers``
    stays within ``design.stop_false_alarm_prob``, the one that stops the most prints within
    ``window`` layers of a step of ``shift`` within-print s.d. wins (ties: the shorter memory).
    The fitted memory is always a candidate, and wins when no longer one is within budget."""
    fitted = levels.memory
    tried = sorted({fitted, *(m for m in memories if m > 1.01 * fitted)})
    rows: list[dict[str, float]] = []
    for memory in tried:
        monitor_levels = levels if memory == fitted else replace(levels, discount=1 - 1 / memory)
        rep = level_design_report(
            levels, design, policy, runs=runs, shift=shift, seed=seed,
            monitor_levels=monitor_levels,
        )  # fmt: skip
        in_window = sum(d < window for d in rep.shift_delays) / runs
        rows.append({"memory": memory, "false_stop_prob": rep.false_stop_prob,
                     "stopped_within_window": in_window})  # fmt: skip
    within = [r for r in rows if r["false_stop_prob"] <= design.stop_false_alarm_prob]
    chosen = (
        max(within, key=lambda r: (r["stopped_within_window"], -r["memory"]))["memory"]
        if within
        else fitted
    )
    out = levels if chosen == fitted else replace(levels, discount=1 - 1 / chosen)
    return MemoryChoice(out, fitted, chosen, shift, window, tuple(rows))
