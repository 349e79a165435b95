"""``slidebank train`` prints a short summary like ``probe``'s, not the JSON dump; the
JSON stays in the run folder and behind ``--json``; the class mapping is recorded
(issue 30 items 2 and 4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from slidebank._cli_train import summary_lines
from slidebank.cli import app
from training.mil.evaluate import classification_report


def _summary(tmp_path: Path) -> dict:
    """A run summary shaped as run_from_config writes it, with metrics from the real
    report (few bootstrap resamples: the lines, not the CIs, are under test)."""
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 20)
    summary: dict = {"task": "binary"}
    for split in ("external", "test"):
        p = np.clip(y * 0.5 + rng.uniform(0, 0.6, 40), 0, 1)
        summary[split] = {"pooled": classification_report(y, p, n_boot=50), "folds": {}}
    summary.update(
        run_id="abmil-1",
        out=str(tmp_path),
        checkpoints=["a", "b", "c", "d"],
        config={"labels": ["immune"], "model": {"model": "abmil"}, "cv": True},
        history=[[{"epoch": e, "loss": 0.5} for e in range(50)]] * 4,
        classes={"label": "immune", "positive": "High", "negative": "not High"},
    )
    return summary


def test_the_summary_is_a_few_readable_lines(tmp_path: Path) -> None:
    summary = _summary(tmp_path)
    lines = summary_lines(summary)
    assert lines[0] == "abmil on immune (binary): 4-fold CV"
    assert 8 <= len(lines) <= 14, lines
    text = "\n".join(lines)
    assert text.index("  test (pooled, n=40, 20 positive)") < text.index("  external (pooled")
    auroc = summary["test"]["pooled"]["auroc"]
    assert f"auroc              {auroc['value']:.3f}  (95% CI {auroc['ci_low']:.3f}" in text
    assert "positive class: immune=High (negative: not High)" in text and "summary.json" in text
    assert "history" not in text and "{" not in text


def test_train_has_a_json_option() -> None:
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "--json" in result.output


# Slow: Ray Train start-up (about 45 s on 2 cores), as the other train CLI runs.
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_prints_the_summary_and_records_the_positive_class(tmp_path: Path, ray_local) -> None:
    from synthetic.mil import write_planted_cohort

    cohort = write_planted_cohort(
        str(tmp_path / "store"), n_slides=12, n_tiles=16, dim=8, n_folds=3
    )
    cohort.table[["slide_id", "label"]].to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    (tmp_path / "c.yaml").write_text(
        "store: store\ncohort: labels.tsv\nlabels: [label]\nout: runs\nfolds: 3\n"
        f"encoder: {cohort.encoder}\nmodel: {{hidden: 8, attn_dim: 4}}\n"
        "train: {epochs: 2, patience: 2, torch_threads: 1}\n"
    )
    result = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml")])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) < 20 and "auroc" in result.stdout
    assert "positive class: label=High (negative: Median/Low)" in result.stdout
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"]["positive"] == "High" and "history" in summary
    assert set(pd.read_parquet(run / "predictions.parquet")["positive_class"]) == {"High"}
