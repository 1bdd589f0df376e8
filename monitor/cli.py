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
K = Annotated[
    float | None,
    typer.Option(help="CUSUM reference value (default: half the shift that matters, see design)"),
]
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
    scores: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="scores CSV of normal prints: fit the level model on them and check the design "
            "on them and on prints simulated from the fit",
        ),
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="with --scores: the model's config.json (its Phase I puts scores in z units; "
            "default: a Phase I fitted on the CSV's scores)",
        ),
    ] = None,
    sim_runs: Annotated[int, typer.Option(min=10, help="with --scores: simulated prints")] = 300,
) -> None:
    """Print each chart's limit and its in-control and shifted ARLs (shift in sigma units).

    With --scores, the charts are designed for the innovations of each job's own centre (the
    level model fitted on those normal prints; k defaults to half the 1-sigma shift that
    matters), and the design is checked by simulation: the per-print false-stop probability
    for --layers layers and the delay to a 2-sigma step, and on the given prints themselves.
    """
    d = _design(arl0, layers, false_alarm_prob, warn_false_alarm_prob, lam, k)
    if scores is not None:
        d = d.model_copy(update={"levels": True})
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
    if scores is not None:
        _design_on_scores(scores, calibration, d, pol, sim_runs)


def _design_on_scores(
    scores: Path, calibration: Path | None, d: ChartDesign, pol, runs: int
) -> None:
    from monitor.calibration import fit_print_levels
    from monitor.level_design import design_memory, level_design_report

    prints = _prints_csv(scores)
    cal = _calibration(calibration) or Calibration()
    try:
        levels = fit_print_levels(cal, prints)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--scores") from None
    console.print(_level_table(levels))
    real = [list(cal.level_values(p)) for p in prints]
    with console.status(f"simulating {runs} prints of {d.layers} layers"):
        rep = level_design_report(levels, d, pol, runs=runs, real=real)
    console.print(
        f"CUSUM k = {rep.cusum_k:g}; simulated from the fit ({rep.runs} prints of {rep.layers} "
        f"layers): P(false stop) = {rep.false_stop_prob:.3f} (design "
        f"{d.stop_false_alarm_prob:g}), P(false warn) = {rep.false_warn_prob:.3f}; a step of "
        f"{rep.shift:g}σ at layer 30 stopped in {rep.shift_detected:.0%} of prints, "
        f"{_fmt(rep.shift_delay_mean)} layers after it on average"
    )
    console.print(
        f"on the {rep.real_prints} given prints: {rep.real_false_stops} stopped; innovations "
        f"s.d. {rep.real_innovation_sd:.3f}, lag-1 autocorrelation "
        f"{rep.real_innovation_lag1:.3f} (a fitting model gives 1 and 0)"
    )
    with console.status("designing the centre's memory"):
        choice = design_memory(levels, d, pol, runs=runs)
    t = Table(title=f"the centre's memory, for a step of {choice.shift:g}σ (within-print)")
    for col in ("memory (layers)", "P(false stop)", f"stopped within {choice.window} layers"):
        t.add_column(col, justify="right")
    for r in choice.candidates:
        mark = " ← chosen" if r["memory"] == choice.memory else ""
        t.add_row(f"{r['memory']:.1f}{mark}", f"{r['false_stop_prob']:.3f}",
                  f"{r['stopped_within_window']:.0%}")  # fmt: skip
    console.print(t)


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
    calibration_prints: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="scores CSV of whole normal prints: with --calibration, each job is charted "
            "against its own centre (the level model, as `monitor calibrate` stores it)",
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
    from monitor.calibration import with_print_levels

    d = _design(arl0, layers, false_alarm_prob, warn_false_alarm_prob, lam, k)
    policies = _policies(policy)
    cal = _calibration(calibration)
    if calibration_prints is not None:
        if cal is None or cal.score is None:
            raise typer.BadParameter("needs --calibration", param_hint="--calibration-prints")
        cal = with_print_levels(cal, _prints_csv(calibration_prints))
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


def _prints_csv(path: Path) -> list[list[float]]:
    """One score sequence per job of a scores CSV (the columns `replay` reads)."""
    from monitor.calibration_prints import sequences_by_job

    return sequences_by_job(
        (f"{printer}/{job}", *rec[:4]) for printer, job, recs in _read_jobs(path) for rec in recs
    )


