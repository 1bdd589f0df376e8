"""Simulator contracts: determinism, pixel-exact masks, persistence, API validation."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.simulate import (
    CATEGORIES,
    DEFECT_KINDS,
    DEFECTS,
    DefectEvent,
    kinds_for,
    make_renderer,
    render_layer,
    simulate_print,
)

SIZE = 96
ALL_KINDS = [(p, k) for p, kinds in DEFECT_KINDS.items() for k in kinds]


def _category_for(process: str, kind: str) -> str:
    return next(
        c.name for c in CATEGORIES.values() if c.process == process and kind in kinds_for(c)
    )


def _changed(frame) -> np.ndarray:
    diff = frame.clean != frame.image
    return diff.any(axis=2) if diff.ndim == 3 else diff


def test_same_seed_same_bytes_different_seed_differs() -> None:
    kw = {"layers": 3, "defects": ["crack@1:0.8"], "size": 64}
    a = list(simulate_print(seed=7, **kw))
    b = list(simulate_print(seed=7, **kw))
    c = list(simulate_print(seed=8, **kw))
    for fa, fb in zip(a, b, strict=True):
        assert fa.image.tobytes() == fb.image.tobytes()
        assert fa.mask.tobytes() == fb.mask.tobytes()
    assert any(fa.image.tobytes() != fc.image.tobytes() for fa, fc in zip(a, c, strict=True))


def test_a_layer_renders_the_same_alone_or_in_sequence() -> None:
    frames = list(simulate_print(6, seed=3, size=64, category="fdm_grid"))
    alone = render_layer(make_renderer(CATEGORIES["fdm_grid"], 3, 64, 6), 4)
    assert alone.image.tobytes() == frames[4].image.tobytes()


@pytest.mark.parametrize("category", sorted(CATEGORIES))
def test_normal_layers_have_empty_masks_and_vary(category: str) -> None:
    frames = list(simulate_print(3, seed=1, size=64, category=category))
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.shape == (64, 64)
        assert f.mask.shape == (64, 64) and not f.mask.any()
        assert f.defects == [] and not f.anomalous
        assert f.image.std() > 3  # a textured picture, not a flat field
    assert frames[0].image.tobytes() != frames[1].image.tobytes()


@pytest.mark.parametrize(("process", "kind"), ALL_KINDS)
def test_mask_is_exactly_where_the_defect_changed_the_image(process: str, kind: str) -> None:
    layer = 6
    frames = list(
        simulate_print(
            layer + 1,
            [DefectEvent(kind, layer, 0.7)],
            seed=11,
            size=SIZE,
            category=_category_for(process, kind),
        )
    )
    f = frames[layer]
    assert f.mask.dtype == np.uint8 and set(np.unique(f.mask)) <= {0, 255}
    assert f.mask.any(), f"{kind} left no visible trace"
    np.testing.assert_array_equal(f.mask > 0, _changed(f))
    assert f.defects == [{"kind": kind, "severity": 0.7, "onset_layer": layer, "extent": 1.0}]
    assert all(not g.mask.any() for g in frames[:layer])


@pytest.mark.parametrize("category", ["fdm_gyroid", "lpbf_fused"])
def test_rgb_frames_keep_the_mask_contract(category: str) -> None:
    kind = kinds_for(CATEGORIES[category])[0]
    (f,) = simulate_print(1, [f"{kind}@0:0.9"], seed=2, size=64, category=category, rgb=True)
    assert f.image.shape == (64, 64, 3) and f.mask.shape == (64, 64)
    assert f.mask.any()
    np.testing.assert_array_equal(f.mask > 0, _changed(f))


@pytest.mark.parametrize(
    ("process", "kind"), [("fdm", "crack"), ("fdm", "stringing"), ("lpbf", "super_elevation")]
)
def test_growing_defects_persist_and_grow(process: str, kind: str) -> None:
    spec = DEFECTS[process][kind]
    assert spec.lifetime is None and spec.growth > 0
    onset, layers = 2, 9
    frames = list(
        simulate_print(
            layers,
            [f"{kind}@{onset}:0.5"],
            seed=5,
            size=SIZE,
            category=_category_for(process, kind),
        )
    )
    assert not any(f.mask.any() for f in frames[:onset])
    assert all(f.mask_area > 0 for f in frames[onset:])
    assert frames[-1].defects[0]["extent"] > frames[onset].defects[0]["extent"]
    assert frames[-1].mask_area > frames[onset].mask_area


@pytest.mark.parametrize(("process", "kind"), [("fdm", "burn"), ("lpbf", "spatter")])
def test_transient_defects_are_covered_by_later_layers(process: str, kind: str) -> None:
    spec = DEFECTS[process][kind]
    assert spec.lifetime is not None
    onset = 1
    frames = list(
        simulate_print(
            onset + spec.lifetime + 2,
            [f"{kind}@{onset}"],
            seed=4,
            size=64,
            category=_category_for(process, kind),
        )
    )
    assert all(f.mask.any() for f in frames[onset : onset + spec.lifetime])
    assert not any(f.mask.any() or f.defects for f in frames[onset + spec.lifetime :])


def test_layer_shift_persists_with_the_same_offset() -> None:
    frames = list(simulate_print(6, ["layer_shift@2:0.8"], seed=9, size=SIZE))
    assert all(f.mask_area > 0 for f in frames[2:])
    assert all(f.defects[0]["extent"] == 1.0 for f in frames[2:])


def test_two_defects_on_one_layer_union_their_masks() -> None:
    (f,) = simulate_print(1, ["under_extrusion@0:0.8", "contamination@0:0.8"], seed=1, size=SIZE)
    assert [d["kind"] for d in f.defects] == ["under_extrusion", "contamination"]
    np.testing.assert_array_equal(f.mask > 0, _changed(f))


def test_event_parsing_and_validation() -> None:
    assert DefectEvent.parse("crack@40:0.8") == DefectEvent("crack", 40, 0.8)
    assert DefectEvent.parse(" burn @ 3 ") == DefectEvent("burn", 3, 0.6)
    assert str(DefectEvent("voids", 2, 0.5)) == "voids@2:0.5"
    for bad in ("crack", "crack@x", "crack@4:zero"):
        with pytest.raises(ValueError):
            DefectEvent.parse(bad)
    for sev in (0.0, 1.5):
        with pytest.raises(ValueError):
            DefectEvent("crack", 1, sev)


def test_invalid_choices_fail_at_the_call() -> None:
    with pytest.raises(ValueError, match="not available"):
        simulate_print(3, ["porosity@1"], category="lpbf_powder")
    with pytest.raises(ValueError, match="not available"):
        simulate_print(3, ["recoater_streak@1"], process="fdm")
    with pytest.raises(ValueError, match="unknown category"):
        simulate_print(3, category="nope")
    with pytest.raises(ValueError, match="unknown process"):
        simulate_print(3, process="sla")
    # a category fixes the process: a default process passed along does not conflict
    (f,) = simulate_print(1, ["porosity@0"], category="lpbf_fused", process="fdm", size=64)
    assert f.image.shape == (64, 64) and f.defects[0]["kind"] == "porosity"
