"""``slidebank train`` and ``slidebank evaluate``: MIL models on Ray Train from a YAML config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from slidebank._cli_common import AddressOpt, fail_on_slidebank_error

__all__ = ["register"]


def train(
    config: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, help="Training config (.yaml); see training.mil.run_config.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. train.epochs=5 workers=2.")
    ] = None,
    address: AddressOpt = None,
) -> None:
    """Train a MIL model (ABMIL, CLAM, TransMIL) with k-fold CV on Ray Train.

    The cohort is checked against the store before anything starts; each run writes to
    its own folder OUT/RUN_ID/ (predictions, metrics, ROC plots, summary.json).

    Example: slidebank train clam.yaml model.model=clam_mb workers=2 out=runs/clam-mb
    """
    from training.mil.runner import load_run_config, run_from_config

    with fail_on_slidebank_error():
        extra = [f"address={address}"] if address else []
        summary = run_from_config(load_run_config(config, [*(overrides or []), *extra]))
    shown = {k: v for k, v in summary.items() if k not in ("history", "config")}
    typer.echo(json.dumps(shown, indent=2, default=float))
    typer.secho(f"run {summary['run_id']}: results in {summary['out']}", fg=typer.colors.GREEN, err=True)


def evaluate(
    predictions: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, help="predictions.parquet written by `slidebank train`.")],
    labels: Annotated[list[str], typer.Option("--label", help="Label or gene column (repeatable).")],
    task: Annotated[Literal["binary", "regression"], typer.Option(help="The task the predictions are for.")] = "binary",
    out: Annotated[Path, typer.Option(help="Folder for metrics.json and ROC PNGs.")] = Path("."),
) -> None:
    """Metrics with bootstrap 95% CIs (or per-gene r with FDR) and ROC plots from predictions.

    Example: slidebank evaluate runs/clam/mil-20261203T101500-ab12cd/predictions.parquet --label ayers_ifng6_label --out eval
    """
    import pandas as pd

    from infra.files import atomic_write_json
    from training.mil.runner import evaluate_predictions

    with fail_on_slidebank_error():
        out.mkdir(parents=True, exist_ok=True)
        summary = evaluate_predictions(pd.read_parquet(predictions), task, labels, out)
        atomic_write_json(out / "metrics.json", summary)
    typer.echo(json.dumps(summary, indent=2, default=float))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
