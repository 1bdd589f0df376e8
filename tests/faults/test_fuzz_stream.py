"""A fuzz sample through the running services: malformed layer and score records mixed into a
good print. Each bad one ends as one dead letter whose field names what was wrong, each good
layer is scored and charted, and both services stay up."""

from __future__ import annotations

from pathlib import Path

from bench.faults.check import check
from bench.faults.fuzz import KINDS, cases
from bench.faults.rig import Rig, RigOptions


def test_malformed_records_are_dead_lettered_and_the_print_goes_on(quick_model_dir: Path):
    opts = RigOptions(printers=2, layers=16, interval_s=0.05, defect_at=100, phase1_layers=6)
    bad = cases(3 * len(KINDS), seed=7)
    with Rig(opts, model_dir=quick_model_dir) as rig:
        rig.start_all()
        feed = rig.feed(bad=[(i % opts.layers, c.bad) for i, c in enumerate(bad)])
        assert rig.wait_settled(feed, timeout=120), rig.progress()
        out = check(rig, feed, "fuzz sample")
        alive = {n: p.poll() is None for n, p in rig.procs.items()}
        stages = rig.query("SELECT stage, count(*) AS n FROM dead_letters GROUP BY stage")
    assert out.clean, out.as_dict()
    assert out.bad == out.dead_lettered == len(bad) and out.scored_once == out.sent == 32
    assert all(alive.values()), alive
    by_stage = {r.stage: r.n for r in stages}
    assert by_stage == {
        "scorer": sum(c.topic == "layers" for c in bad),
        "monitor": sum(c.topic == "scores" for c in bad),
    }
