"""The macro expander against the rules of Grafana's PostgreSQL data source (GRAFANA.md A4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from layerwatch.grafana.macros import (
    MacroError,
    QueryContext,
    Variable,
    expand,
    format_interval,
    parse_interval,
)

FROM = datetime(2017, 4, 21, 5, 1, 17, tzinfo=UTC)
TO = datetime(2017, 4, 21, 6, 1, 17, 500000, tzinfo=UTC)


def ctx(**kw: object) -> QueryContext:
    return QueryContext(FROM, TO, **kw)  # type: ignore[arg-type]


def test_time_filter_is_rfc3339_nano_in_utc_between_both_ends() -> None:
    berlin = datetime(2017, 4, 21, 7, 1, 17, tzinfo=UTC).astimezone()
    c = QueryContext(berlin, TO)
    assert expand("WHERE $__timeFilter(t)", c) == (
        "WHERE t BETWEEN '2017-04-21T07:01:17Z' AND '2017-04-21T06:01:17.5Z'"
    )
    assert expand("$__timeFrom() $__timeTo()", ctx()) == (
        "'2017-04-21T05:01:17Z' '2017-04-21T06:01:17.5Z'"
    )


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__timeGroup(t, '5m')", "floor(extract(epoch from t)/300)*300"),
        ("$__timeGroup(t,'500ms')", "floor(extract(epoch from t)/0.5)*0.5"),
        ("$__timeGroup(t, 1h30m, NULL)", "floor(extract(epoch from t)/5400)*5400"),
        ("$__timeGroupAlias(t, '1m')", 'floor(extract(epoch from t)/60)*60 AS "time"'),
        # pre-5.3 compatibility: a comma right after the call makes it the alias form
        (
            "SELECT $__timeGroup(t,'1m'), v",
            'SELECT floor(extract(epoch from t)/60)*60 AS "time", v',
        ),
        ("ORDER BY $__timeGroup(t,'1m')", "ORDER BY floor(extract(epoch from t)/60)*60"),
        ("$__time(c)", 'c AS "time"'),
        ("$__timeEpoch(c)", 'extract(epoch from c) as "time"'),
        ("$__unixEpochFilter(e)", "e >= 1492750877 AND e <= 1492754477"),
        ("$__unixEpochGroupAlias(e, '10s')", 'floor((e)/10)*10 AS "time"'),
        ("$__unixEpochNanoFrom()", "1492750877000000000"),
        ("$__unixEpochNanoTo()", "1492754477500000000"),
    ],
)
def test_function_macros(sql: str, expected: str) -> None:
    assert expand(sql, ctx()) == expected


def test_timescaledb_buckets() -> None:
    assert expand("$__timeGroup(t, '5m')", ctx(timescaledb=True)) == "time_bucket('300.000s',t)"


def test_global_macros_run_before_the_function_macros() -> None:
    c = ctx(interval=timedelta(seconds=90))
    sql = "$__timeGroupAlias(t, $__interval), n * 60000.0 / $__interval_ms"
    assert expand(sql, c) == 'floor(extract(epoch from t)/60)*60 AS "time", n * 60000.0 / 90000'
    assert expand("$__unixEpochFrom() $__unixEpochTo()", c) == "1492750877 1492754477"


def test_template_variables_first_quoted_as_the_sql_data_sources_do() -> None:
    variables = {
        "job": Variable("bob's"),
        "printer": Variable(["p1", "o'p"], multi=True),
        "one": Variable("p1", include_all=True),
        "col": Variable("captured_at"),
    }
    c = ctx(variables=variables)
    assert expand("job = '$job' AND ${job} [[job]]", c) == "job = 'bob''s' AND bob''s bob''s"
    assert expand("printer IN ($printer)", c) == "printer IN ('p1','o''p')"
    assert expand("printer IN ($one)", c) == "printer IN ('p1')"
    assert expand("$__timeFilter($col)", c).startswith("captured_at BETWEEN ")
    assert expand("$jobs $unknown", c) == "$jobs $unknown"  # only defined names are replaced


def test_unknown_macro_and_bad_interval_fail_as_in_grafana() -> None:
    with pytest.raises(MacroError, match="undefined macro"):
        expand("$__nope(x)", ctx())
    with pytest.raises(MacroError, match="interval"):
        expand("$__timeGroup(t, 'soon')", ctx())
    with pytest.raises(MacroError, match="needs time column"):
        expand("$__timeGroup(t)", ctx())


def test_intervals() -> None:
    assert format_interval(timedelta(seconds=90)) == "1m"
    assert format_interval(timedelta(milliseconds=1500)) == "1s"
    assert format_interval(timedelta(days=800)) == "2y"
    assert format_interval(timedelta(0)) == "1ms"
    assert parse_interval("1h30m") == timedelta(minutes=90)
    assert parse_interval("2w") == timedelta(days=14)
    jan31 = datetime(2025, 1, 31, tzinfo=UTC)
    assert parse_interval("1M", now=jan31) == timedelta(days=31)  # Go: Jan 31 + 1M = Mar 3
    assert parse_interval("1y", now=jan31) == timedelta(days=365)
