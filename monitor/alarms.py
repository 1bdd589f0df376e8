"""Alarm policy (per printer, from TOML), episode tracking, and the alarm state machine.

Episodes: one alarm per (job, chart, level) episode. An episode opens at the first signal and
ends after ``reset_after`` consecutive in-control points of that chart (0 = never: one alarm per
chart and level for the whole job). Episode numbers are deterministic, so replaying a job gives
the same (job, chart, level, episode) keys and the store's upsert de-duplicates after a restart.

Stop criteria are applied to the warn charts' statistics with stricter, designed thresholds:
the CUSUM beyond h_stop, a cluster area at or above the critical area, or k consecutive layers
with |z| beyond the consecutive limit. Values in the policy override the designed ones.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from monitor.charts.base import ChartPoint
from monitor.design import DEFAULT_STOP, DEFAULT_WARN, StopCriterion, WarnChart
from monitor.rules import parse_rules

Level = Literal["warn", "stop"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarnPolicy(_Strict):
    charts: tuple[WarnChart, ...] = DEFAULT_WARN
    rules: str = Field("none", description='"none", "we", "nelson" or comma-separated rule names')

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, v: str) -> str:
        parse_rules(v)
        return v


class StopPolicy(_Strict):
    criteria: tuple[StopCriterion, ...] = DEFAULT_STOP
    cusum_h: float | None = Field(None, gt=0, description="overrides the designed stop limit")
    cluster_area_critical: float | None = Field(None, gt=0)
    consecutive_anomalous: int | None = Field(None, ge=1, description="k; overrides the design")
    consecutive_limit: float | None = Field(None, gt=0, description="|z| limit for the k-run")
    action: Literal["pause", "cancel", "none"] = "pause"


class EpisodePolicy(_Strict):
    reset_after: int = Field(20, ge=0, description="in-control points that end an episode")


class StartPolicy(_Strict):
    warmup_layers: int = Field(
        0,
        ge=0,
        description="a job's first layers are scored and stored but not charted: an FDM "
        "print's solid bottom layers and the first sparse layer over them look unlike every "
        "later layer, once a print",
    )


class AlarmPolicy(_Strict):
    start: StartPolicy = StartPolicy()
    warn: WarnPolicy = WarnPolicy()
    stop: StopPolicy = StopPolicy()
    episode: EpisodePolicy = EpisodePolicy()


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the offending keys."""


@dataclass(frozen=True)
class PolicySet:
    """The default policy plus per-printer overrides (``[printers.<id>]`` tables)."""

    default: AlarmPolicy = field(default_factory=AlarmPolicy)
    printers: dict[str, AlarmPolicy] = field(default_factory=dict)

    def for_printer(self, printer: str) -> AlarmPolicy:
        return self.printers.get(printer, self.default)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _validate(data: dict[str, Any], where: str) -> AlarmPolicy:
    try:
        return AlarmPolicy.model_validate(data)
    except ValidationError as e:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "extra_forbidden" else "")
            for err in e.errors()
        ]
        raise PolicyError(f"{where}: invalid alarm policy\n" + "\n".join(lines)) from None


def parse_policy(text: str, source: str = "<policy>") -> PolicySet:
    """Parse TOML: top-level tables [start], [warn], [stop], [episode]; [printers.<id>]
    override them."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{source}: not valid TOML: {e}") from None
    printers = data.pop("printers", {})
    if not isinstance(printers, dict):
        raise PolicyError(f"{source}: [printers] must be a table of printer ids")
    default = _validate(data, source)
    return PolicySet(
        default,
        {
            # [printers.<id>.target] (where actions go) is read by monitor.actions.config
            pid: _validate(
                _merge(data, {k: v for k, v in over.items() if k != "target"}),
                f"{source} [printers.{pid}]",
            )
            for pid, over in printers.items()
        },
    )


def load_policy(path: str | Path) -> PolicySet:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(f"{p}: cannot read alarm policy: {e.strerror}") from None
    return parse_policy(text, str(p))


# --- events and episodes ---------------------------------------------------------------------


@dataclass(slots=True)
class AlarmEvent:
    """An alarm opened at ``layer``; (job, chart, level, episode) is its idempotency key."""

    printer: str
    job: str
    layer: int
    chart: str
    level: Level
    rule: str | None
    episode: int
    statistic: float
    limit: float
    action: str | None = None

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.job, self.chart, self.level, self.episode


@dataclass
class StopThresholds:
    """Stop limits in the units of the charts' statistics (the monitor charts z-scores)."""

    cusum_h: float | None = None
    cluster_area: float | None = None
    consecutive_limit: float | None = None
    consecutive_k: int = 3


