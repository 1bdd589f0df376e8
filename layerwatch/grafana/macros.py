"""Grafana's expansion of a PostgreSQL panel query, reproduced so tests can run the SQL.

The order is Grafana's: (1) the frontend replaces template variables (``$job``, ``${job}``,
``[[job]]``) the way the SQL data sources format values; (2) the backend replaces the global
macros ``$__interval_ms``, ``$__interval``, ``$__unixEpochFrom()``, ``$__unixEpochTo()``;
(3) every ``$name(args)`` match of ``\\$([_a-zA-Z0-9]+)\\(([^\\)]*)\\)`` is evaluated as in
``pkg/tsdb/grafana-postgresql-datasource/macros.go``; an unknown macro is an error there too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+)\]\]|\$\{(\w+)\}")
MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
GO_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DATE_UNIT = re.compile(r"^(\d+)([dwMy])$")


class MacroError(ValueError):
    """The query would fail in Grafana too (unknown macro, bad arguments or interval)."""


@dataclass(frozen=True)
class Variable:
    """A template variable's current value; ``multi``/``include_all`` change the quoting."""

    value: str | Sequence[str]
    multi: bool = False
    include_all: bool = False


@dataclass(frozen=True)
class QueryContext:
    """What Grafana sends with a query: time range, interval and the variables."""

    time_from: datetime
    time_to: datetime
    interval: timedelta = timedelta(minutes=1)
    variables: Mapping[str, Variable] = field(default_factory=dict)
    timescaledb: bool = False


def expand(sql: str, ctx: QueryContext) -> str:
    """The SQL PostgreSQL receives from Grafana for ``sql`` under ``ctx``."""
    return evaluate_macros(global_macros(interpolate_variables(sql, ctx.variables), ctx), ctx)


# --- (1) template variables (frontend, SqlDatasource.interpolateVariable) ----------------


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def format_value(var: Variable) -> str:
    if isinstance(var.value, str):
        if var.multi or var.include_all:
            return quote_literal(var.value)
        return var.value.replace("'", "''")
    return ",".join(quote_literal(v) for v in var.value)


def interpolate_variables(sql: str, variables: Mapping[str, Variable]) -> str:
    """Replace known variables; unknown names (``$__interval``, macros) are left as they are."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        var = variables.get(name)
        return m.group(0) if var is None else format_value(var)

    return VARIABLE.sub(repl, sql)


# --- (2) global macros (sqleng.Interpolate) -----------------------------------------------


def format_interval(d: timedelta) -> str:
    """gtime.FormatInterval: the largest whole unit, e.g. ``1m``, ``90s`` -> ``1m``."""
    ms = d // timedelta(milliseconds=1)
    for unit, size in (
        ("y", 31_536_000_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ):
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def global_macros(sql: str, ctx: QueryContext) -> str:
    ms = ctx.interval // timedelta(milliseconds=1)
    sql = sql.replace("$__interval_ms", str(ms))
    sql = sql.replace("$__interval", format_interval(ctx.interval))
    sql = sql.replace("$__unixEpochFrom()", str(_epoch(ctx.time_from)))
    return sql.replace("$__unixEpochTo()", str(_epoch(ctx.time_to)))


# --- (3) function macros (postgres macros.go) ---------------------------------------------


def rfc3339_nano(t: datetime) -> str:
    """Go's time.RFC3339Nano in UTC: fraction without trailing zeros, ``Z`` suffix."""
    t = _utc(t)
    frac = f".{t.microsecond:06d}".rstrip("0") if t.microsecond else ""
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def go_float(x: float) -> str:
    """Go's ``%v`` of a float64 for the values an interval in seconds takes."""
    return str(int(x)) if x.is_integer() and abs(x) < 1e21 else repr(x)


def parse_interval(text: str, now: datetime | None = None) -> timedelta:
    """gtime.ParseInterval: ``5m``, ``1h30m``, ``500ms`` (Go durations) or ``2d``, ``1w``,
    ``1M``, ``1y`` (calendar units counted from now, in UTC)."""
    if m := DATE_UNIT.match(text):
        n, unit = int(m.group(1)), m.group(2)
        now = _utc(now or datetime.now(UTC))
        if unit in "dw":
            return timedelta(days=n * (7 if unit == "w" else 1))
        months = n if unit == "M" else 12 * n
        return _add_months(now, months) - now
    return _go_duration(text)


