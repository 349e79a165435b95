"""``slidebank import h5``: CLAM/TRIDENT-style h5 files into a store through its public write
path, round-tripping ``slidebank export h5`` (issue 26 item 5)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.store import FeatureStore
from features.store.export import to_h5_per_slide
from features.store.import_h5 import H5FileError, H5ImportConfig, read_h5
from slidebank.cli import app


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    from synthetic.mil import write_planted_cohort

    root = tmp_path_factory.mktemp("h5")
    cohort = write_planted_cohort(str(root / "store"), n_slides=9, n_tiles=8, dim=4, n_folds=3)
    to_h5_per_slide(FeatureStore.open(cohort.store_uri), root / "h5")
    return cohort, root / "h5"


def _import(folder: Path, store: Path, *extra: str):
    return CliRunner().invoke(app, ["import", "h5", str(folder), "--store", str(store), *extra])


def _bags(uri: str, encoder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    store = FeatureStore.open(uri)
    return {
        bag.slide_id: (np.asarray(bag.coords), np.asarray(bag.embeddings))
        for bag in store.iter_bags(None, encoder=encoder)
    }


def test_export_then_import_gives_the_same_tiles_and_the_same_training(
    exported, tmp_path: Path
) -> None:
    cohort, folder = exported
    result = _import(
        folder, tmp_path / "new", "--mpp", "0.5", "--tile-size", "256", "--encoder", cohort.encoder
    )
    assert result.exit_code == 0, result.output
    assert "imported 9 slide(s), 72 tiles" in result.output
    before, after = (
        _bags(cohort.store_uri, cohort.encoder),
        _bags(str(tmp_path / "new"), cohort.encoder),
    )
    assert sorted(before) == sorted(after)
    for sid, (coords, emb) in before.items():
        order_a, order_b = np.lexsort(coords.T), np.lexsort(after[sid][0].T)
        np.testing.assert_array_equal(coords[order_a], after[sid][0][order_b])
        np.testing.assert_array_equal(emb[order_a], after[sid][1][order_b])
    slides = (
        FeatureStore.open(str(tmp_path / "new"))
        .slides(columns=["slide_id", "mpp", "status"])
        .to_pandas()
    )
    assert set(slides["status"]) == {"done"} and set(slides["mpp"]) == {0.5}

    from training.mil.job import JobConfig, run_cross_validation
    from training.mil.models import MILConfig
    from training.mil.train import TrainConfig

    train = TrainConfig(
        model=MILConfig(hidden=8, attn_dim=4, dropout=0.0), epochs=2, patience=2, torch_threads=1
    )

    def pooled(uri: str, folds: Path) -> pd.DataFrame:
        job = JobConfig(
            store_uri=uri, encoder=cohort.encoder, train=train, in_process=True, fold_dir=str(folds)
        )
        rows = run_cross_validation(job, cohort.table).pooled()
        return pd.DataFrame(
            {
                "slide_id": [r["slide_id"] for r in rows],
                "pred": [float(r["prediction"][0]) for r in rows],
            }
        )

    pd.testing.assert_frame_equal(
        pooled(cohort.store_uri, tmp_path / "a"), pooled(str(tmp_path / "new"), tmp_path / "b")
    )


def _bad_files(folder: Path) -> dict[str, str]:
    folder.mkdir()
    (folder / "garbage.h5").write_bytes(b"not hdf5 at all")
    with h5py.File(folder / "nocoords.h5", "w") as f:
        f.create_dataset("features", data=np.zeros((3, 4), np.float32))
    with h5py.File(folder / "short.h5", "w") as f:
        f.create_dataset("features", data=np.zeros((3, 4), np.float32))
        f.create_dataset("coords", data=np.zeros((2, 2), np.int64))
    with h5py.File(folder / "bad name.h5", "w") as f:
        f.create_dataset("features", data=np.zeros((1, 4), np.float32))
        f.create_dataset("coords", data=np.zeros((1, 2), np.int64))
    with h5py.File(folder / "other_size.h5", "w") as f:
        f.create_dataset("features", data=np.zeros((1, 4), np.float32))
        f.create_dataset("coords", data=np.zeros((1, 2), np.int64)).attrs["patch_size"] = 512
    return {
        "garbage.h5": "not a readable HDF5 file",
        "nocoords.h5": "no 'coords' dataset",
        "short.h5": "coords must be (N, 2) with N = 3",
        "bad name.h5": "not a slide id",
        "other_size.h5": "patch_size 512, not --tile-size 256",
    }


def test_bad_files_are_reported_one_by_one_and_the_rest_imported(exported, tmp_path: Path) -> None:
    _, good = exported
    folder = tmp_path / "mixed"
    reasons = _bad_files(folder)
    for path in list(good.glob("*.h5"))[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    result = _import(
        folder, tmp_path / "s", "--mpp", "0.5", "--tile-size", "256", "--encoder", "byo"
    )
    assert result.exit_code == 1, result.output
    assert "imported 2 slide(s), 16 tiles" in result.output
    for name, reason in reasons.items():
        assert any(name in line and reason in line for line in result.output.splitlines()), (
            name,
            result.output,
        )
    assert len(FeatureStore.open(str(tmp_path / "s")).done_slide_ids("byo")) == 2
    config = H5ImportConfig(mpp=0.5, tile_size=256, encoder="byo")
    with pytest.raises(H5FileError, match=r"garbage\.h5"):
        read_h5(folder / "garbage.h5", config)


def test_mpp_and_tile_size_are_required(exported, tmp_path: Path) -> None:
    _, folder = exported
    result = _import(folder, tmp_path / "s", "--tile-size", "256", "--encoder", "byo")
    assert result.exit_code == 2 and "--mpp" in result.output
    result = _import(folder, tmp_path / "s", "--mpp", "0.5", "--encoder", "byo")
    assert result.exit_code == 2 and "--tile-size" in result.output
    result = _import(
        folder, tmp_path / "s", "--mpp", "1.0", "--tile-size", "256", "--encoder", "byo"
    )
    assert result.exit_code == 1 and "patch_mpp 0.5, not --mpp 1" in result.output
    assert not FeatureStore.open(str(tmp_path / "s")).done_slide_ids("byo")
