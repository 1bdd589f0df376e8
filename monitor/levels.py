"""A print's own level: a random-effects Phase I and the self-starting centre of each job.

What normal prints showed (bench.false_stops, demo model, 16 normal 200-layer prints): a
print's normal level is mostly its own (between-print s.d. of the per-print means 1.1 against
a within-print s.d. of 0.2 to 0.95), so is its spread (a print that sits low varies little),
and the level wanders slowly with height (neighbouring layers correlate by about 0.2 at every
lag up to 20). The model's score cannot carry such a model: it is zero on 15 to 34 % of normal
layers (a one-sided decision statistic), and a floor is no Gaussian. So the level model works
on the evidence behind the score, RADAR's two features, as one uncensored statistic
(:class:`FeatureStatistic`: the larger of the two log-features in robust sigma of the model's
calibration images; a defect raises either).

The model, for the statistic y_t of layer t of one print (Normal–inverse-gamma, discounted):

    sigma_j^2 ~ InvGamma(a0, b0)          each print its own spread
    mu_j | sigma_j^2 ~ N(m0, sigma_j^2 / kappa0)   and its own level
    y_t | mu, sigma^2 ~ N(mu, sigma^2)

with the posterior discounted by ``discount`` before each layer (kappa, a, b times the
discount: West & Harrison's discount factor), so the job's estimate follows a slow drift with a
memory of about 1 / (1 - discount) layers. The job's centre starts at the prior (the
between-print distribution) at layer 1 and becomes the job's own as its layers come in; each
layer is judged by the probability integral transform of its posterior-predictive Student t,
r = Phi^-1(F_t(y)), which is i.i.d. N(0, 1) while the print follows the model (Hawkins' self-
starting idea, with a prior). The charts run on r.

The centre must not learn a defect. Two guards, both symmetric or rare while in control: a
layer with |r| beyond ``gate`` (3: 0.27 % of normal layers, both sides) does not update it, and
while any score chart is out of control the engine holds it (``hold``). The hyperparameters are
fitted by maximum marginal likelihood on whole normal prints (``fit_levels``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import optimize
from scipy.special import gammaln, ndtri, stdtr

from monitor.charts.base import ChartPoint

State = tuple[Any, Any, Any, Any]  # m, kappa, a, b
DEFAULT_GATE = 3.0
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class FeatureStatistic:
    """y = max_i (log f_i − median_i) / (1.4826 MAD_i) over RADAR's (f1, f2), with the median
    and MAD of the model's calibration images: the uncensored statistic the level model sees."""

    center: tuple[float, float]
    scale: tuple[float, float]

    @classmethod
    def from_features(cls, features: Sequence[Sequence[float]]) -> FeatureStatistic:
        logs = np.log(np.maximum(np.asarray(features, dtype=float).reshape(-1, 2), 1e-12))
        center = np.median(logs, axis=0)
        scale = np.maximum(MAD_TO_SIGMA * np.median(np.abs(logs - center), axis=0), 1e-6)
        return cls(tuple(center.tolist()), tuple(scale.tolist()))  # type: ignore[arg-type]

    def __call__(self, f1: float, f2: float) -> float:
        (c1, c2), (s1, s2) = self.center, self.scale
        return max((math.log(max(f1, 1e-12)) - c1) / s1, (math.log(max(f2, 1e-12)) - c2) / s2)

    def array(self, features: np.ndarray) -> np.ndarray:
        """Rows of (f1, f2) → y (NaN rows stay NaN)."""
        f = np.asarray(features, dtype=float).reshape(-1, 2)
        with np.errstate(invalid="ignore"):
            u = (np.log(np.maximum(f, 1e-12)) - np.asarray(self.center)) / np.asarray(self.scale)
        return np.where(np.isnan(f).any(axis=1), np.nan, u.max(axis=1))


