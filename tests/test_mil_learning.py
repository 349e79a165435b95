"""MIL models learn a planted signal from store bags (in-process training loop):
cross-validated AUROC, a label-permutation control, attention on the planted tiles,
regression of planted genes, and attention written back to the store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthetic.mil import PlantedCohort, write_planted_cohort
from training.mil.attention import attention_mass, render_overlay, top_bottom_tiles, write_attention
from training.mil.data import BagDataset, targets_from_cohort
from training.mil.evaluate import (
    classification_report,
    fold_table,
    regression_report,
    write_roc_png,
)
from training.mil.heads import make_head
from training.mil.models import MILConfig, build_model
from training.mil.train import TrainConfig, fit, predict

DIM = 32


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> PlantedCohort:
    root = tmp_path_factory.mktemp("mil")
    return write_planted_cohort(
        str(root / "store"), n_slides=40, n_tiles=64, dim=DIM, with_thumbnails=True
    )


_BAGS: dict = {}  # one read of each bag for the whole module


def _data(cohort: PlantedCohort, table: pd.DataFrame, task: str, columns: list[str]) -> BagDataset:
    items, _ = targets_from_cohort(table, task, columns)
    data = BagDataset(cohort.store_uri, items, encoder=cohort.encoder, max_patches=48)
    return data.share_cache(_BAGS.setdefault(cohort.store_uri, {}))


def cross_validate(
    cohort: PlantedCohort,
    cfg: TrainConfig,
    table: pd.DataFrame,
    columns: list[str],
    *,
    attention: bool = False,
) -> list[list[dict]]:
    """k in-process runs: fold k tests, fold k+1 validates, the rest trains."""
    folds = sorted(table["fold"].unique())
    out = []
    for i, fold in enumerate(folds):
        val_fold = folds[(i + 1) % len(folds)]
        train = table[~table["fold"].isin([fold, val_fold])]
        train_data = _data(cohort, train, cfg.task, columns)
        targets = np.array([item.target for item in train_data.items])
        head = make_head(cfg.task, targets[:, 0] if cfg.task == "binary" else targets)
        run_cfg = replace(cfg, model=replace(cfg.model, n_outputs=head.n_outputs))
        result = fit(
            run_cfg,
            train_data,
            _data(cohort, table[table["fold"] == val_fold], cfg.task, columns),
            head,
        )
        model = build_model(run_cfg.model)
        model.load_state_dict(result.best_state)
        test = _data(cohort, table[table["fold"] == fold], cfg.task, columns)
        test.max_patches = None  # evaluate on whole bags
        out.append(predict(model, test, head, attention=attention))
    return out


def _cfg(model: str, **kwargs) -> TrainConfig:
    base = {"epochs": 30, "lr": 1e-3, "patience": 8, "torch_threads": 1}
    base.update(kwargs)
    return TrainConfig(model=MILConfig(model=model, in_dim=DIM, hidden=32, attn_dim=16), **base)


# CLAM-SB runs in the slow suite: the default suite keeps one full CV (about 15 s each).
@pytest.mark.parametrize("model", ["abmil", pytest.param("clam_sb", marks=pytest.mark.slow)])
def test_cross_validated_auroc_and_attention(
    cohort: PlantedCohort, model: str, tmp_path: Path
) -> None:
    folds = cross_validate(cohort, _cfg(model), cohort.table, ["label"], attention=True)
    per_fold = []
    for rows in folds:
        y = np.array([r["target"][0] for r in rows])
        p = np.array([r["prediction"][0] for r in rows])
        per_fold.append(
            {k: v["value"] for k, v in classification_report(y, p, n_boot=200).items() if k != "n"}
        )
    table = fold_table(per_fold)
    assert table.loc["mean", "auroc"] >= 0.9, table
    pooled = [r for rows in folds for r in rows]
    y = np.array([r["target"][0] for r in pooled])
    p = np.array([r["prediction"][0] for r in pooled])
    report = classification_report(y, p, n_boot=300)
    assert report["auroc"]["value"] >= 0.9
    assert report["auroc"]["ci_low"] <= report["auroc"]["value"] <= report["auroc"]["ci_high"]
    # Attention mass on planted tiles, over held-out High slides.
    masses = [
        attention_mass(r["coords"], r["attention"], cohort.planted[r["slide_id"]])
        for r in pooled
        if r["target"][0] == 1
    ]
    planted = [
        len(cohort.planted[r["slide_id"]]) / len(r["coords"]) for r in pooled if r["target"][0] == 1
    ]
    assert np.mean(masses) > 0.5, (masses, planted)
    assert np.mean(masses) > 2 * np.mean(planted)  # far above what uniform attention gives
    png = write_roc_png({model: (y, p)}, tmp_path / "roc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # a second 4-fold CV (about 30 s); the learning proof above stays
def test_permutation_control_stays_near_chance(cohort: PlantedCohort) -> None:
    table = cohort.table.copy()
    rng = np.random.default_rng(7)
    table["label"] = rng.permutation(table["label"].to_numpy())
    folds = cross_validate(cohort, _cfg("abmil", epochs=10, patience=4), table, ["label"])
    pooled = [r for rows in folds for r in rows]
    y = np.array([r["target"][0] for r in pooled])
    p = np.array([r["prediction"][0] for r in pooled])
    auroc = classification_report(y, p, n_boot=200)["auroc"]["value"]
    assert 0.25 <= auroc <= 0.75, auroc


@pytest.mark.slow  # a regression CV (about 15 s); regression heads are unit-tested elsewhere
def test_regression_planted_genes(cohort: PlantedCohort) -> None:
    cfg = _cfg("abmil", task="regression", epochs=30, patience=8)
    folds = cross_validate(cohort, cfg, cohort.table, cohort.genes)
    pooled = [r for rows in folds for r in rows]
    report = regression_report(
        np.stack([r["target"] for r in pooled]),
        np.stack([r["prediction"] for r in pooled]),
        cohort.genes,
    ).set_index("gene")
    planted = [g for g in cohort.genes if g.startswith("GENE_P")]
    noise = [g for g in cohort.genes if g.startswith("GENE_N")]
    assert (report.loc[planted, "pearson_r"] >= 0.7).all(), report
    assert (report.loc[planted, "pearson_q"] < 0.05).all()
    assert (report.loc[noise, "pearson_q"] > 0.05).all()


def test_attention_written_to_store(cohort: PlantedCohort, tmp_path: Path) -> None:
    import lance

    from features.store import FeatureStore

    store = FeatureStore.open(cohort.store_uri)
    sid = "S000"
    bag = store.bag(sid, encoder=cohort.encoder)
    attention = np.random.default_rng(0).dirichlet(np.ones(len(bag)))
    info = write_attention(store, sid, bag.coords, attention, name="test-attn")
    heat = store.arrays(sid).read_image("heatmaps/test-attn")
    assert np.nansum(heat) == pytest.approx(1.0, rel=1e-5)
    assert np.isfinite(heat).sum() == len(bag)
    x, y = bag.coords[0]
    assert heat[
        (y - info["origin"][1]) // info["stride"], (x - info["origin"][0]) // info["stride"]
    ] == pytest.approx(attention[0])
    rows = lance.dataset(info["table"]).to_table().to_pandas()
    assert len(rows) == len(bag) and set(rows["slide_id"]) == {sid}
    png = render_overlay(
        store,
        sid,
        "test-attn",
        tmp_path / "overlay.png",
        origin=info["origin"],
        stride=info["stride"],
    )
    assert png.stat().st_size > 0
    tiles = top_bottom_tiles(bag.coords, attention, k=3)
    assert tiles["top"][0]["attention"] == pytest.approx(attention.max())
    assert tiles["bottom"][0]["attention"] == pytest.approx(attention.min())
