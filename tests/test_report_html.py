"""``report.html``: one self-contained page per probe or train run (issue 30, "one run
report"): metrics with CIs, the class mapping, titled ROC and calibration figures, the top
and bottom slides (with attention over the tissue for MIL), the config; no script, no
CDN. Rendered in headless Chromium when one is installed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from slidebank.cli import app
from tests._support.datasci import build_store, write_labels
from training.report import chromium_binary, screenshot, write_report

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "store"
    build_store(root)
    return str(root)


def _self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    # Nothing is fetched: every src/href is a data: URI or an in-page anchor.
    for ref in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page):
        assert ref.startswith(("data:", "#")), ref
    assert "http://" not in page and "https://" not in page and "@import" not in page


def _probe(store: str, tmp_path: Path, *extra: str) -> Path:
    out = tmp_path / "probe"
    result = runner.invoke(
        app,
        [
            "probe",
            str(write_labels(tmp_path / "labels.csv")),
            "--store",
            store,
            "--folds",
            "3",
            "--n-boot",
            "50",
            "--out",
            str(out),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"report: {out / 'report.html'}" in result.output
    return out


def test_probe_writes_a_self_contained_report(store, tmp_path):
    out = _probe(store, tmp_path, "--label", "immune")
    page = (out / "report.html").read_text()
    _self_contained(page)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["files"]["report"] == str(out / "report.html")
    auroc = metrics["metrics"]["auroc"]
    assert "<h1>immune: logistic probe</h1>" in page
    assert f'<td>auroc</td><td class="num">{auroc["value"]:.3f}</td>' in page
    assert "immune=high" in page  # the positive class is named
    # The probe's titled ROC/calibration figure is inlined, byte for byte.
    import base64

    png = base64.b64encode((out / "probe.png").read_bytes()).decode()
    assert f"data:image/png;base64,{png}" in page
    # Top and bottom slides by the positive class's out-of-fold score.
    predictions = pd.read_parquet(out / "predictions.parquet")
    top = predictions.sort_values("score_high", ascending=False)["slide_id"].iloc[0]
    bottom = predictions.sort_values("score_high")["slide_id"].iloc[0]
    assert page.index("Top 3 slides") < page.index(top) < page.index("Bottom 3 slides")
    assert page.index("Bottom 3 slides") < page.rindex(bottom)
    assert '"label": "immune"' in page  # the config


def test_several_labels_get_one_report_with_every_figure(store, tmp_path):
    out = _probe(store, tmp_path, "--label", "immune", "--label", "score", "--model", "linear")
    page = (out / "report.html").read_text()
    _self_contained(page)
    assert "probe of 2 labels" in page and page.count("data:image/png;base64,") == 2
    assert (out / "immune" / "report.html").exists()


def _train_folder(tmp_path: Path) -> Path:
    """A train run folder as run_from_config writes it: predictions, the real metrics and
    ROC PNG from evaluate_predictions, attention pictures drawn by the real overlay code."""
    from training.figures import draw_tile_map
    from training.mil.runner import evaluate_predictions

    run = tmp_path / "abmil-1"
    (run / "attention").mkdir(parents=True)
    rng = np.random.default_rng(0)
    y = np.tile([0.0, 1.0], 4)
    predictions = pd.DataFrame(
        {
            "fold": np.repeat([0, 1], 4),
            "set": "test",
            "slide_id": [f"s{i:02d}" for i in range(8)],
            "patient_id": [f"P{i // 2}" for i in range(8)],
            "target:immune": y,
            "pred:immune": np.clip(0.3 * y + rng.uniform(0, 0.7, 8), 0, 1),
            "positive_class": "high",
        }
    )
    predictions.to_parquet(run / "predictions.parquet")
    summary = evaluate_predictions(predictions, "binary", ["immune"], run, model="abmil")
    summary.update(
        run_id="abmil-1",
        out=str(run),
        checkpoints=["a", "b", "c"],
        config={"labels": ["immune"], "model": {"model": "abmil"}, "cv": True},
        classes={"label": "immune", "positive": "high", "negative": "low"},
    )
    (run / "summary.json").write_text(json.dumps(summary))
    thumb = np.full((64, 96, 3), 230, np.uint8)
    for sid in predictions["slide_id"]:
        draw_tile_map(
            thumb,
            rng.uniform(size=(4, 6)),
            run / "attention" / f"{sid}.png",
            level0_size=(3072, 2048),
            mpp=0.5,
            origin=(0, 0),
            stride=512,
            title=f"{sid}: abmil attention",
            label="attention per tile",
        )
    return run


@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> Path:
    return _train_folder(tmp_path_factory.mktemp("train"))


def test_a_train_run_report_shows_the_extreme_slides_with_their_attention(train_run):
    run = train_run
    page = write_report(run).read_text()
    _self_contained(page)
    predictions = pd.read_parquet(run / "predictions.parquet").sort_values("pred:immune")
    assert "<h1>immune: abmil</h1>" in page and "immune=high" in page
    assert page.count("data:image/png;base64,") == 1 + 6  # the ROC, then 3 top and 3 bottom
    for sid in [*predictions["slide_id"].iloc[:3], *predictions["slide_id"].iloc[-3:]]:
        assert f"{sid}: attention over the tissue" in page
    middle = predictions["slide_id"].iloc[3]
    assert f"{middle}: attention" not in page


def test_report_of_a_folder_that_is_no_run_names_it(tmp_path):
    from training.report import ReportError

    with pytest.raises(ReportError, match="is not a run folder"):
        write_report(tmp_path)


def test_report_command_rebuilds_the_page(store, tmp_path):
    out = _probe(store, tmp_path, "--label", "immune")
    (out / "report.html").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").exists() and str(out / "report.html") in result.output


@pytest.mark.skipif(chromium_binary() is None, reason="no chromium on PATH")
@pytest.mark.timeout(300)
def test_the_report_renders_in_headless_chromium(train_run, tmp_path):
    from PIL import Image

    page = write_report(train_run)
    png = screenshot(page, tmp_path / "shot.png", width=1200, height=1800)
    image = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert image.shape == (1800, 1200)
    # Not a blank page: text, tables and figures put dark pixels in most bands of rows.
    dark = image < 128
    assert dark.mean() > 0.01
    bands = dark.reshape(18, 100, 1200).any(axis=(1, 2))
    assert bands.sum() >= 12, bands
