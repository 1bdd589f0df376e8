"""``layerwatch monitor``: design chart limits from a false-alarm budget; replay scores offline."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from layerwatch.core.console import console
from monitor import arl
from monitor.alarms import PolicyError, PolicySet, load_policy
from monitor.calibration import Calibration, fit_scores, model_calibration
from monitor.design import DELTAS, ChartDesign
from monitor.engine import JobMonitor

app = typer.Typer(
    help="Control charts for layer scores: design limits by ARL, replay a scores CSV offline.",
    no_args_is_help=True,
)

DEFAULT_K = ChartDesign().k
ARL0 = Annotated[
    float | None, typer.Option(help="stop-level ARL0 per build (overrides --layers/-prob)")
]
Layers = Annotated[int, typer.Option(help="layers per build: the false-alarm horizon")]
Prob = Annotated[float, typer.Option(help="P(false stop per build); ARL0 = L / -ln(1-P)")]
WarnProb = Annotated[float, typer.Option(help="P(false warning per build)")]
Lam = Annotated[float, typer.Option(help="EWMA smoothing constant")]
K = Annotated[float, typer.Option(help="CUSUM reference value (half the shift to detect)")]
PolicyFile = Annotated[
    Path | None, typer.Option(exists=True, dir_okay=False, help="alarm policy TOML")
]

POINT_COLUMNS = ("printer", "job", "layer", "chart", "statistic", "center", "lcl", "ucl", "signal")
ALARM_COLUMNS = ("printer", "job", "layer", "chart", "level", "rule")

log = logging.getLogger(__name__)


def _design(arl0: float | None, layers: int, prob: float, warn_prob: float, lam: float, k: float):
    try:
        return ChartDesign(
            layers=layers,
            stop_false_alarm_prob=prob,
            warn_false_alarm_prob=warn_prob,
            stop_arl0=arl0,
            lam=lam,
            k=k,
        )
    except ValidationError as e:
        raise typer.BadParameter(str(e)) from None


def _policies(path: Path | None) -> PolicySet:
    if path is None:
        return PolicySet()
    try:
        return load_policy(path)
    except PolicyError as e:
        raise typer.BadParameter(str(e), param_hint="--policy") from None


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.2f}"


@app.command()
def design(
    arl0: ARL0 = None,
    layers: Layers = 1000,
    false_alarm_prob: Prob = 0.05,
    warn_false_alarm_prob: WarnProb = 0.2,
    lam: Lam = 0.2,
    k: K = DEFAULT_K,
    policy: PolicyFile = None,
    mc_runs: Annotated[int, typer.Option(help="Monte Carlo runs where no chain exists")] = 1000,
) -> None:
    """Print each chart's limit and its in-control and shifted ARLs (shift in sigma units)."""
    d = _design(arl0, layers, false_alarm_prob, warn_false_alarm_prob, lam, k)
    pol = _policies(policy).default
    lim = d.solve(pol.warn.charts, pol.stop.criteria)
    for level, build, n in (
        ("stop", lim.stop_build_arl0, len(lim.stop_criteria)),
        ("warn", lim.warn_build_arl0, len(lim.warn_charts)),
    ):
        console.print(
            f"[bold]{level}[/]: build ARL0 {build:,.0f} (P(false {level} in {d.layers} layers) = "
            f"{arl.false_alarm_prob(d.layers, build):.3g}), Šidák over {n} -> "
            f"{arl.sidak_arl0(build, n):,.0f} per chart"
        )
    table = Table(show_lines=False)
    for col in ("chart", "level", "limit", "ARL0", *(f"δ={dl:g}" for dl in DELTAS), "method"):
        table.add_column(col, justify="right" if col.startswith(("ARL", "δ")) else "left")
    for row in d.report(lim, rules=pol.warn.rules, mc_runs=mc_runs):
        table.add_row(
            row.chart,
            row.level,
            row.limit,
            _fmt(row.arl0),
            *(_fmt(row.shifted.get(dl)) for dl in DELTAS),
            row.method,
        )
    console.print(table)


def _optional(row: dict[str, str], key: str) -> float | None:
    v = (row.get(key) or "").strip()
    return float(v) if v else None


def _read_jobs(path: Path) -> Iterator[tuple[str, str, list[tuple[Any, ...]]]]:
    """Rows grouped by (printer, job) in order of first appearance, sorted by layer."""
    jobs: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"printer", "job", "layer", "score"} - set(reader.fieldnames or ())
        if missing:
            raise typer.BadParameter(f"{path}: missing column(s) {sorted(missing)}")
        for i, row in enumerate(reader, start=2):
            try:
                rec = (
                    int(row["layer"]),
                    _optional(row, "score"),
                    _optional(row, "f1"),
                    _optional(row, "f2"),
                    _optional(row, "defect_area"),
                )
            except ValueError as e:
                raise typer.BadParameter(f"{path}:{i}: {e}") from None
            jobs.setdefault((row["printer"], row["job"]), []).append(rec)
    for (printer, job), recs in jobs.items():
        recs.sort(key=lambda r: r[0])
        yield printer, job, recs