@dataclass(frozen=True)
class LevelModel:
    """The prior of a print's (level, spread) and the discount, in units of the statistic."""

    m0: float
    kappa0: float
    a0: float
    b0: float
    discount: float
    gate: float = DEFAULT_GATE
    n_prints: int = 0
    n_layers: int = 0

    def __post_init__(self) -> None:
        if not (self.kappa0 > 0 and self.a0 > 0 and self.b0 > 0 and 0 < self.discount <= 1):
            raise ValueError(f"invalid level model {self}")

    @property
    def within_sd(self) -> float:
        """Typical within-print s.d.: sqrt(E[sigma^2]) (its median where a0 <= 1)."""
        return math.sqrt(self.b0 / (self.a0 - 1) if self.a0 > 1 else self.b0 / self.a0)

    @property
    def between_sd(self) -> float:
        """s.d. of print levels around m0."""
        return self.within_sd / math.sqrt(self.kappa0)

    @property
    def memory(self) -> float:
        """Layers the job's estimate effectively remembers, 1 / (1 - discount)."""
        return math.inf if self.discount >= 1 else 1 / (1 - self.discount)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LevelModel:
        return cls(**d)

    def initial(self, n: int | None = None) -> State:
        """The prior at layer 1 (floats, or arrays of n for n series in lockstep)."""
        values = (self.m0, self.kappa0, self.a0, self.b0)
        return values if n is None else tuple(np.full(n, v) for v in values)  # type: ignore[return-value]

    def predict(self, state: State, t: int) -> State:
        """Layer t's prior from layer t-1's posterior: discounted (layer 1: the prior itself)."""
        if t <= 1:
            return state
        m, kappa, a, b = state
        d = self.discount
        return m, kappa * d, a * d, b * d

    def correct(self, state: State, y: Any, hold: Any = False) -> tuple[State, Any, Any, Any]:
        """Judge and learn layer y: (state, r = Phi^-1 of the predictive CDF, the predictive
        log-density, whether the update was skipped). Floats or arrays: one recursion for the
        live monitor, the fit and the simulation."""
        m, kappa, a, b = state
        scale = (b * (kappa + 1) / (a * kappa)) ** 0.5
        t = (y - m) / scale
        df = 2 * a
        r = -ndtri(stdtr(df, -abs(t))) * ((t > 0) * 1 - (t < 0) * 1)  # tail-precise PIT
        logpdf = (gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * np.log(df * np.pi)
                  - np.log(scale) - (df + 1) / 2 * np.log1p(t * t / df))  # fmt: skip
        skip = hold | (abs(r) > self.gate)
        u = 1 - skip * 1
        k1 = kappa + u
        new = (
            (kappa * m + u * y) / k1,
            k1,
            a + u * 0.5,
            b + u * kappa * (y - m) ** 2 / (2 * k1),
        )
        return new, r, logpdf, skip


class LevelFilter:
    """One job's centre, on plain floats; ``hold`` is set by the engine while a chart signals."""

    __slots__ = ("hold", "model", "state", "t")

    def __init__(self, model: LevelModel) -> None:
        self.model = model
        self.state = model.initial()
        self.t = 0
        self.hold = False

    def update(self, y: float) -> float:
        """The standardised surprise r of this layer's statistic."""
        self.t += 1
        m = self.model
        self.state, r, _, _ = m.correct(m.predict(self.state, self.t), y, self.hold)
        return float(r)

    @property
    def level(self) -> float:
        """The job's current centre (posterior mean of its level)."""
        return float(self.state[0])

    @property
    def spread(self) -> float:
        """The job's current within-print s.d. estimate (posterior mean of sigma^2, sqrt)."""
        _, _, a, b = self.state
        return math.sqrt(b / (a - 1)) if a > 1 else math.sqrt(b / a)


