"""JobMonitor: the one code path from a layer's score to chart points and alarm events.

The Kafka service and the offline replay both call ``update`` once per layer. The hot path is
plain Python floats: the score's transform, each chart's kernel step and the alarm tracker; no
numpy per scalar and no pydantic per point.

Inputs come in three groups, each with its own Phase I: the score (Shewhart, EWMA, CUSUM,
self-starting, drift detectors, all on z, or with a level model on the innovations of the
job's own centre), the feature vector (f1, f2) for MEWMA and T², and the
largest-cluster area. A group whose calibration is not supplied buffers its first
``phase1_layers`` values in the job, fits Phase I on them and charts from the next layer on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from monitor.alarms import AlarmEvent, AlarmPolicy, AlarmTracker, StopThresholds
from monitor.arl import consecutive_L_for_arl0, t2_ucl_phase2
from monitor.calibration import (
    AreaCalibration,
    Calibration,
    FeatureCalibration,
    ScoreCalibration,
    fit_areas,
    fit_features,
    fit_scores,
)
from monitor.charts import (
    Chart,
    ChartPoint,
    ClusterAreaKernel,
    CusumKernel,
    EwmaKernel,
    HotellingKernel,
    IndividualsKernel,
    KernelChart,
    MewmaKernel,
    SelfStartKernel,
)
from monitor.design import ChartDesign
from monitor.drift import DriftChart
from monitor.levels import LevelChart, LevelFilter

SCORE_CHARTS = ("shewhart", "ewma", "cusum", "selfstart", "adwin", "pagehinkley")
FEATURE_CHARTS = ("mewma", "t2")
AREA_CHARTS = ("cluster",)
UNIT_SCORE = ScoreCalibration(mu0=0.0, sigma0=1.0, n=0)
# Every chart name the monitor can write to chart_points ("level": the job's own centre).
CHART_NAMES = (*SCORE_CHARTS, *FEATURE_CHARTS, *AREA_CHARTS, "level")


def chart_from_state(d: dict[str, Any]) -> Chart:
    """Rebuild any chart from its ``state_dict()`` (river detectors replay their inputs)."""
    if d["kind"] in ("adwin", "pagehinkley"):
        return DriftChart.from_state(d)
    return KernelChart.from_state(d)


@dataclass
class _Group:
    """Charts fed by one input; until the group's Phase I is known its inputs are buffered."""

    slot: int  # index into the per-layer inputs (score, features, area)
    part: str  # Calibration field
    fit: Callable[[list[Any]], Any]
    build: Callable[[Any], tuple[Callable[[Any], Any] | None, list[Chart]]]
    charts: list[Chart] | None = None
    prepare: Callable[[Any], Any] | None = None
    buffer: list[Any] = field(default_factory=list)
    error: str | None = None


