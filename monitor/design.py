"""Chart design from a false-alarm budget per build instead of a bare 3-sigma.

Two levels, each with its own budget: *stop* criteria (they pause or cancel a print, so false
alarms are costly; default P(false stop per 1000-layer build) = 0.05, ARL0 ≈ 19,500) and *warn*
charts (dashboard warnings; default 0.2). A level's build ARL0 is Šidák-split across its charts
(treating them as independent, which is conservative for charts on the same scores), then each
chart's limit is solved for its share: closed forms for Shewhart, T², consecutive points and the
cluster chart (alpha = 1/ARL0), Markov chains for EWMA, CUSUM and MEWMA, simulation for the
river detectors. Run rules cannot meet a low false-alarm budget (WE 1-4 has ARL0 92), so they
stay outside it: the report shows what they cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor import arl
from monitor.charts import CusumKernel, IndividualsKernel, Kernel, MewmaKernel, SelfStartKernel
from monitor.drift import DriftChart, calibrate_adwin, calibrate_page_hinkley

WarnChart = Literal[
    "shewhart", "ewma", "cusum", "selfstart", "mewma", "t2", "cluster", "adwin", "pagehinkley"
]
StopCriterion = Literal["cusum", "cluster", "consecutive"]
# MEWMA is available but not a default: on real score streams (autocorrelated features, a part
# that sits a little off the calibration mix) its in-control ARL was far below design. Measured
# on 8 normal simulated 60-layer prints with the demo model and Phase I from the model: MEWMA
# warned in 4 of them within 45 layers, T² on the same features in none.
DEFAULT_WARN: tuple[WarnChart, ...] = ("shewhart", "ewma", "cusum", "t2", "cluster")
DEFAULT_STOP: tuple[StopCriterion, ...] = ("cusum", "cluster", "consecutive")
DELTAS = (0.5, 1.0, 2.0, 3.0)
LEVEL_SHIFT = 1.0  # the shift that matters on a level model's innovations, in their sigma
STATIC_SHIFT = 3.0  # ... on z against the population's centre (between-print spread included)
ArlFn = Callable[[float], "float | None"]


@dataclass(frozen=True)
class DesignLimits:
    """Numbers the charts use. Warn values are solved even for charts only used at stop level
    (cheap), so every chart has a limit; drift thresholds only when those charts are in use."""

    warn_charts: tuple[str, ...]
    stop_criteria: tuple[str, ...]
    warn_build_arl0: float
    stop_build_arl0: float
    warn_chart_arl0: float
    stop_chart_arl0: float
    shewhart_L: float
    ewma_L: float
    cusum_h: float
    mewma_h: float
    t2_ucl: float
    cluster_alpha: float
    cusum_h_stop: float
    cluster_alpha_stop: float
    consecutive_L: float
    consecutive_k: int
    pagehinkley_threshold: float | None = None
    adwin_delta: float | None = None


@dataclass(frozen=True)
class DesignRow:
    chart: str
    level: str
    limit: str
    arl0: float | None
    shifted: dict[float, float | None] = field(default_factory=dict)
    method: str = ""


class ChartDesign(BaseModel):
    """Design inputs. ``*_arl0`` override the per-build budgets when given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: int = Field(1000, gt=0, description="layers per build: the false-alarm horizon")
    stop_false_alarm_prob: float = Field(0.05, gt=0, lt=1)
    warn_false_alarm_prob: float = Field(0.2, gt=0, lt=1)
    stop_arl0: float | None = Field(None, gt=1)
    warn_arl0: float | None = Field(None, gt=1)
    lam: float = Field(0.2, gt=0, le=1, description="EWMA smoothing")
    # CUSUM reference value: half the shift that matters (``shift``), in sigma of the charted
    # statistic, unless given. With a level model (the job's own centre, Phase I from several
    # layers of each of several prints) the charts see i.i.d. innovations and the shift that
    # matters is 1 sigma of them: k = 0.5. Without one, the charts see z against the
    # population's centre, whose sigma includes the print-to-print spread (a whole normal print
    # can sit 1 sigma above the mean, and k = 0.5 accumulates that offset); there the shift that
    # matters is 3 sigma, k = 1.5. Measured without a level model (bench.false_stops, demo
    # model, 16 normal + 14 defective simulated prints): k = 0.5 stopped 9 normal prints,
    # k = 1.5 one, and caught as many defects (12 of 14).
    k: float | None = Field(None, ge=0, description="CUSUM reference value; default shift/2")
    shift: float | None = Field(
        None,
        gt=0,
        description="the shift that matters, in sigma (default 1 with a level model, 3 without)",
    )
    levels: bool = Field(False, description="the charts run on innovations of a level model")
    fir: bool = False
    mewma_lam: float = Field(0.1, gt=0, le=1)
    n_features: int = Field(2, ge=1)
    consecutive_k: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _stop_stricter(self) -> ChartDesign:
        if self.build_arl0("stop") < self.build_arl0("warn"):
            raise ValueError("the stop budget must be stricter (larger ARL0) than the warn budget")
        return self

    @property
    def cusum_k(self) -> float:
        """The CUSUM reference value in force: ``k``, else half the shift that matters."""
        if self.k is not None:
            return self.k
        return (self.shift or (LEVEL_SHIFT if self.levels else STATIC_SHIFT)) / 2

    def build_arl0(self, level: Literal["warn", "stop"]) -> float:
        override = self.stop_arl0 if level == "stop" else self.warn_arl0
        if override is not None:
            return override
        p = self.stop_false_alarm_prob if level == "stop" else self.warn_false_alarm_prob
        return arl.arl0_for_false_alarm_prob(self.layers, p)

    def solve(
        self,
        warn_charts: tuple[str, ...] = DEFAULT_WARN,
        stop_criteria: tuple[str, ...] = DEFAULT_STOP,
    ) -> DesignLimits:
        return _solve(self, tuple(warn_charts), tuple(stop_criteria))

    def report(
        self, limits: DesignLimits, rules: str = "none", mc_runs: int = 1000, seed: int = 0
    ) -> list[DesignRow]:
        return _report(self, limits, rules, mc_runs, seed)