class AlarmTracker:
    """Turns each layer's chart points into alarm events, one per episode.

    Alarms act on increases of the anomaly score only: a higher score is worse, and layers
    scoring lower than Phase I (a part that prints cleaner than the calibration mix) are no
    reason to warn or stop. The charts still record a lower-side signal (``rule == "lower"``),
    so a dashboard shows it."""

    def __init__(
        self,
        printer: str,
        job: str,
        policy: AlarmPolicy,
        thresholds: StopThresholds,
    ) -> None:
        self.printer, self.job = printer, job
        self.thresholds = thresholds
        self.warn_charts = frozenset(policy.warn.charts)
        self.stop_criteria = frozenset(policy.stop.criteria)
        self.action = None if policy.stop.action == "none" else policy.stop.action
        self.reset_after = policy.episode.reset_after
        self.episodes: dict[tuple[str, str], list[int]] = {}  # key -> [open, number, quiet]
        self.run = 0  # consecutive layers beyond the consecutive limit

    def _stop_hit(self, p: ChartPoint) -> tuple[str, float] | None:
        th, crit, name = self.thresholds, self.stop_criteria, p.chart
        if name == "cusum" and "cusum" in crit and th.cusum_h is not None:
            if p.statistic > th.cusum_h:  # C+ only: see the class docstring
                return "h_stop", th.cusum_h
        elif name == "cluster" and "cluster" in crit and th.cluster_area is not None:
            if p.statistic >= th.cluster_area:
                return "area_critical", th.cluster_area
        elif name == "shewhart" and "consecutive" in crit and th.consecutive_limit is not None:
            beyond = p.statistic - p.center > th.consecutive_limit
            self.run = self.run + 1 if beyond else 0
            if self.run >= th.consecutive_k:
                return f"{th.consecutive_k}_consecutive", th.consecutive_limit
        return None

    def observe(self, layer: int, points: Iterable[ChartPoint]) -> list[AlarmEvent]:
        hits: dict[tuple[str, str], tuple[str | None, float, float]] = {}
        seen: set[str] = set()
        for p in points:
            seen.add(p.chart)
            if p.signal and p.chart in self.warn_charts and p.rule != "lower":
                hits[(p.chart, "warn")] = (
                    p.rule,
                    p.statistic,
                    p.ucl,
                )
            stop = self._stop_hit(p)
            if stop is not None:
                chart = "consecutive" if p.chart == "shewhart" else p.chart
                hits[(chart, "stop")] = (stop[0], p.statistic, stop[1])
        events = []
        for key, (rule, stat, limit) in hits.items():
            ep = self.episodes.setdefault(key, [0, 0, 0])
            ep[2] = 0
            if not ep[0]:
                ep[0], ep[1] = 1, ep[1] + 1
                level: Level = key[1]  # type: ignore[assignment]
                events.append(
                    AlarmEvent(
                        self.printer,
                        self.job,
                        layer,
                        key[0],
                        level,
                        rule,
                        ep[1],
                        stat,
                        limit,
                        self.action if level == "stop" else None,
                    )
                )
        if self.reset_after:
            for key, ep in self.episodes.items():
                source = "shewhart" if key[0] == "consecutive" else key[0]
                if ep[0] and key not in hits and source in seen:
                    ep[2] += 1
                    if ep[2] >= self.reset_after:
                        ep[0] = 0
        return events

    def state_dict(self) -> dict[str, Any]:
        return {
            "episodes": [[c, lv, *ep] for (c, lv), ep in self.episodes.items()],
            "run": self.run,
        }

    def load_state(self, d: dict[str, Any]) -> None:
        self.episodes = {(c, lv): [o, n, q] for c, lv, o, n, q in d["episodes"]}
        self.run = int(d["run"])


# --- alarm lifecycle -------------------------------------------------------------------------


class AlarmState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


TRANSITIONS: dict[AlarmState, frozenset[AlarmState]] = {
    AlarmState.OPEN: frozenset({AlarmState.ACKNOWLEDGED, AlarmState.RESOLVED}),
    AlarmState.ACKNOWLEDGED: frozenset({AlarmState.RESOLVED}),
    AlarmState.RESOLVED: frozenset(),
}


class IllegalTransition(ValueError):
    pass


def transition(current: AlarmState | str, target: AlarmState | str) -> AlarmState:
    """The pure state machine: open -> acknowledged -> resolved, or open -> resolved."""
    cur, tgt = AlarmState(current), AlarmState(target)
    if tgt not in TRANSITIONS[cur]:
        allowed = ", ".join(sorted(TRANSITIONS[cur])) or "nothing (final)"
        raise IllegalTransition(f"alarm cannot go from {cur} to {tgt}; allowed: {allowed}")
    return tgt


@dataclass
class Alarm:
    """An alarm's lifecycle; the storage layer persists ``state`` and ``history``."""

    event: AlarmEvent
    state: AlarmState = AlarmState.OPEN
    history: list[tuple[AlarmState, str | None]] = field(default_factory=list)

    def _move(self, target: AlarmState, by: str | None) -> None:
        self.state = transition(self.state, target)
        self.history.append((self.state, by))

    def acknowledge(self, by: str | None = None) -> None:
        self._move(AlarmState.ACKNOWLEDGED, by)

    def resolve(self, by: str | None = None) -> None:
        self._move(AlarmState.RESOLVED, by)
