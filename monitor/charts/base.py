"""Chart points and the machinery every chart family shares.

Each family writes its recursion once, as a *kernel* whose ``step`` uses only arithmetic and
comparisons that mean the same on plain floats and on numpy arrays (``v * (v > 0)`` instead of
``max``, bit masks instead of deques). ``KernelChart`` runs it on floats for the streaming path,
where numpy per scalar would cost microseconds; ``batch`` and ``arl.simulate_run_lengths`` run
the very same code on arrays of independent runs. So the chart that ships is the chart that the
Monte Carlo validates.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol

import numpy as np

UPPER_LOWER: tuple[str | None, ...] = (None, "upper", "lower")
UPPER_ONLY: tuple[str | None, ...] = (None, "upper")


@dataclass(slots=True)
class ChartPoint:
    """One chart's verdict on one layer (limits are those in force at that layer)."""

    chart: str
    statistic: float
    center: float
    lcl: float
    ucl: float
    signal: bool
    rule: str | None = None


class Chart(Protocol):
    """What the engine needs from any chart, kernel-based or not (e.g. river detectors)."""

    name: str

    def update(self, x: Any) -> ChartPoint | None: ...

    def replay(self, values: Iterable[Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...


def zeros(n: int | None, value: float = 0.0) -> Any:
    """A float state slot: a Python float for the scalar path, an array of n runs otherwise."""
    return float(value) if n is None else np.full(n, float(value))


def izeros(n: int | None) -> Any:
    """An integer state slot (counters, bit masks)."""
    return 0 if n is None else np.zeros(n, dtype=np.int64)


def side_code(stat: Any, lower: float, upper: float) -> Any:
    """0 in control, 1 above ``upper``, 2 below ``lower``; upper wins if both (floats or arrays)."""
    above = stat > upper
    return above * 1 + (stat < lower) * (1 - above * 1) * 2


_KERNELS: dict[str, type[Kernel]] = {}


class Kernel(ABC):
    """A chart family's parameters plus its float/array-polymorphic recursion.

    ``step`` returns ``(state, statistic, code)`` where ``code`` is 0 when in control and
    otherwise indexes ``rule_names``. ``t`` is the 1-based point index, shared by all runs of a
    vectorised simulation (every run starts together), so time-varying limits stay scalars.
    """

    kind: ClassVar[str]
    warmup: ClassVar[int] = 0
    rule_names: tuple[str | None, ...] = UPPER_LOWER

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _KERNELS[cls.kind] = cls

    @abstractmethod
    def init(self, n: int | None) -> tuple[Any, ...]:
        """Initial state: floats when ``n`` is None, arrays of length n otherwise."""

    @abstractmethod
    def step(self, state: tuple[Any, ...], x: Any, t: int) -> tuple[tuple[Any, ...], Any, Any]:
        """Advance by one observation."""

    @abstractmethod
    def limits(self, t: int) -> tuple[float, float, float]:
        """(center, lcl, ucl) in force at point t."""

    def params(self) -> dict[str, Any]:
        """Constructor arguments, JSON-friendly."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.init}  # type: ignore[arg-type]

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Kernel:
        return cls(**params)


def kernel_to_dict(kernel: Kernel) -> dict[str, Any]:
    return {"kind": kernel.kind, "params": kernel.params()}


def kernel_from_dict(d: dict[str, Any]) -> Kernel:
    try:
        cls = _KERNELS[d["kind"]]
    except KeyError:
        raise ValueError(
            f"unknown chart kind {d.get('kind')!r}; known: {sorted(_KERNELS)}"
        ) from None
    return cls.from_params(d["params"])


def _plain(v: Any) -> Any:
    """Tuples to lists, NaN to None: JSON (and PostgreSQL jsonb, which rejects NaN) safe."""
    if isinstance(v, tuple | list):
        return [_plain(e) for e in v]
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return _plain(v.item())
    return v


def _unplain(v: Any) -> Any:
    if v is None:
        return math.nan
    if isinstance(v, list):
        return tuple(_unplain(e) for e in v)
    return v


class KernelChart:
    """Streaming chart on plain floats; the state is exportable so a restart can resume it."""

    __slots__ = ("_limits", "_names", "_step", "_warmup", "kernel", "name", "state", "t")

    def __init__(self, kernel: Kernel, name: str | None = None) -> None:
        self.kernel = kernel
        self.name = name or kernel.kind
        self.state = kernel.init(None)
        self.t = 0
        self._step = kernel.step
        self._limits = kernel.limits
        self._names = kernel.rule_names
        self._warmup = kernel.warmup

    def update(self, x: Any) -> ChartPoint | None:
        """Chart one value; None while a self-starting chart is still warming up."""
        t = self.t = self.t + 1
        self.state, stat, code = self._step(self.state, x, t)
        if t <= self._warmup:
            return None
        center, lcl, ucl = self._limits(t)
        return ChartPoint(self.name, float(stat), center, lcl, ucl, bool(code), self._names[code])

    def replay(self, values: Iterable[Any]) -> None:
        for x in values:
            self.update(x)

    def state_dict(self) -> dict[str, Any]:
        return {
            **kernel_to_dict(self.kernel),
            "name": self.name,
            "t": self.t,
            "state": _plain(self.state),
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> KernelChart:
        chart = cls(kernel_from_dict(d), d["name"])
        chart.t = int(d["t"])
        chart.state = tuple(_unplain(v) for v in d["state"])
        return chart


@dataclass(frozen=True)
class BatchResult:
    """Statistics and codes of n independent series charted in lockstep (arrays n × T)."""

    statistic: np.ndarray
    code: np.ndarray
    center: np.ndarray
    lcl: np.ndarray
    ucl: np.ndarray

    @property
    def signal(self) -> np.ndarray:
        return self.code != 0


def components(x: np.ndarray) -> Any:
    """Column view of one time step: an (n,) array, or a list of p arrays for (n, p) input."""
    return x if x.ndim == 1 else [x[:, i] for i in range(x.shape[1])]


def batch(kernel: Kernel, x: np.ndarray) -> BatchResult:
    """Chart n series at once: x has shape (n, T) or (n, T, p) for multivariate kernels.

    Vectorised over series, looped over time: the throughput path for simulation and for
    re-charting many jobs; for one series the scalar ``KernelChart`` is faster.
    """
    x = np.asarray(x, dtype=float)
    n, steps = x.shape[:2]
    stat = np.zeros((n, steps))
    code = np.zeros((n, steps), dtype=np.int64)
    lim = np.full((3, steps), np.nan)
    state = kernel.init(n)
    for j in range(steps):
        t = j + 1
        state, s, c = kernel.step(state, components(x[:, j]), t)
        if t > kernel.warmup:
            stat[:, j] = s
            code[:, j] = c
            lim[:, j] = kernel.limits(t)
        else:
            stat[:, j] = np.nan
    return BatchResult(stat, code, lim[0], lim[1], lim[2])
