"""Geometric defects through the whole system (issue 18): a simulated print with a layer shift,
then one with warping, from layer 30, streamed by `layerwatch ingest simulate` (each layer with
its expected outline) into `layerwatch up` (scorer + monitor under the supervisor) with a
layer-aware model: a stop alarm at layer 30–32, none before, and the geometry channel named
among the channels that fired.

Both defects persist (every layer after the onset is shifted, or lifted): the geometry channel
sees that through the job's normal placement of its part against the outline
(scorer.job_placement), since each layer matches its equally displaced previous layer. The
policy leaves each job's first 5 layers uncharted ([start] warmup_layers): the solid bottom
layers and the first sparse layer over them differ from every later layer, once a print.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.faults.model import make_layer_aware_model
from bench.faults.rig import Rig, RigOptions

ONSET = 30
OPTS = RigOptions(
    printers=1, layers=36, interval_s=0.05, defect_at=ONSET, size=256, batch=4,
    category="fdm_rectilinear", phase1="job", phase1_layers=20, severity=0.9, warmup_layers=5,
)  # fmt: skip


@pytest.fixture(scope="module")
def layer_aware_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_layer_aware_model(tmp_path_factory.mktemp("layer-aware"), size=OPTS.size)


@pytest.fixture(scope="module")
def rig(layer_aware_model: Path) -> Iterator[Rig]:
    with Rig(OPTS, model_dir=layer_aware_model) as r:
        r.start_up()
        yield r


@pytest.mark.parametrize("kind", ["layer_shift", "warping"])
def test_a_geometric_defect_stops_the_print_at_its_onset(rig: Rig, kind: str) -> None:
    rig.new_print({"layer_shift": 1, "warping": 2}[kind])
    rig.opts.defect = kind
    feed = rig.feed_ingest(seed=3)
    logs = "\n".join(f"--- {n}\n{rig.log(n)}" for n in ("up", "scorer-0", "monitor", "ingest-p0"))
    assert rig.wait_settled(feed, timeout=240), f"{rig.progress()}\n{logs}"
    alarms = rig.query(
        "SELECT id, layer, level, chart, channels FROM alarms WHERE job = :j ORDER BY layer, id",
        j=rig.job,
    )
    scores = rig.query(
        "SELECT layer, round(score::numeric, 2), fired FROM scores WHERE job = :j ORDER BY layer",
        j=rig.job,
    )
    said = f"alarms {alarms}\nscores {scores}"
    stops = [a for a in alarms if a.level == "stop"]
    assert stops, f"no stop for the {kind}: {said}"
    assert ONSET <= stops[0].layer <= ONSET + 2, said
    assert "geometry" in (stops[0].channels or ""), said
    # every layer carried its outline and had its previous layer: none was scored by texture alone
    assert all(fired is not None for _, _, fired in scores)
    assert rig.printer is not None and (stops[0].id, "pause") in rig.printer.snapshot(), said