def _lockstep(
    model: LevelModel, y: np.ndarray, hold: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n series (rows of ``y``, NaN = no layer) in lockstep: r, the predictive log-densities
    and the skip mask. A missing layer is held (no update) and counts nowhere (NaN)."""
    y = np.atleast_2d(np.asarray(y, dtype=float))
    n, steps = y.shape
    state = model.initial(n)
    r, logpdf = np.full((n, steps), np.nan), np.full((n, steps), np.nan)
    skipped = np.zeros((n, steps), dtype=bool)
    for j in range(steps):
        missing = np.isnan(y[:, j])
        held = missing if hold is None else missing | hold[:, j]
        state = model.predict(state, j + 1)
        yj = np.where(missing, state[0], y[:, j])
        state, rj, lj, skip = model.correct(state, yj, held)
        r[:, j] = np.where(missing, np.nan, rj)
        logpdf[:, j] = np.where(missing, np.nan, lj)
        skipped[:, j] = skip & ~missing
    return r, logpdf, skipped


def innovations(
    model: LevelModel, y: np.ndarray, hold: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Standardised surprises r and the skip mask of n series filtered in lockstep."""
    r, _, skipped = _lockstep(model, y, hold)
    return r, skipped


def _pad(sequences: Sequence[Sequence[float]]) -> np.ndarray:
    rows = [np.asarray(s, dtype=float) for s in sequences]
    out = np.full((len(rows), max(len(r) for r in rows)), np.nan)
    for i, r in enumerate(rows):
        out[i, : r.size] = np.where(np.isfinite(r), r, np.nan)
    return out


def fit_levels(
    sequences: Sequence[Sequence[float]], gate: float = DEFAULT_GATE, min_prints: int = 3
) -> LevelModel:
    """Maximum marginal likelihood on the statistic's sequences of normal prints (one per
    print, layers in order, NaN for a missing layer); moment estimates start the search."""
    y = _pad([s for s in sequences if np.isfinite(np.asarray(s, dtype=float)).sum() >= 3])
    if y.shape[0] < min_prints:
        raise ValueError(
            f"a level model needs at least {min_prints} prints of 3 or more layers, "
            f"got {y.shape[0]}"
        )
    counts = np.isfinite(y).sum(axis=1)
    means = np.nanmean(y, axis=1)
    within = float(np.nanmean(np.nanvar(y, axis=1))) or 1e-4
    between = max(float(np.var(means, ddof=1)) - within / counts.mean(), 1e-4)
    start = np.array([float(np.mean(means)), math.log(within / between), math.log(3.0),
                      math.log(2.0 * within), 3.0])  # fmt: skip

    def unpack(p: np.ndarray) -> LevelModel:
        return LevelModel(float(p[0]), math.exp(p[1]), math.exp(p[2]), math.exp(p[3]),
                          1 / (1 + math.exp(-p[4])), math.inf)  # fmt: skip

    def objective(p: np.ndarray) -> float:
        _, logpdf, _ = _lockstep(unpack(p), y)
        value = -float(np.nansum(logpdf))
        return value if math.isfinite(value) else 1e300

    bounds = [(None, None), (-8, 8), (math.log(0.6), 6), (-12, 6), (1.0, 8.0)]
    res = optimize.minimize(objective, start, method="L-BFGS-B", bounds=bounds)
    best = res.x if res.fun <= objective(start) else start
    return replace(unpack(best), gate=gate, n_prints=int(y.shape[0]), n_layers=int(counts.sum()))


def simulate_levels(
    model: LevelModel, prints: int, layers: int, rng: np.random.Generator
) -> np.ndarray:
    """Sequences (prints × layers) drawn from the model's own predictive process: each layer
    from the posterior-predictive t of the layers before it (exactly what the filter assumes,
    so r is i.i.d. N(0, 1) on them); the design's in-control prints."""
    gate_off = replace(model, gate=math.inf)
    state = gate_off.initial(prints)
    out = np.empty((prints, layers))
    for j in range(layers):
        state = gate_off.predict(state, j + 1)
        m, kappa, a, b = state
        scale = np.sqrt(b * (kappa + 1) / (a * kappa))
        out[:, j] = m + scale * rng.standard_t(2 * a)
        state, _, _, _ = gate_off.correct(state, out[:, j])
    return out


class LevelChart:
    """The job's centre as a chart series ("level"): its level estimate after each layer,
    against the range of normal prints' levels (m0 ± 2 between-print s.d.). It never
    signals; it shows where this print sits and how its centre moved."""

    __slots__ = ("filter", "name")

    def __init__(self, level_filter: LevelFilter) -> None:
        self.filter = level_filter
        self.name = "level"

    def update(self, x: Any) -> ChartPoint:
        m = self.filter.model
        spread = 2 * m.between_sd
        return ChartPoint(self.name, self.filter.level, m.m0, m.m0 - spread, m.m0 + spread,
                          False, None)  # fmt: skip

    def replay(self, values: Any) -> None:
        for x in values:
            self.update(x)

    def state_dict(self) -> dict[str, Any]:
        f = self.filter
        return {
            "kind": "level", "name": self.name, "model": f.model.to_dict(),
            "t": f.t, "state": [float(v) for v in f.state], "hold": f.hold,
        }  # fmt: skip