@lru_cache(maxsize=64)
def _solve(d: ChartDesign, warn: tuple[str, ...], stop: tuple[str, ...]) -> DesignLimits:
    warn_build, stop_build = d.build_arl0("warn"), d.build_arl0("stop")
    warn_c = arl.sidak_arl0(warn_build, len(warn))
    stop_c = arl.sidak_arl0(stop_build, len(stop))
    p_drift = arl.false_alarm_prob(d.layers, warn_c)
    cusum_h = arl.cusum_h_for_arl0(d.cusum_k, warn_c, d.fir)
    return DesignLimits(
        warn_charts=warn,
        stop_criteria=stop,
        warn_build_arl0=warn_build,
        stop_build_arl0=stop_build,
        warn_chart_arl0=warn_c,
        stop_chart_arl0=stop_c,
        shewhart_L=arl.shewhart_L_for_arl0(warn_c),
        ewma_L=arl.ewma_L_for_arl0(d.lam, warn_c),
        cusum_h=cusum_h,
        mewma_h=arl.mewma_h_for_arl0(d.mewma_lam, warn_c, d.n_features),
        t2_ucl=arl.t2_ucl(d.n_features, 1.0 / warn_c),
        cluster_alpha=1.0 / warn_c,
        # The stop criteria reuse the warn charts' statistics: never stop below a warning.
        cusum_h_stop=max(arl.cusum_h_for_arl0(d.cusum_k, stop_c, d.fir), cusum_h),
        cluster_alpha_stop=min(1.0 / stop_c, 1.0 / warn_c),
        consecutive_L=arl.consecutive_L_for_arl0(d.consecutive_k, stop_c),
        consecutive_k=d.consecutive_k,
        pagehinkley_threshold=(
            calibrate_page_hinkley(d.layers, p_drift) if "pagehinkley" in warn else None
        ),
        adwin_delta=calibrate_adwin(d.layers, p_drift) if "adwin" in warn else None,
    )


def _mc(kernel: Kernel, runs: int, seed: int, cap: int, shift_at: int = 0) -> ArlFn:
    return lambda dl: arl.mc_arl(kernel, runs, dl, seed, shift_at, cap).arl


def _drift_delay(kind: str, param: float, runs: int, seed: int) -> ArlFn:
    """Mean delay of a river detector to a shift after 100 in-control points (MC); runs that
    alarm before the shift are dropped, runs that never alarm count 500."""

    def delay(delta: float) -> float | None:
        delays = []
        for row in np.random.default_rng(seed).standard_normal((runs, 600)).tolist():
            chart = DriftChart(kind, param)  # type: ignore[arg-type]
            for t, v in enumerate(row, start=1):
                if chart.update(v + (delta if t > 100 else 0.0)).signal:
                    if t > 100:
                        delays.append(t - 100)
                    break
            else:
                delays.append(500)
        return sum(delays) / len(delays) if delays else None

    return delay


