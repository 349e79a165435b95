"""Realistic-noise spatial cohorts: the calibrated scale gives the asked single-tile
separability, irregular shapes keep composition equal, and clean cohorts are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from features.store import FeatureStore
from infra.errors import ConfigError
from synthetic.spatial import (
    NOISE_MODELS,
    NoiseSpec,
    S,
    calibrate_noise,
    tile_typer_accuracy,
    write_spatial_cohort,
)


def _store_bags(cohort):
    store = FeatureStore.open(cohort.store_uri)
    ids = list(cohort.table["slide_id"])
    return ids, {
        b.slide_id: np.asarray(b.embeddings) for b in store.iter_bags(ids, encoder=cohort.encoder)
    }


# one case in the default suite (about 3 s each), the rest in the slow one
CASES = [
    pytest.param(m, t, marks=() if (m, t) == ("offsets", 0.85) else pytest.mark.slow)
    for m in NOISE_MODELS
    for t in (0.95, 0.85)
]


@pytest.mark.parametrize(("model", "target"), CASES)
def test_written_cohort_has_the_calibrated_separability(tmp_path, model, target):
    cohort = write_spatial_cohort(
        str(tmp_path / "store"), "S1", n_slides=100, side=12, noise=NoiseSpec(model, target)
    )
    ids, bags = _store_bags(cohort)
    half = len(ids) // 2

    def stack(part):
        return np.concatenate([bags[s] for s in part]), np.concatenate(
            [cohort.types[s] for s in part]
        )

    # both ways round: one half's heavy-tailed tiles and slide offsets move a single
    # split's figure by a few points
    a, b = stack(ids[:half]), stack(ids[half:])
    measured = (tile_typer_accuracy(*a, *b) + tile_typer_accuracy(*b, *a)) / 2
    assert abs(measured - target) <= 0.03, (model, target, measured)
    assert cohort.meta["noise"] == f"{model}{round(target * 100)}"


def test_calibrated_scale_falls_with_separability():
    scales = [
        calibrate_noise(NoiseSpec("isotropic", s), 32, n_slides=30, per_slide=60)
        for s in (0.99, 0.9, 0.8)
    ]
    assert scales[0] < scales[1] < scales[2]


def test_noise_spec_rejects_bad_values():
    with pytest.raises(ConfigError, match="noise model"):
        NoiseSpec("pink")
    with pytest.raises(ConfigError, match="separability"):
        NoiseSpec("isotropic", 1.2)


def test_irregular_shapes_drop_only_stroma(tmp_path):
    cohort = write_spatial_cohort(
        str(tmp_path / "store"), "S1", n_slides=20, side=16, shape="irregular"
    )
    sizes = {len(t) for t in cohort.types.values()}
    assert len(sizes) > 1 and max(sizes) < 256  # variable tile counts, holes cut
    non_stroma = {int((t != S).sum()) for t in cohort.types.values()}
    assert len(non_stroma) == 1  # the label-relevant composition is identical on every slide
    for sid, coords in cohort.coords.items():
        assert len(coords) == len(cohort.types[sid])


def test_clean_cohort_is_unchanged_by_the_noise_options(tmp_path):
    plain = write_spatial_cohort(str(tmp_path / "a"), "S2", n_slides=10, side=12)
    again = write_spatial_cohort(
        str(tmp_path / "b"), "S2", n_slides=10, side=12, noise=None, shape="grid"
    )
    _, a = _store_bags(plain)
    _, b = _store_bags(again)
    assert all(np.array_equal(a[s], b[s]) for s in a)