def _go_duration(text: str) -> timedelta:
    body = text.lstrip("+-")
    if body == "0":
        return timedelta(0)
    pos, seconds = 0, 0.0
    for m in GO_DURATION_PART.finditer(body):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * GO_UNITS_S[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise MacroError(f"error parsing interval {text}")
    return timedelta(seconds=-seconds if text.startswith("-") else seconds)


def _add_months(t: datetime, months: int) -> datetime:
    """Go's AddDate(0, months, 0): the day overflows into the next month (Jan 31 + 1M = Mar 3)."""
    y, m = divmod(t.month - 1 + months, 12)
    first = t.replace(year=t.year + y, month=m + 1, day=1)
    return first + timedelta(days=t.day - 1)


def _interval_seconds(arg: str) -> float:
    return parse_interval(arg.strip("'")).total_seconds()


def _check_fill(args: list[str]) -> None:
    if len(args) == 3 and args[2] not in ("NULL", "previous"):
        try:
            float(args[2])
        except ValueError:
            raise MacroError(f"error parsing fill value {args[2]}") from None


def evaluate_macro(name: str, args: list[str], ctx: QueryContext) -> str:
    frm, to = ctx.time_from, ctx.time_to
    match name:
        case "__time":
            return f'{args[0]} AS "time"'
        case "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        case "__timeFilter":
            return f"{args[0]} BETWEEN '{rfc3339_nano(frm)}' AND '{rfc3339_nano(to)}'"
        case "__timeFrom":
            return f"'{rfc3339_nano(frm)}'"
        case "__timeTo":
            return f"'{rfc3339_nano(to)}'"
        case "__timeGroup":
            if len(args) < 2:
                raise MacroError(f"macro {name} needs time column and interval")
            sec = _interval_seconds(args[1])
            _check_fill(args)
            if ctx.timescaledb:
                return f"time_bucket('{sec:.3f}s',{args[0]})"
            return f"floor(extract(epoch from {args[0]})/{go_float(sec)})*{go_float(sec)}"
        case "__timeGroupAlias":
            return evaluate_macro("__timeGroup", args, ctx) + ' AS "time"'
        case "__unixEpochFilter":
            return f"{args[0]} >= {_epoch(frm)} AND {args[0]} <= {_epoch(to)}"
        case "__unixEpochNanoFilter":
            return f"{args[0]} >= {_epoch_ns(frm)} AND {args[0]} <= {_epoch_ns(to)}"
        case "__unixEpochNanoFrom":
            return str(_epoch_ns(frm))
        case "__unixEpochNanoTo":
            return str(_epoch_ns(to))
        case "__unixEpochGroup":
            if len(args) < 2:
                raise MacroError(f"macro {name} needs time column and interval and optional fill")
            sec = _interval_seconds(args[1])
            _check_fill(args)
            return f"floor(({args[0]})/{go_float(sec)})*{go_float(sec)}"
        case "__unixEpochGroupAlias":
            return evaluate_macro("__unixEpochGroup", args, ctx) + ' AS "time"'
    raise MacroError(f"undefined macro: ${name}")


def evaluate_macros(sql: str, ctx: QueryContext) -> str:
    original = sql

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        # Pre-5.3 compatibility: "$__timeGroup(...)," is taken as the alias form. Grafana looks
        # at the first occurrence of the call in the query, which this reproduces.
        if name == "__timeGroup":
            end = original.find(m.group(0)) + len(m.group(0))
            if end < len(original) and original[end] == ",":
                name = "__timeGroupAlias"
        args = [a.strip(" ") for a in m.group(2).split(",")]
        return evaluate_macro(name, args, ctx)

    return MACRO.sub(repl, sql)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("time range bounds must be timezone-aware")
    return t.astimezone(UTC)


def _epoch(t: datetime) -> int:
    return int(_utc(t).timestamp() // 1)


def _epoch_ns(t: datetime) -> int:
    t = _utc(t)
    return int(t.replace(microsecond=0).timestamp()) * 1_000_000_000 + t.microsecond * 1000
