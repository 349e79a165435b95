"""A fold that memorises its training slides is flagged and the user is told the fix.

The noise sweep (docs/spatial.md) found ``tile_gnn`` on raw realistic embeddings driving
its training loss to ~0 while validation stayed at chance; the trainer now calls such a
fold out (``FitResult.memorised``, a warning, the CLI's fold line) with the rule the
sweep counts by."""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np
import pytest

from synthetic.mil import write_planted_cohort
from training.mil.data import BagDataset, targets_from_cohort
from training.mil.fold_loop import progress_line
from training.mil.heads import make_head
from training.mil.models import MILConfig
from training.mil.train import MEMORISED_HINT, TrainConfig, fit, memorised


def _history(losses: list[float], scores: list[float]) -> list[dict[str, float]]:
    return [{"train_loss": a, "val_score": b} for a, b in zip(losses, scores, strict=True)]


def test_rule() -> None:
    low_loss = _history([0.6, 0.2, 0.01], [0.55, 0.58, 0.50])
    assert memorised(low_loss, 1, "binary")
    # kept validation AUROC at or above 0.6: it learned something that carries over
    assert not memorised(_history([0.6, 0.01], [0.55, 0.62]), 1, "binary")
    # training loss never below 0.05: underfit, not memorised
    assert not memorised(_history([0.6, 0.06], [0.5, 0.5]), 1, "binary")
    # a Pearson r is not held to the AUROC line; an undefined AUROC is not called
    assert not memorised(low_loss, 1, "regression")
    assert not memorised(_history([0.6, 0.01], [math.nan, math.nan]), 1, "binary")
    assert not memorised([], -1, "binary")


def test_fit_flags_a_fold_that_fits_training_and_fails_validation(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """Validation = the training slides with their labels flipped: whatever the model
    fits on training ranks validation backwards, so a fold that drives its training loss
    down is memorisation by construction."""
    cohort = write_planted_cohort(str(tmp_path / "store"), n_slides=12, n_tiles=16, dim=16)
    table = cohort.table
    flipped = table.assign(label=np.where(table["label"] == "High", "Median/Low", "High"))
    train_items, _ = targets_from_cohort(table, "binary", ["label"])
    val_items, _ = targets_from_cohort(flipped, "binary", ["label"])
    cache: dict = {}
    train = BagDataset(cohort.store_uri, train_items, encoder=cohort.encoder).share_cache(cache)
    val = BagDataset(cohort.store_uri, val_items, encoder=cohort.encoder).share_cache(cache)
    targets = np.array([item.target for item in train.items])
    head = make_head("binary", targets[:, 0])
    cfg = TrainConfig(
        model=MILConfig(model="abmil", in_dim=16, hidden=32, attn_dim=16, n_outputs=head.n_outputs),
        epochs=40,
        patience=40,
        lr=1e-2,
        torch_threads=1,
    )
    with caplog.at_level(logging.WARNING, logger="training.mil.train"):
        result = fit(cfg, train, val, head)
    assert min(h["train_loss"] for h in result.history) < 0.05
    assert result.best_score < 0.6
    assert result.memorised
    assert any("memorised its training slides" in r.getMessage() for r in caplog.records)

    # the same data with validation = training (not flipped): it learns, nothing flagged
    honest = fit(replace(cfg, epochs=10, patience=10), train, train, head)
    assert not honest.memorised


def test_cli_fold_line_names_the_fix() -> None:
    event = {
        "kind": "fold_done",
        "fold": "2",
        "index": 3,
        "total": 5,
        "task": "binary",
        "best_score": 0.52,
        "best_epoch": 4,
        "fit_s": 3.2,
        "uri": "/runs/r1/fold_2",
        "memorised": True,
        "min_train_loss": 0.004,
    }
    line = progress_line(event)
    assert "warning: fold 2 memorised its training slides" in line
    assert "training loss 0.004" in line and MEMORISED_HINT in line
    assert "warning" not in progress_line({**event, "memorised": False})
