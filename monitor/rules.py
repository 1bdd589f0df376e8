"""Western Electric (1956) and Nelson (1984) run rules as O(1) streaming counters.

The state is a flat tuple of run counters and bit masks of recent zone hits, updated with
arithmetic that works on floats and on numpy arrays alike, so one implementation serves the
streaming chart and the vectorised Monte Carlo that measures the rules' ARL0 (WE 1-4: 91.75).
Zones are in sigma units of the standardised value z. "One point beyond the limits" (WE 1,
Nelson 1) is the Individuals chart's own limit, which is designed, so it is not repeated here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RULE_DOC: dict[str, str] = {
    "2of3_beyond_2s": "2 of 3 in a row beyond 2 sigma, same side (WE 2, Nelson 5)",
    "4of5_beyond_1s": "4 of 5 in a row beyond 1 sigma, same side (WE 3, Nelson 6)",
    "8_same_side": "8 in a row on one side of the center (WE 4)",
    "9_same_side": "9 in a row on one side of the center (Nelson 2)",
    "6_trend": "6 in a row steadily increasing or decreasing (Nelson 3)",
    "14_alternating": "14 in a row alternating up and down (Nelson 4)",
    "15_within_1s": "15 in a row within 1 sigma, either side (Nelson 7)",
    "8_beyond_1s": "8 in a row beyond 1 sigma, either side (Nelson 8)",
}

RULESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "we": ("2of3_beyond_2s", "4of5_beyond_1s", "8_same_side"),
    "nelson": (
        "9_same_side",
        "6_trend",
        "14_alternating",
        "2of3_beyond_2s",
        "4of5_beyond_1s",
        "15_within_1s",
        "8_beyond_1s",
    ),
}

# State layout (indices into the tuple).
PREV, HI2, LO2, HI1, LO1, ABOVE, BELOW, UP, DOWN, ALT, LAST, WITHIN, BEYOND = range(13)


def _at_least_2_of_3(mask: Any) -> Any:
    return (mask & (mask - 1)) != 0  # clearing the lowest set bit leaves one


def _at_least_4_of_5(mask: Any) -> Any:
    misses = ~mask & 31
    return (misses & (misses - 1)) == 0  # at most one of the last five missed the zone


_FLAGS: dict[str, Callable[[tuple[Any, ...]], Any]] = {
    "2of3_beyond_2s": lambda s: _at_least_2_of_3(s[HI2]) | _at_least_2_of_3(s[LO2]),
    "4of5_beyond_1s": lambda s: _at_least_4_of_5(s[HI1]) | _at_least_4_of_5(s[LO1]),
    "8_same_side": lambda s: (s[ABOVE] >= 8) | (s[BELOW] >= 8),
    "9_same_side": lambda s: (s[ABOVE] >= 9) | (s[BELOW] >= 9),
    "6_trend": lambda s: (s[UP] >= 5) | (s[DOWN] >= 5),
    "14_alternating": lambda s: s[ALT] >= 13,
    "15_within_1s": lambda s: s[WITHIN] >= 15,
    "8_beyond_1s": lambda s: s[BEYOND] >= 8,
}


def parse_rules(spec: str) -> tuple[str, ...]:
    """A ruleset name ("none", "we", "nelson") or a comma-separated list of rule names."""
    if spec in RULESETS:
        return RULESETS[spec]
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in _FLAGS]
    if unknown:
        raise ValueError(
            f"unknown run rule(s) {unknown}; use one of {sorted(RULESETS)} or names from "
            f"{sorted(_FLAGS)}"
        )
    return names


@dataclass(frozen=True)
class RunRules:
    """The active rules, in priority order (the first that fires names the signal)."""

    names: tuple[str, ...]
    _flags: tuple[Callable[[tuple[Any, ...]], Any], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_flags", tuple(_FLAGS[n] for n in self.names))

    @classmethod
    def parse(cls, spec: str) -> RunRules:
        return cls(parse_rules(spec))

    def init(self, n: int | None) -> tuple[Any, ...]:
        if n is None:
            return (math.nan, *([0] * 12))
        return (np.full(n, np.nan), *(np.zeros(n, dtype=np.int64) for _ in range(12)))

    @staticmethod
    def step(s: tuple[Any, ...], z: Any) -> tuple[Any, ...]:
        """Advance all counters by one standardised value z (float or array)."""
        d = z - s[PREV]  # NaN on the first point: no trend, no alternation
        sign = (d > 0) * 1 - (d < 0) * 1
        flips = sign * s[LAST]
        a = abs(z)
        return (
            z,
            ((s[HI2] << 1) | (z > 2.0)) & 7,
            ((s[LO2] << 1) | (z < -2.0)) & 7,
            ((s[HI1] << 1) | (z > 1.0)) & 31,
            ((s[LO1] << 1) | (z < -1.0)) & 31,
            (s[ABOVE] + 1) * (z > 0),
            (s[BELOW] + 1) * (z < 0),
            (s[UP] + 1) * (d > 0),
            (s[DOWN] + 1) * (d < 0),
            (s[ALT] + 1) * (flips < 0) + (sign != 0) * (flips >= 0),
            sign,
            (s[WITHIN] + 1) * (a < 1.0),
            (s[BEYOND] + 1) * (a > 1.0),
        )

    def first(self, s: tuple[Any, ...]) -> Any:
        """0 if no active rule fires, else the 1-based index of the first one that does."""
        code = 0
        flags = self._flags
        for i in range(len(flags) - 1, -1, -1):
            code = code + (i + 1 - code) * flags[i](s)
        return code
