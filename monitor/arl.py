"""Average run length: Markov chains, closed forms, vectorised Monte Carlo, and design solvers.

Markov chains (Brook & Evans 1972; Lucas & Saccucci 1990) give EWMA and CUSUM ARLs to a few
parts in 10^4 with 201 states; MEWMA's in-control ARL uses Runger & Prabhu's reduction to the
norm of Z, solved by Nyström quadrature. Monte Carlo covers the rest (run rules, self-starting,
shifted MEWMA, exact EWMA limits) by running a chart's own kernel over arrays of runs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize
from scipy.special import ndtr, ndtri
from scipy.stats import chi2, ncx2

try:  # a dependency of scikit-learn, so present wherever the monitor runs
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover

    def threadpool_limits(*_: object, **__: object) -> contextlib.nullcontext[None]:  # type: ignore[misc]
        return contextlib.nullcontext()


from scipy.stats import f as f_dist

from monitor.charts.base import Kernel, components

N_STATES = 201


# --- budgets --------------------------------------------------------------------------------


def arl0_for_false_alarm_prob(layers: float, p: float) -> float:
    """ARL0 giving P(a false alarm within ``layers`` points) = p, from a geometric run length."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"false-alarm probability must be in (0, 1), got {p}")
    return layers / -math.log1p(-p)


def false_alarm_prob(layers: float, arl0: float) -> float:
    return -math.expm1(-layers / arl0)


def sidak_arl0(arl0: float, m: int) -> float:
    """Per-chart ARL0 so that m independent charts together false-alarm at rate 1/arl0."""
    if m <= 1:
        return arl0
    return 1.0 / -math.expm1(math.log1p(-1.0 / arl0) / m)


# --- closed forms ----------------------------------------------------------------------------


def shewhart_arl(L: float, delta: float = 0.0) -> float:
    """Two-sided Individuals chart: 1 / P(|z + delta| > L)."""
    return 1.0 / float(ndtr(-L - delta) + ndtr(-L + delta))


def shewhart_L_for_arl0(arl0: float) -> float:
    return float(-ndtri(0.5 / arl0))


def t2_ucl(p: int, alpha: float) -> float:
    """Known-parameter Hotelling T² limit chi²_{p, 1-alpha} (ARL0 = 1/alpha)."""
    return float(chi2.isf(alpha, p))


def t2_ucl_phase1(p: int, m: int, alpha: float) -> float:
    """Retrospective limit on the m Phase I vectors themselves: (m-1)²/m · Beta quantile."""
    from scipy.stats import beta

    return float((m - 1) ** 2 / m * beta.isf(alpha, p / 2, (m - p - 1) / 2))


def t2_ucl_phase2(p: int, m: int, alpha: float) -> float:
    """Future vectors against estimates from m vectors (Tracy, Young & Mason 1992)."""
    return float(p * (m + 1) * (m - 1) / (m * (m - p)) * f_dist.isf(alpha, p, m - p))


def t2_arl(ucl: float, p: int, delta: float = 0.0) -> float:
    """1 / P(noncentral chi²_p(delta²) > UCL), delta the Mahalanobis shift."""
    tail = chi2.sf(ucl, p) if delta == 0 else ncx2.sf(ucl, p, delta * delta)
    return 1.0 / float(tail)


def consecutive_arl(q: float, k: int) -> float:
    """Expected points until k consecutive successes, each with probability q."""
    return (1.0 - q**k) / ((1.0 - q) * q**k)


def consecutive_L_for_arl0(k: int, arl0: float) -> float:
    """Limit L so that k consecutive |z| > L have in-control ARL arl0."""
    q = optimize.brentq(lambda q: math.log(consecutive_arl(q, k)) - math.log(arl0), 1e-12, 0.999)
    return float(-ndtri(q / 2.0))


def consecutive_arl_at(L: float, k: int, delta: float = 0.0) -> float:
    return consecutive_arl(float(ndtr(-L - delta) + ndtr(-L + delta)), k)


# --- Markov chains ---------------------------------------------------------------------------


