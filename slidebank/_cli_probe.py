"""``slidebank probe``: a quick baseline of a label on slide-level embeddings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from slidebank._cli_common import fail_on_slidebank_error, parse_storage_options

__all__ = ["register"]


def probe(
    labels: Annotated[
        str,
        typer.Argument(
            help="Labels table (.csv/.tsv/.parquet) with slide_id "
            "or patient_id and the label column."
        ),
    ],
    store: Annotated[
        str, typer.Option("--store", envvar="SLIDEBANK_STORE", help="Feature store URI.")
    ],
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            "-l",
            help="The label column to predict; repeat it, or give a glob "
            "('gene_*'), to probe several on the same folds.",
        ),
    ] = None,
    labels_all: Annotated[
        bool,
        typer.Option(
            "--labels-all", help="Probe every column of the labels table but slide_id/patient_id."
        ),
    ] = False,
    aggregate: Annotated[
        str,
        typer.Option(
            help="slide; patient: score each patient by the mean of its slides' predictions "
            "and compute the metrics per patient; patient-max: by its highest (two classes)."
        ),
    ] = "slide",
    model: Annotated[str, typer.Option(help="logistic, linear (ridge) or knn.")] = "logistic",
    task: Annotated[str, typer.Option(help="auto, classification or regression.")] = "auto",
    pooling: Annotated[
        str, typer.Option(help="Slide embedding: mean or max of its tiles.")
    ] = "mean",
    folds: Annotated[int, typer.Option(min=2, help="Patient-level CV folds.")] = 5,
    k: Annotated[int, typer.Option("--k", min=1, help="Neighbours for --model knn.")] = 15,
    seed: Annotated[int, typer.Option(help="Seed of folds and bootstrap.")] = 0,
    n_boot: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the CIs.")] = 1000,
    encoder: Annotated[str | None, typer.Option(help="Encoder id (several in the store).")] = None,
    positive: Annotated[
        str | None,
        typer.Option(
            help="The positive class of a two-class label (ROC, AUPRC, calibration are about it). "
            "Default: the class named High, 1, True, yes or positive (as `train` encodes High "
            "as 1); any other pair needs this option."
        ),
    ] = None,
    slide_table: Annotated[
        str | None,
        typer.Option(
            help="A slide table (slide_id, patient_id) mapping a labels table keyed by "
            "patient_id to slides, when clinical and slide tables are kept apart."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for predictions, metrics.json, "
            "probe.png and report.html (several labels: summary.tsv, "
            "folds.tsv, report.html and a folder per label)."
        ),
    ] = None,
    storage_option: Annotated[
        list[str] | None,
        typer.Option(
            "--storage-option", "-s", help="fsspec storage option KEY=VALUE (repeatable)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Predict a label from pooled slide embeddings with patient-level cross-validation;
    prints metrics with patient-bootstrap 95% CIs (and the slides left out, by id) and
    writes a ROC/calibration PNG.

    Several labels (--label A --label B, --label 'gene_*' or --labels-all) share one set of
    patient folds and print one row each, sorted by Benjamini-Hochberg q-value.

    Example: slidebank probe labels.csv --label msi --store ./store --model logistic --out probe-msi

    Example: slidebank probe genes.tsv --label 'gene_*' --store ./store --model linear --out probe-genes
    """
    from slidebank.probe_api import probe as run

    with fail_on_slidebank_error():
        names = label or []
        result = run(
            store,
            labels,
            label=names[0] if len(names) == 1 else names,
            model=model,
            task=task,
            pooling=pooling,
            folds=folds,
            seed=seed,
            n_boot=n_boot,
            k=k,
            encoder=encoder,
            out_dir=out,
            storage_options=parse_storage_options(storage_option),
            positive=positive,
            aggregate=aggregate,
            labels_all=labels_all,
            slide_table=slide_table,
        )
    if hasattr(result, "table"):
        _print_table(result, model, as_json)
        return
    if as_json:
        typer.echo(json.dumps(result.summary(), indent=2, default=str))
        return
    unit = {
        "patient": ", metrics per patient (mean of its slides)",
        "patient-max": ", metrics per patient (its highest slide score)",
    }.get(result.aggregate, "")
    typer.echo(
        f"{model} probe of {names[0]!r} ({result.task}): {result.n_slides} slides, "
        f"{result.n_patients} patients, {result.folds} patient-level folds{unit}"
    )
    if result.class_mapping:
        typer.echo(
            f"  positive class: {names[0]}={result.class_mapping['positive']} "
            f"(negative: {result.class_mapping['negative']})"
        )
    for name, m in result.metrics.items():
        typer.echo(
            f"  {name:<18} {m['value']:.3f}  (95% CI {m['ci_low']:.3f} to {m['ci_high']:.3f})"
        )
    for reason, ids in result.dropped.items():
        shown = ", ".join(ids[:8]) + (f" ... ({len(ids)} in all)" if len(ids) > 8 else "")
        typer.echo(f"  left out, {reason.replace('_', ' ')}: {shown}")
    for kind, path in result.files.items():
        typer.echo(f"  {kind}: {path}")


def _print_table(result: Any, model: str, as_json: bool) -> None:
    table = result.table
    if as_json:
        typer.echo(table.to_json(orient="records", indent=2))
        return
    typer.echo(
        f"{model} probe of {len(table)} labels on {len(set(result.patient_folds.values()))} "
        f"shared patient-level folds ({len(result.patient_folds)} patients); p: patient "
        "bootstrap vs chance, q: Benjamini-Hochberg"
    )
    typer.echo(
        f"  {'label':<20} {'metric':<12} {'value':>6}  {'95% CI':<16} {'slides':>6} "
        f"{'patients':>8} {'p':>7} {'q':>7}"
    )
    for row in table.itertuples():
        if row.error:
            typer.echo(f"  {row.label:<20} not run: {row.error}")
            continue
        ci = f"{row.ci_low:.3f} to {row.ci_high:.3f}"
        typer.echo(
            f"  {row.label:<20} {row.metric:<12} {row.value:6.3f}  {ci:<16} "
            f"{row.n_slides:>6} {row.n_patients:>8} {row.p_value:7.3g} {row.q_value:7.3g}"
        )
    for kind, path in result.files.items():
        typer.echo(f"  {kind}: {path}")


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