def _report(d: ChartDesign, lim: DesignLimits, rules: str, runs: int, seed: int) -> list[DesignRow]:
    """One row per warn chart and stop criterion: (limit, ARL as a function of delta, method)."""
    p, lam, k, fir = d.n_features, d.lam, d.cusum_k, d.fir
    eye = tuple(tuple(float(i == j) for j in range(p)) for i in range(p))
    mewma = MewmaKernel((0.0,) * p, eye, d.mewma_lam, lim.mewma_h, exact=False)
    selfstart = SelfStartKernel(CusumKernel(k, lim.cusum_h, fir))
    ruled = IndividualsKernel(L=lim.shewhart_L, rules=rules)
    fir_note = " FIR (two-sided approx.)" if fir else ""
    cap = 10 * d.layers  # a self-starting chart may absorb a small shift and never signal

    def cusum(h: float) -> tuple[str, ArlFn, str]:
        return f"k={k:g} h={h:.3f}", lambda dl: arl.cusum_arl(k, h, dl, fir), "Markov" + fir_note

    def cluster(alpha: float) -> tuple[str, ArlFn, str]:
        return f"alpha={alpha:.3g}/layer", lambda dl: 1 / alpha if dl == 0 else None, "quantile"

    def drift(kind: str) -> tuple[str, ArlFn, str]:
        param = lim.adwin_delta if kind == "adwin" else lim.pagehinkley_threshold
        assert param is not None
        delay = _drift_delay(kind, param, max(50, runs // 10), seed)
        label = "delta" if kind == "adwin" else "threshold"
        return (
            f"{label}={param:.4g}",
            lambda dl: lim.warn_chart_arl0 if dl == 0 else delay(dl),
            "simulated; delay after 100",
        )

    L, kc = lim.consecutive_L, lim.consecutive_k
    warn: dict[str, Callable[[], tuple[str, ArlFn, str]]] = {
        "shewhart": lambda: (
            (f"L={lim.shewhart_L:.3f}", lambda dl: arl.shewhart_arl(lim.shewhart_L, dl), "exact")
            if rules == "none"
            else (f"L={lim.shewhart_L:.3f}+{rules}", _mc(ruled, runs, seed, cap), "MC, off budget")
        ),
        "ewma": lambda: (
            f"λ={lam:g} L={lim.ewma_L:.3f}",
            lambda dl: arl.ewma_arl(lam, lim.ewma_L, dl),
            "Markov",
        ),
        "cusum": lambda: cusum(lim.cusum_h),
        "selfstart": lambda: (
            f"Q-CUSUM h={lim.cusum_h:.3f}",
            lambda dl: (
                arl.cusum_arl(k, lim.cusum_h, 0, fir)
                if dl == 0
                else _mc(selfstart, runs, seed, cap, shift_at=50)(dl)
            ),
            f"Markov; MC delay after 50, cap {cap}",
        ),
        "mewma": lambda: (
            f"λ={d.mewma_lam:g} h={lim.mewma_h:.3f}",
            lambda dl: (
                arl.mewma_arl0(d.mewma_lam, lim.mewma_h, p)
                if dl == 0
                else _mc(mewma, runs, seed, cap)(dl)
            ),
            "Markov; MC shifts",
        ),
        "t2": lambda: (f"UCL={lim.t2_ucl:.3f}", lambda dl: arl.t2_arl(lim.t2_ucl, p, dl), "exact"),
        "cluster": lambda: cluster(lim.cluster_alpha),
        "adwin": lambda: drift("adwin"),
        "pagehinkley": lambda: drift("pagehinkley"),
    }
    stop: dict[str, Callable[[], tuple[str, ArlFn, str]]] = {
        "cusum": lambda: cusum(lim.cusum_h_stop),
        "cluster": lambda: cluster(lim.cluster_alpha_stop),
        "consecutive": lambda: (
            f"{kc}×|z|>{L:.3f}",
            lambda dl: arl.consecutive_arl_at(L, kc, dl),
            "exact",
        ),
    }
    rows = []
    for level, names, builders in (
        ("warn", lim.warn_charts, warn),
        ("stop", lim.stop_criteria, stop),
    ):
        for name in names:
            limit, f, method = builders[name]()
            rows.append(DesignRow(name, level, limit, f(0.0), {dl: f(dl) for dl in DELTAS}, method))
    return rows
