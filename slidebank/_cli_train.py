"""``slidebank train`` and ``slidebank evaluate``: MIL models on Ray Train from a YAML config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from slidebank._cli_common import fail_on_slidebank_error

__all__ = ["register"]


def train(
    config: Annotated[Path, typer.Argument(help="Training config (.yaml); see training.mil.runner.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. train.epochs=5 workers=2.")
    ] = None,
) -> None:
    """Train a MIL model (ABMIL, CLAM, TransMIL) with k-fold CV on Ray Train.

    Example: slidebank train clam.yaml model.model=clam_mb workers=2 out=runs/clam-mb
    """
    from training.mil.runner import load_config, run_from_config

    with fail_on_slidebank_error():
        summary = run_from_config(load_config(config, overrides or []))
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2, default=float))


def evaluate(
    predictions: Annotated[Path, typer.Argument(help="predictions.parquet written by `slidebank train`.")],
    labels: Annotated[list[str], typer.Option("--label", help="Label or gene column (repeatable).")],
    task: Annotated[str, typer.Option(help="binary or regression.")] = "binary",
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and ROC PNGs.")] = Path("."),
) -> None:
    """Metrics with bootstrap 95% CIs (or per-gene r with FDR) and ROC plots from predictions.

    Example: slidebank evaluate runs/clam/predictions.parquet --label ayers_ifng6_label --out runs/clam
    """
    import pandas as pd

    from training.mil.runner import evaluate_predictions

    with fail_on_slidebank_error():
        out.mkdir(parents=True, exist_ok=True)
        summary = evaluate_predictions(pd.read_parquet(predictions), task, labels, out)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    typer.echo(json.dumps(summary, indent=2, default=float))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