def _absorbing_arl(P: np.ndarray) -> np.ndarray:
    """ARL from each transient state of a chain with transient-to-transient matrix P.

    One BLAS thread: on a small shared machine a multi-threaded 201x201 solve can take 60 ms
    instead of 0.3 ms when the other core is busy.
    """
    with threadpool_limits(1, user_api="blas"):
        return np.linalg.solve(np.eye(len(P)) - P, np.ones(len(P)))


def ewma_arl(lam: float, L: float, delta: float = 0.0, n_states: int = N_STATES) -> float:
    """EWMA with asymptotic limits, started at 0 (Lucas & Saccucci's Markov chain)."""
    n = n_states | 1  # odd, so one state is centred on 0
    half = L * math.sqrt(lam / (2.0 - lam))
    w = 2.0 * half / n
    mid = -half + (np.arange(n) + 0.5) * w
    start = (1.0 - lam) * mid[:, None]
    P = ndtr((mid[None, :] + w / 2 - start) / lam - delta) - ndtr(
        (mid[None, :] - w / 2 - start) / lam - delta
    )
    return float(_absorbing_arl(P)[n // 2])


def cusum_arl_one_sided(
    k: float, h: float, delta: float = 0.0, fir: bool = False, n_states: int = N_STATES
) -> float:
    """Upper CUSUM (Brook & Evans): state 0 is the atom at C = 0, widths 2h/(2N-1)."""
    w = 2.0 * h / (2 * n_states - 1)
    value = np.arange(n_states) * w
    upper = (np.arange(n_states) + 0.5) * w
    lower = np.r_[-np.inf, upper[:-1]]
    shift = k - delta - value[:, None]
    P = ndtr(upper[None, :] + shift) - ndtr(lower[None, :] + shift)
    arl = _absorbing_arl(P)
    return float(arl[round(h / 2.0 / w)] if fir else arl[0])


def cusum_arl(
    k: float, h: float, delta: float = 0.0, fir: bool = False, n_states: int = N_STATES
) -> float:
    """Two-sided CUSUM via 1/ARL = 1/ARL+ + 1/ARL- (exact without FIR for k >= 0)."""
    up = cusum_arl_one_sided(k, h, delta, fir, n_states)
    down = cusum_arl_one_sided(k, h, -delta, fir, n_states)
    return 1.0 / (1.0 / up + 1.0 / down)


def mewma_arl0(lam: float, h: float, p: int, nodes: int = 60) -> float:
    """In-control MEWMA ARL, asymptotic covariance (Runger & Prabhu 1996 reduction).

    With Sigma = I, Q_t = |Z_t|² given Q_{t-1} = q is lam²·noncentral chi²_p((1-lam)²q/lam²);
    the integral equation for ARL(q) on [0, h·lam/(2-lam)] is solved on Gauss-Legendre nodes
    in u = sqrt(q), which removes the density's singularity at 0 for p = 1.
    """
    r = h * lam / (2.0 - lam)
    x, wt = np.polynomial.legendre.leggauss(nodes)
    u = (x + 1.0) / 2.0 * math.sqrt(r)
    du = wt / 2.0 * math.sqrt(r) * 2.0 * u  # dq = 2u du
    q = u * u
    lam2 = lam * lam
    nc = (1.0 - lam) ** 2 * q / lam2
    K = ncx2.pdf(q[None, :] / lam2, p, nc[:, None]) / lam2 * du[None, :]
    arl = _absorbing_arl(K)
    k0 = chi2.pdf(q / lam2, p) / lam2 * du
    return float(1.0 + k0 @ arl)


# --- solvers ---------------------------------------------------------------------------------


def _solve_log(f: Callable[[float], float], arl0: float, lo: float, hi: float) -> float:
    """Root of log f(x) = log arl0 for increasing f, widening the bracket if needed."""
    target = math.log(arl0)

    def g(x: float) -> float:
        return math.log(f(x)) - target

    while g(hi) < 0:
        lo, hi = hi, hi * 1.5
    return float(optimize.brentq(g, lo, hi, xtol=1e-6))


@lru_cache(maxsize=256)
def ewma_L_for_arl0(lam: float, arl0: float) -> float:
    return _solve_log(lambda L: ewma_arl(lam, L), arl0, 1.0, 5.0)


@lru_cache(maxsize=256)
def cusum_h_for_arl0(k: float, arl0: float, fir: bool = False) -> float:
    # Start low and widen: with a large k the ARL grows so fast in h that the Markov chain's
    # linear solve is meaningless far above the root (k = 2, h = 12: ARL ~ 1e20).
    return _solve_log(lambda h: cusum_arl(k, h, fir=fir), arl0, 0.1, 2.0)


@lru_cache(maxsize=256)
def mewma_h_for_arl0(lam: float, arl0: float, p: int = 2) -> float:
    return _solve_log(lambda h: mewma_arl0(lam, h, p), arl0, 1.0, 4.0 * p + 20.0)


# --- Monte Carlo -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ArlEstimate:
    arl: float
    se: float
    n: int
    sdrl: float

    @classmethod
    def of(cls, rl: np.ndarray) -> ArlEstimate:
        rl = np.asarray(rl, dtype=float)
        sd = float(rl.std(ddof=1)) if rl.size > 1 else math.nan
        return cls(float(rl.mean()), sd / math.sqrt(rl.size), int(rl.size), sd)


def _draw(rng: np.random.Generator, kernel: Kernel, steps: int, n: int, shifts: np.ndarray):
    """(steps, n) normals, or (steps, n, p) vectors around the kernel's mean/cov, with the
    shift delta along the first whitened axis (Mahalanobis distance delta)."""
    mean = getattr(kernel, "mean", None)
    if mean is None:
        return rng.standard_normal((steps, n)) + shifts[:, None]
    p = len(mean)
    e = rng.standard_normal((steps, n, p))
    e[:, :, 0] += shifts[:, None]
    chol = np.linalg.cholesky(np.asarray(kernel.cov))
    return np.asarray(mean) + e @ chol.T


def simulate_run_lengths(
    kernel: Kernel,
    n_runs: int = 2000,
    delta: float = 0.0,
    seed: int | None = 0,
    *,
    shift_at: int = 0,
    max_len: int = 10_000_000,
) -> np.ndarray:
    """Run lengths of ``kernel`` on independent in-control streams, all runs in lockstep.

    The mean shifts by ``delta`` (sigma units, or Mahalanobis for vectors) after point
    ``shift_at``. With shift_at > 0 this returns the detection delay (RL - shift_at) of the
    runs that had not false-alarmed before the change. Finished runs are compacted away
    after every chunk, and chunks double in length, so long ARLs cost O(ARL·log n) steps.
    """
    rng = np.random.default_rng(seed)
    rl = np.zeros(n_runs, dtype=np.int64)
    active = np.arange(n_runs)
    state = kernel.init(n_runs)
    t0, chunk = 0, 32
    while active.size and t0 < max_len:
        n = active.size
        ts = np.arange(t0 + 1, t0 + chunk + 1)
        x = _draw(rng, kernel, chunk, n, np.where(ts > shift_at, delta, 0.0))
        done = np.zeros(n, dtype=bool)
        first = np.zeros(n, dtype=np.int64)
        for j in range(chunk):
            t = t0 + j + 1
            state, _, code = kernel.step(state, components(x[j]), t)
            if t > kernel.warmup:
                hit = (code != 0) & ~done
                if hit.any():
                    first[hit] = t
                    done |= hit
        rl[active[done]] = first[done]
        keep = ~done
        active = active[keep]
        state = tuple(s[keep] if isinstance(s, np.ndarray) else s for s in state)
        t0 += chunk
        chunk = min(2 * chunk, 4096)
    rl[active] = max_len  # censored (never signalled)
    if shift_at > 0:
        rl = rl[rl > shift_at] - shift_at
    return rl


def mc_arl(
    kernel: Kernel,
    n_runs: int = 2000,
    delta: float = 0.0,
    seed: int | None = 0,
    shift_at: int = 0,
    max_len: int = 10_000_000,
) -> ArlEstimate:
    """Mean run length; runs still silent after ``max_len`` points count as max_len."""
    return ArlEstimate.of(
        simulate_run_lengths(kernel, n_runs, delta, seed, shift_at=shift_at, max_len=max_len)
    )
