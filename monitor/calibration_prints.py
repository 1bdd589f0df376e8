"""Calibration prints: whole normal prints whose score sequences the level model is fitted on,
from the database's history, a scores CSV or the simulator; and the per-layer model outputs of
simulated prints (calibration prints, and the false-stop benchmark's normal and defective ones).

A print is scored as the scorer service would score it (the model's batched ``score_batch``),
and kept as one row per layer: score, f1, f2, largest defect-cluster area and the model's own
per-layer verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from monitor.calibration import fit_print_levels, model_calibration
from monitor.levels import LevelModel

# Seeds of calibration prints: far from the benchmark's and the demo's job seeds, so that no
# print the level model was fitted on is ever a print it is judged on.
CALIBRATION_SEED = 900_000
COLUMNS = ("score", "f1", "f2", "largest_area", "anomalous")


def score_simulated_print(
    model: Any,
    seed: int,
    layers: int,
    *,
    size: int,
    category: str,
    defects: Sequence[Any] = (),
    batch: int = 8,
) -> np.ndarray:
    """(layers × 5) rows in COLUMNS order for one simulated print. Each layer goes with its
    references (the previous layer, the expected outline and the job's normal placement), as
    `ingest simulate` and the scorer's memories give them, batch by batch as the scorer scores
    them; a model that uses no references ignores them."""
    from ingest.simulate import expected_outline, make_renderer, simulate_print
    from ingest.simulate.categories import resolve_category
    from scorer.data import iter_batches
    from scorer.job_placement import JobPlacements
    from scorer.methods import LayerReference, score_layers

    frames = list(simulate_print(layers, defects, seed=seed, size=size, category=category))
    designed = make_renderer(resolve_category(category, "fdm"), seed, size, layers)
    images = [f.image for f in frames]
    placements, job = JobPlacements(), ("simulated", str(seed))  # the scorer's defaults
    results = []
    for chunk in iter_batches(list(range(len(frames))), batch):
        refs = [
            LayerReference(
                images[i - 1] if i else None,
                expected_outline(designed, frames[i].layer),
                None,
                placements.placement(job, i),
            )
            for i in chunk
        ]
        scored = score_layers(model, [images[i] for i in chunk], refs)
        for i, r in zip(chunk, scored, strict=True):
            placements.add(job, i, r.outline_state, r.anomalous)
        results += scored
    return np.array(
        [[r.score, r.f1, r.f2, r.largest_area, float(r.anomalous)] for r in results], dtype=float
    )


def calibration_print_scores(
    model: Any,
    prints: int,
    layers: int,
    *,
    size: int,
    category: str,
    batch: int = 8,
    on_print: Callable[[int], None] | None = None,
) -> list[list[list[float]]]:
    """``prints`` normal simulated calibration prints: per layer [score, f1, f2]."""
    out = []
    for i in range(prints):
        rows = score_simulated_print(
            model, CALIBRATION_SEED + i, layers, size=size, category=category, batch=batch
        )
        out.append(rows[:, :3].tolist())
        if on_print is not None:
            on_print(i)
    return out


def sequences_by_job(
    records: Iterable[tuple[str, int, float | None, float | None, float | None]],
) -> list[list[list[float]]]:
    """(job, layer, score, f1, f2) rows to one print per job: per layer [score, f1, f2] in
    layer order (NaN for a missing value or layer), as the level model's fit takes them."""
    nan = float("nan")
    jobs: dict[str, dict[int, list[float]]] = {}
    for job, layer, *values in records:
        jobs.setdefault(job, {})[int(layer)] = [nan if v is None else float(v) for v in values]
    out = []
    for layers in jobs.values():
        first, last = min(layers), max(layers)
        out.append([layers.get(t, [nan, nan, nan]) for t in range(first, last + 1)])
    return out


def store_calibration_prints(
    engine: Any, model_version: str, source: str, prints: list[list[list[float]]]
) -> LevelModel:
    """Fit the level model on ``prints`` (per layer [score, f1, f2]) with the statistic of the
    model's stored Phase I and keep both for the monitor, which refits from the prints when it
    starts."""
    from sqlalchemy import select

    from storage import repository
    from storage.models import ModelRecord

    t = ModelRecord.__table__
    with engine.begin() as conn:
        config = conn.execute(select(t.c.config).where(t.c.version == model_version)).scalar()
        if not config:
            raise ValueError(
                f"model {model_version!r} is not in the models table (a scorer registers it "
                "when it starts with that model)"
            )
        levels = fit_print_levels(model_calibration(config), prints)
        repository.save_print_calibration(conn, model_version, source, prints, levels.to_dict())
    return levels
