"""Cohort builders behind benchmarks/spatial.py: S3's long-range layouts, the pixel-level
real_S1 layouts (inflamed vs excluded nests), sample-efficiency subsampling, and the
chunked module assignment. Cheap: no training, no rendering."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from infra.errors import ConfigError
from synthetic.slides.nests import NestedSlideSpec, nest_layout
from synthetic.spatial import B, C, layout
from training.spatial.cv import subsample_patients
from training.spatial.modules import assign_modules


@pytest.mark.parametrize("label", [0, 1])
def test_s3_same_composition_and_planted_distances(label: int) -> None:
    rng = np.random.default_rng(3)
    counts, gaps = set(), []
    for _ in range(20):
        types = layout("S3", rng, 32, label)
        counts.add(tuple(np.bincount(types, minlength=6)))
        grid = types.reshape(32, 32)
        b, c = np.argwhere(grid == B), np.argwhere(grid == C)
        assert len(b) == len(c) == 4
        # 2x2 nests: the gap between them is the Chebyshev distance of their origins - 1
        gaps.append(int(np.abs(b.min(0) - c.min(0)).max()) - 1)
    assert len(counts) == 1  # identical composition in every slide
    if label:
        assert all(4 <= g <= 8 for g in gaps)
    else:
        assert all(g >= 24 for g in gaps)


def test_s3_refuses_a_grid_too_small_for_the_far_class() -> None:
    with pytest.raises(ConfigError, match="side >= 32"):
        layout("S3", np.random.default_rng(0), 16, 0)


@pytest.mark.parametrize("islands", [True, False])
@pytest.mark.parametrize("inflamed", [True, False])
def test_nested_layout_places_aggregates_inside_or_around(inflamed: bool, islands: bool) -> None:
    spec = NestedSlideSpec(islands=islands)
    for seed in range(30):
        lay = nest_layout(spec, inflamed, seed)
        assert len(lay.aggregates) == spec.n_nests * spec.aggregates_per_nest
        for ax, ay, r_a in lay.aggregates:
            d = min(
                math.hypot(ax - cx, ay - cy) - r for cx, cy, r in lay.nests
            )  # to the nearest nest edge
            if inflamed:
                assert d + r_a + spec.cuff_um <= 0  # wholly inside a nest, with its stromal cuff
            else:
                assert d - r_a >= spec.gap_um[0]  # stroma between nest and aggregate
        # Tumour area outside the aggregates (and islands) is the same in both classes.
        nest_area = sum(math.pi * r * r for *_, r in lay.nests)
        holes = lay.islands if islands else (lay.aggregates if inflamed else ())
        inside = sum(math.pi * (r + (0.0 if islands else spec.cuff_um)) ** 2 for *_, r in holes)
        assert nest_area - inside == pytest.approx(spec.n_nests * math.pi * spec.nest_radius_um**2)


def test_nested_layout_is_seeded() -> None:
    spec = NestedSlideSpec()
    assert nest_layout(spec, True, 7) == nest_layout(spec, True, 7)
    assert nest_layout(spec, True, 7) != nest_layout(spec, True, 8)


def test_subsample_patients_is_balanced_whole_patients_and_seeded() -> None:
    rows = [
        {"slide_id": f"s{i}-{k}", "patient_id": f"p{i}", "label": i % 2}
        for i in range(60)
        for k in range(1 + (i % 5 == 0))
    ]
    train = pd.DataFrame(rows)
    part = subsample_patients(train, 20, seed=1)
    # 10 per label, one more where the last patient drawn has two slides
    assert all(10 <= n <= 11 for n in part["label"].value_counts().to_dict().values())
    assert set(part["label"]) == {0, 1}
    # every patient drawn brings all their slides
    for patient, group in part.groupby("patient_id"):
        assert len(group) == int((train["patient_id"] == patient).sum())
    assert part.equals(subsample_patients(train, 20, seed=1))
    assert not part.equals(subsample_patients(train, 20, seed=2))
    assert subsample_patients(train, 500, seed=0) is train
    with pytest.raises(ConfigError):
        subsample_patients(train, 1, seed=0)


def test_assign_modules_chunked_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 24)).astype(np.float32)
    c = rng.normal(size=(7, 24)).astype(np.float32)
    truth = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(assign_modules(x, c, chunk=333), truth)
    with pytest.raises(ConfigError):
        assign_modules(x, c[:, :5])


def test_nested_islands_make_both_classes_the_same_nest() -> None:
    spec = NestedSlideSpec()
    assert spec.islands
    for seed in range(10):
        inflamed, excluded = nest_layout(spec, True, seed), nest_layout(spec, False, seed)
        assert [r for *_, r in inflamed.nests] == pytest.approx([r for *_, r in excluded.nests])
        for lay in (inflamed, excluded):
            assert len(lay.islands) == len(lay.aggregates)
            for ix, iy, hole in lay.islands:
                assert hole == spec.aggregate_radius_um + spec.cuff_um
                assert any(math.hypot(ix - cx, iy - cy) + hole <= r for cx, cy, r in lay.nests)
        # the lymphocytes fill the islands only in inflamed slides
        assert {(x, y) for x, y, _ in inflamed.islands} == {
            (x, y) for x, y, _ in inflamed.aggregates
        }
        assert not {(x, y) for x, y, _ in excluded.islands} & {
            (x, y) for x, y, _ in excluded.aggregates
        }
