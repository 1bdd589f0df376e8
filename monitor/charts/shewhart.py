"""Individuals (X) chart with MR-based sigma and optional run rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.charts.base import UPPER_LOWER, Kernel, side_code
from monitor.estimators import mr_sigma
from monitor.rules import RunRules


@dataclass(frozen=True)
class IndividualsKernel(Kernel):
    """Shewhart chart for single values: center ± L·sigma, plus WE/Nelson rules on the zones.

    In the monitor it charts z = (score - mu0)/sigma0 with center 0 and sigma 1; with another
    center/sigma it charts raw values (``from_phase1`` estimates them the textbook way).
    """

    kind = "shewhart"
    center: float = 0.0
    sigma: float = 1.0
    L: float = 3.0
    rules: str = "none"
    rule_names: tuple[str | None, ...] = field(init=False, repr=False, compare=False)
    _rules: RunRules = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        rules = RunRules.parse(self.rules)
        object.__setattr__(self, "_rules", rules)
        object.__setattr__(self, "rule_names", (*UPPER_LOWER, *rules.names))

    @classmethod
    def from_phase1(cls, values: Sequence[float], L: float = 3.0, rules: str = "none") -> Any:
        """Center = mean, sigma = MRbar/d2 (limits xbar ± 2.66·MRbar for L = 3)."""
        return cls(sum(values) / len(values), mr_sigma(values), L, rules)

    def init(self, n: int | None) -> tuple[Any, ...]:
        return self._rules.init(n) if self._rules.names else ()

    def step(self, s: tuple[Any, ...], x: Any, t: int) -> tuple[tuple[Any, ...], Any, Any]:
        z = (x - self.center) / self.sigma
        code = side_code(z, -self.L, self.L)
        if self._rules.names:
            s = self._rules.step(s, z)
            r = self._rules.first(s)
            code = code + (r + 2) * (r > 0) * (code == 0)  # the limit wins over run rules
        return s, x, code

    def limits(self, t: int) -> tuple[float, float, float]:
        half = self.L * self.sigma
        return self.center, self.center - half, self.center + half