def _level_table(levels) -> Table:
    table = Table("parameter", "value", "meaning", title="level model")
    share = levels.between_sd**2 / (levels.between_sd**2 + levels.within_sd**2)
    for name, value, meaning in (
        ("m0", levels.m0, "mean level of a print (the statistic: larger log-feature, robust σ)"),
        (
            "between s.d.",
            levels.between_sd,
            f"spread of print levels ({share:.0%} of the variance)",
        ),
        ("within s.d.", levels.within_sd, "typical spread within a print"),
        ("a0", levels.a0, "how much prints differ in spread (small: a lot)"),
        ("memory", levels.memory, "layers a job's centre remembers (it follows slow drift)"),
    ):
        table.add_row(name, f"{value:.4f}", meaning)
    table.caption = f"{levels.n_prints} prints, {levels.n_layers} layers"
    return table


@app.command()
def calibrate(
    model_version: Annotated[
        str | None, typer.Option(help="model version (default: the one in --model)")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="model directory (for --simulate)"),
    ] = None,
    history: Annotated[
        bool, typer.Option("--history", help="fit on the database's completed normal prints")
    ] = False,
    scores: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="scores CSV of normal prints"),
    ] = None,
    simulate: Annotated[
        int, typer.Option(min=0, help="score this many simulated normal prints (needs --model)")
    ] = 0,
    layers: Annotated[int, typer.Option(min=3, help="layers per simulated print")] = 100,
    category: Annotated[str, typer.Option(help="simulator category of --simulate")] = (
        "fdm_rectilinear"
    ),
    min_layers: Annotated[int, typer.Option(min=3, help="--history: shortest print used")] = 30,
    max_prints: Annotated[int, typer.Option(min=3, help="--history: newest prints used")] = 100,
) -> None:
    """Fit the level model (the random-effects Phase I: how much prints differ, how a print's
    level drifts, how alike neighbouring layers are) on whole normal prints, and store it for
    the monitor: it then charts each job against its own, self-starting centre.

    The prints come from one source: --history (jobs of the model version in the database with
    at least --min-layers layers and no stop alarm), --scores CSV, or --simulate N (simulated
    normal prints scored by --model). The monitor reads the result when it first sees the model
    version (restart a running monitor)."""
    from layerwatch.core.console import endpoints, fail
    from monitor.calibration_prints import (
        calibration_print_scores,
        sequences_by_job,
        store_calibration_prints,
    )
    from storage import db, repository

    if sum((history, scores is not None, simulate > 0)) != 1:
        raise typer.BadParameter("give exactly one of --history, --scores, --simulate")
    if model is not None:
        config = json.loads((model / "config.json").read_text())
        model_version = model_version or config["model_version"]
    if not model_version:
        raise typer.BadParameter("give --model-version or --model", param_hint="--model-version")
    engine = db.make_engine(endpoints().database_url)
    if history:
        with engine.connect() as conn:
            rows = repository.normal_job_scores(conn, model_version, min_layers, max_prints)
        prints, source = sequences_by_job(rows), "database history"
    elif scores is not None:
        prints, source = _prints_csv(scores), f"scores CSV {scores.name}"
    else:
        if model is None:
            raise typer.BadParameter("--simulate needs --model", param_hint="--model")
        from scorer.device import pick_device
        from scorer.methods import load_model

        size = int(config.get("training", {}).get("image_shape", [128])[0])
        scorer = load_model(model, pick_device("auto"))
        with console.status(f"scoring {simulate} simulated prints of {layers} layers"):
            prints = calibration_print_scores(
                scorer, simulate, layers, size=size, category=category
            )
        source = f"simulated {category} {simulate}x{layers}"
    try:
        levels = store_calibration_prints(engine, model_version, source, prints)
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(_level_table(levels))
    console.print(f"stored for {model_version} ({source})")


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
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="health and Prometheus port (default: settings' monitor_metrics_port; 0 = off)"
        ),
    ] = None,
) -> None:
    """Run the monitor service: consumer group 'monitor' on the scores topic; chart points
    and alarms to PostgreSQL, alarms to the alarms topic, stop actions to the printers.
    Serves /health and /metrics on --metrics-port."""
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
        metrics_port=s.monitor_metrics_port if metrics_port is None else metrics_port,
        metrics_host=s.metrics_host,
        max_poll_interval_ms=s.max_poll_interval_ms,
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