class JobMonitor:
    """Charts and alarms for one (printer, job). Layers must arrive in increasing order; a
    repeated or older layer is ignored, which makes at-least-once delivery harmless."""

    def __init__(
        self,
        printer: str,
        job: str,
        *,
        design: ChartDesign | None = None,
        policy: AlarmPolicy | None = None,
        calibration: Calibration | None = None,
        phase1_layers: int = 100,
    ) -> None:
        self.printer, self.job = printer, job
        self.calibration = calibration or Calibration()
        design = design or ChartDesign()
        if self.calibration.levels is not None and not design.levels:
            design = design.model_copy(update={"levels": True})  # the score charts see innovations
        self.design = design
        self.policy = policy = policy or AlarmPolicy()
        self.phase1_layers = phase1_layers
        self.level: LevelFilter | None = None  # the job's own centre, with a level model
        warn, stop = policy.warn.charts, policy.stop.criteria
        self.limits = lim = design.solve(warn, stop)
        k = policy.stop.consecutive_anomalous or lim.consecutive_k
        consecutive_limit = policy.stop.consecutive_limit or (
            lim.consecutive_L
            if k == lim.consecutive_k
            else consecutive_L_for_arl0(k, lim.stop_chart_arl0)
        )
        self.tracker = AlarmTracker(
            printer,
            job,
            policy,
            StopThresholds(
                cusum_h=policy.stop.cusum_h or lim.cusum_h_stop,
                cluster_area=policy.stop.cluster_area_critical,
                consecutive_limit=consecutive_limit,
                consecutive_k=k,
            ),
        )
        needed = set(warn)
        needed |= {"cusum"} & set(stop)
        needed |= {"cluster"} & set(stop)
        if "consecutive" in stop:
            needed.add("shewhart")
        self._needed = needed
        # With a level model the score charts judge each layer's (score, f1, f2) against the
        # job's own centre (slot 3); without one, z of the score (slot 0).
        score_slot = 0 if self.calibration.levels is None else 3
        groups = [
            _Group(score_slot, "score", fit_scores, self._build_score),
            _Group(1, "features", fit_features, self._build_features),
            _Group(2, "areas", fit_areas, self._build_areas),
        ]
        kinds = (SCORE_CHARTS, FEATURE_CHARTS, AREA_CHARTS)
        self._groups = [g for g, names in zip(groups, kinds, strict=True) if needed & set(names)]
        for g in self._groups:
            known = getattr(self.calibration, g.part)
            if known is None and g.part == "score" and self.calibration.levels is not None:
                known = UNIT_SCORE  # the level model is the score charts' whole Phase I
            if known is not None:
                self._activate(g, known)
        self.last_layer: int | None = None

    # -- building charts from a group's Phase I ------------------------------------------------

    def _wanted(self, makers: dict[str, Callable[[], Chart]]) -> list[Chart]:
        return [make() for name, make in makers.items() if name in self._needed]

    def _build_score(self, sc: ScoreCalibration) -> tuple[Callable[[float], float], list[Chart]]:
        d, lim, rules = self.design, self.limits, self.policy.warn.rules
        cusum_h = lim.cusum_h if "cusum" in self.policy.warn.charts else lim.cusum_h_stop
        makers: dict[str, Callable[[], Chart]] = {
            "shewhart": lambda: KernelChart(IndividualsKernel(L=lim.shewhart_L, rules=rules)),
            "ewma": lambda: KernelChart(EwmaKernel(d.lam, lim.ewma_L)),
            "cusum": lambda: KernelChart(CusumKernel(d.cusum_k, cusum_h, d.fir)),
            "selfstart": lambda: KernelChart(SelfStartKernel(CusumKernel(d.cusum_k, lim.cusum_h))),
            "adwin": lambda: DriftChart("adwin", lim.adwin_delta or 0.002),
            "pagehinkley": lambda: DriftChart("pagehinkley", lim.pagehinkley_threshold or 50.0),
        }
        charts = self._wanted(makers)
        if self.calibration.levels is None:
            return sc.z, charts
        self.level = level = LevelFilter(self.calibration.levels)
        st, surprise = self.calibration.level_statistic, level.update
        if st is None:
            return (lambda row: surprise(row[0])), [*charts, LevelChart(level)]
        return (lambda row: surprise(st(row[1], row[2]))), [*charts, LevelChart(level)]

    def _build_features(self, fc: FeatureCalibration) -> tuple[None, list[Chart]]:
        d, lim = self.design, self.limits
        # T² limit with estimated parameters (Tracy, Young & Mason); -> chi² as n grows.
        ucl = t2_ucl_phase2(len(fc.mean), fc.n, 1.0 / lim.warn_chart_arl0)
        makers: dict[str, Callable[[], Chart]] = {
            "mewma": lambda: KernelChart(MewmaKernel(fc.mean, fc.cov, d.mewma_lam, lim.mewma_h)),
            "t2": lambda: KernelChart(HotellingKernel(fc.mean, fc.cov, ucl)),
        }
        return None, self._wanted(makers)

    def _build_areas(self, ac: AreaCalibration) -> tuple[None, list[Chart]]:
        lim = self.limits
        if self.tracker.thresholds.cluster_area is None:
            self.tracker.thresholds.cluster_area = ac.limit(lim.cluster_alpha_stop)
        makers: dict[str, Callable[[], Chart]] = {
            "cluster": lambda: KernelChart(
                ClusterAreaKernel(ac.limit(lim.cluster_alpha), ac.median)
            ),
        }
        return None, self._wanted(makers)

    def _activate(self, g: _Group, part: Any) -> None:
        g.prepare, g.charts = g.build(part)
        g.buffer = []
        self.calibration = dataclasses.replace(self.calibration, **{g.part: part})

    def _phase1(self, g: _Group, x: Any) -> None:
        g.buffer.append(x)
        if len(g.buffer) % self.phase1_layers == 0:
            try:
                self._activate(g, g.fit(g.buffer))
            except ValueError as e:  # e.g. zero spread: keep collecting and retry
                g.error = str(e)

    # -- the per-layer path --------------------------------------------------------------------

    def update(
        self,
        layer: int,
        score: float | None,
        f1: float | None = None,
        f2: float | None = None,
        defect_area: float | None = None,
    ) -> tuple[list[ChartPoint], list[AlarmEvent]]:
        """Chart one layer; missing (None/NaN) inputs skip their charts for this layer, and a
        layer within the policy's warm-up is neither charted nor part of any Phase I."""
        if self.last_layer is not None and layer <= self.last_layer:
            return [], []
        self.last_layer = layer
        if layer < self.policy.start.warmup_layers:
            return [], []
        feats = (f1, f2) if f1 is not None and f2 is not None and f1 == f1 and f2 == f2 else None
        row = None
        if self.level is not None or self.calibration.levels is not None:
            st = self.calibration.level_statistic
            usable = feats is not None if st is not None else score is not None and score == score
            row = (score, f1, f2) if usable else None
        inputs = (score, feats, defect_area, row)
        points: list[ChartPoint] = []
        for g in self._groups:
            x = inputs[g.slot]
            if x is None or x != x:
                continue
            if g.charts is None:
                self._phase1(g, x)
                continue
            if g.prepare is not None:
                x = g.prepare(x)
            signal = False
            for chart in g.charts:
                p = chart.update(x)
                if p is not None:
                    points.append(p)
                    signal |= p.signal
            if g.part == "score" and self.level is not None:
                self.level.hold = signal  # an out-of-control job's centre must not learn it
        return points, self.tracker.observe(layer, points)

    def replay(self, records: Iterable[tuple[Any, ...]]) -> None:
        """Rebuild state after a restart from the job's stored (layer, score, f1, f2, area)."""
        for r in records:
            self.update(*r)

    @property
    def charts(self) -> list[Chart]:
        return [c for g in self._groups for c in (g.charts or [])]

    @property
    def phase1_pending(self) -> list[str]:
        """Input groups that have data but are still collecting their Phase I layers."""
        return [g.part for g in self._groups if g.charts is None and g.buffer]