def _calibration(path: Path | None) -> Calibration | None:
    if path is None:
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        return Calibration(score=fit_scores(data))
    if "calibration" in data:  # a model's config.json, as the live monitor reads it
        return model_calibration(data)
    return Calibration.from_dict(data)


@app.command()
def replay(
    scores: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV of scores")],
    out: Annotated[Path, typer.Option(help="directory for chart_points.csv and alarms.csv")],
    policy: PolicyFile = None,
    phase1_layers: Annotated[
        int, typer.Option(min=10, help="Phase I = first M layers of each job")
    ] = 100,
    calibration: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="JSON list of in-control scores, or a model's config.json (its scores, features "
            "and cluster areas, as the live monitor uses them)",
        ),
    ] = None,
    arl0: ARL0 = None,
    layers: Layers = 1000,
    false_alarm_prob: Prob = 0.05,
    warn_false_alarm_prob: WarnProb = 0.2,
    lam: Lam = 0.2,
    k: K = DEFAULT_K,
) -> None:
    """Chart a scores CSV (printer,job,layer,score[,f1,f2,defect_area]) through JobMonitor.

    Phase I is the first M layers of each job (they get no chart points) unless --calibration
    gives it: in-control scores only, or a model's config.json with its scores, features and
    cluster areas (what it lacks still comes from the job).
    """
    d = _design(arl0, layers, false_alarm_prob, warn_false_alarm_prob, lam, k)
    policies = _policies(policy)
    cal = _calibration(calibration)
    out.mkdir(parents=True, exist_ok=True)
    n_points = n_alarms = n_jobs = 0
    with (
        (out / "chart_points.csv").open("w", newline="", encoding="utf-8") as pf,
        (out / "alarms.csv").open("w", newline="", encoding="utf-8") as af,
    ):
        points, alarms = csv.writer(pf), csv.writer(af)
        points.writerow(POINT_COLUMNS)
        alarms.writerow(ALARM_COLUMNS)
        for printer, job, recs in _read_jobs(scores):
            n_jobs += 1
            mon = JobMonitor(
                printer,
                job,
                design=d,
                policy=policies.for_printer(printer),
                calibration=cal,
                phase1_layers=phase1_layers,
            )
            for rec in recs:
                pts, events = mon.update(*rec)
                layer = rec[0]
                for p in pts:
                    points.writerow(
                        (printer, job, layer, p.chart, p.statistic, p.center, p.lcl, p.ucl,
                         "true" if p.signal else "false")
                    )  # fmt: skip
                for e in events:
                    alarms.writerow((printer, job, layer, e.chart, e.level, e.rule or ""))
                n_points += len(pts)
                n_alarms += len(events)
    console.print(f"{n_jobs} job(s): {n_points} chart points, {n_alarms} alarm(s) -> {out}")


if __name__ == "__main__":
    app()


@app.command()
def run(
    policy: PolicyFile = None,
    phase1_layers: Annotated[
        int, typer.Option(help="layers of a job used for Phase I where the model has none")
    ] = 30,
    phase1: Annotated[
        str,
        typer.Option(
            help="Phase I source: 'model' (the model's calibration scores) or 'job' (each "
            "job's first --phase1-layers layers)"
        ),
    ] = "model",
    layers: Layers = 1000,
    false_alarm_prob: Prob = 0.05,
    warn_prob: WarnProb = 0.2,
    k: K = DEFAULT_K,
) -> None:
    """Run the monitor service: consumer group 'monitor' on the scores topic; chart points
    and alarms to PostgreSQL, alarms to the alarms topic, stop actions to the printers."""
    from layerwatch.core.console import endpoints, fail
    from layerwatch.core.kafka import ensure_configured_topics
    from layerwatch.core.settings import get_settings
    from monitor.actions.config import PrinterConfigError, load_printers
    from monitor.service import MonitorConfig, MonitorService
    from storage import db

    if phase1 not in ("model", "job"):
        raise typer.BadParameter("must be 'model' or 'job'", param_hint="--phase1")
    s = get_settings()
    ep = endpoints()
    try:
        db.require_current_schema(ep.database_url)
        printers = load_printers(policy)
    except (db.SchemaError, PrinterConfigError) as exc:
        raise fail(str(exc)) from exc
    ensure_configured_topics(s, ep.kafka_bootstrap)
    cfg = MonitorConfig(
        bootstrap=ep.kafka_bootstrap,
        database_url=ep.database_url,
        topics=s.topics,
        policies=_policies(policy),
        printers=printers,
        design=_design(None, layers, false_alarm_prob, warn_prob, 0.2, k),
        phase1_layers=phase1_layers,
        phase1=phase1,  # type: ignore[arg-type]
        on_alarm=_grafana_hook(s),
    )
    service = MonitorService(cfg)
    service.install_signal_handlers()
    service.run()


def _grafana_hook(settings):
    """Post an annotation for every alarm when a Grafana URL and token are configured (the
    annotations API needs the token; a URL alone would fail on every alarm)."""
    if not settings.grafana_url:
        return None
    if settings.grafana_token is None:
        log.warning("grafana_url is set but grafana_token is not: no alarm annotations")
        return None
    from monitor.actions.annotations import alarm_annotation_hook

    return alarm_annotation_hook(settings)
