"""``slidebank probe``: a quick baseline of a label on slide-level embeddings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from slidebank._cli_common import fail_on_slidebank_error, parse_storage_options

__all__ = ["register"]


def probe(
    labels: Annotated[str, typer.Argument(help="Labels table (.csv/.tsv/.parquet) with slide_id "
                                               "or patient_id and the label column.")],
    label: Annotated[str, typer.Option("--label", "-l", help="The label column to predict.")],
    store: Annotated[str, typer.Option("--store", envvar="SLIDEBANK_STORE",
                                       help="Feature store URI.")],
    model: Annotated[str, typer.Option(help="logistic, linear (ridge) or knn.")] = "logistic",
    task: Annotated[str, typer.Option(help="auto, classification or regression.")] = "auto",
    pooling: Annotated[str, typer.Option(help="Slide embedding: mean or max of its tiles.")] = "mean",
    folds: Annotated[int, typer.Option(min=2, help="Patient-level CV folds.")] = 5,
    k: Annotated[int, typer.Option("--k", min=1, help="Neighbours for --model knn.")] = 15,
    seed: Annotated[int, typer.Option(help="Seed of folds and bootstrap.")] = 0,
    n_boot: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the CIs.")] = 1000,
    encoder: Annotated[str | None, typer.Option(help="Encoder id (several in the store).")] = None,
    positive: Annotated[str | None, typer.Option(
        help="The positive class of a two-class label (ROC, AUPRC, calibration are about it). "
             "Default: the class named High, 1, True, yes or positive (as `train` encodes High "
             "as 1); any other pair needs this option.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for predictions, metrics.json, "
                                                  "probe.png.")] = None,
    storage_option: Annotated[list[str] | None, typer.Option(
        "--storage-option", "-s", help="fsspec storage option KEY=VALUE (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Predict a label from pooled slide embeddings with patient-level cross-validation;
    prints metrics with patient-bootstrap 95% CIs (and the slides left out, by id) and
    writes a ROC/calibration PNG.

    Example: slidebank probe labels.csv --label msi --store ./store --model logistic --out probe-msi
    """
    from slidebank.probe_api import probe as run

    with fail_on_slidebank_error():
        result = run(store, labels, label=label, model=model, task=task, pooling=pooling,
                     folds=folds, seed=seed, n_boot=n_boot, k=k, encoder=encoder,
                     out_dir=out, storage_options=parse_storage_options(storage_option),
                     positive=positive)
    if as_json:
        typer.echo(json.dumps(result.summary(), indent=2, default=str))
        return
    typer.echo(f"{model} probe of {label!r} ({result.task}): {result.n_slides} slides, "
               f"{result.n_patients} patients, {result.folds} patient-level folds")
    if result.class_mapping:
        typer.echo(f"  positive class: {label}={result.class_mapping['positive']} "
                   f"(negative: {result.class_mapping['negative']})")
    for name, m in result.metrics.items():
        typer.echo(f"  {name:<18} {m['value']:.3f}  (95% CI {m['ci_low']:.3f} to {m['ci_high']:.3f})")
    for reason, ids in result.dropped.items():
        shown = ", ".join(ids[:8]) + (f" ... ({len(ids)} in all)" if len(ids) > 8 else "")
        typer.echo(f"  left out, {reason.replace('_', ' ')}: {shown}")
    for kind, path in result.files.items():
        typer.echo(f"  {kind}: {path}")


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
