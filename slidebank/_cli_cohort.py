"""``slidebank cohort``: label patients from omics, join them with slides, split them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from slidebank._cli_common import OverwriteOpt, fail_on_slidebank_error, parse_storage_options

__all__ = ["register"]

OptionsOpt = Annotated[
    list[str] | None,
    typer.Option("--storage-option", "-s", help="fsspec storage option KEY=VALUE (repeatable)."),
]


def build(
    slides: Annotated[
        str,
        typer.Option(
            "--slides",
            "--store",
            envvar="SLIDEBANK_STORE",
            help="Slides: a feature store URI, a .lance slides table, or .parquet/.csv with slide_id.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Cohort table to write (.parquet).")],
    expression: Annotated[
        str | None,
        typer.Argument(
            help="Expression matrix: .tsv, .csv (optionally .gz) or .parquet (omit with --labels)."
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            help="A plain labels table instead of omics: slide_id and/or patient_id "
            "plus label columns (.csv/.tsv/.parquet)."
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(help="Label column(s) of --labels to keep (repeatable; default: all)."),
    ] = None,
    slide_table: Annotated[
        str | None,
        typer.Option(
            help="A slide table (slide_id, patient_id) mapping --labels keyed by patient_id "
            "to slides, when clinical and slide tables are kept apart."
        ),
    ] = None,
    signature: Annotated[
        list[str] | None,
        typer.Option(help="Signature name (repeatable); see `slidebank cohort signatures`."),
    ] = None,
    signatures_file: Annotated[
        str | None, typer.Option(help="User signatures: .yaml, .gmt or .tsv (signature, gene).")
    ] = None,
    units: Annotated[
        str, typer.Option(help="counts, tpm, fpkm, normalized (linear) or log2.")
    ] = "tpm",
    orientation: Annotated[
        str, typer.Option(help="auto, genes_x_samples or samples_x_genes.")
    ] = "auto",
    gene_ids: Annotated[str, typer.Option(help="auto, symbol or ensembl.")] = "auto",
    duplicate_genes: Annotated[
        str, typer.Option(help="max_mean, mean, sum, first or error.")
    ] = "max_mean",
    mapping: Annotated[
        str | None, typer.Option(help="Mapping table: sample_id, patient_id[, slide_id].")
    ] = None,
    gene_map: Annotated[
        str | None, typer.Option(help="Two-column table Ensembl id -> symbol.")
    ] = None,
    score_method: Annotated[str, typer.Option(help="zscore or rank (ssGSEA-like).")] = "zscore",
    label_method: Annotated[
        str, typer.Option(help="hierarchical (published) or quantile.")
    ] = "hierarchical",
    clusters: Annotated[int, typer.Option(min=2, help="Clusters for hierarchical labels.")] = 3,
    high_quantile: Annotated[
        float, typer.Option(help="Quantile above which a score is High (quantile labels).")
    ] = 2.0 / 3.0,
    sample_type: Annotated[
        list[str] | None,
        typer.Option(help="TCGA sample type codes kept (repeatable); default 01."),
    ] = None,
    all_sample_types: Annotated[
        bool, typer.Option(help="Keep every TCGA sample type (tumour and normal).")
    ] = False,
    folds: Annotated[int, typer.Option(min=2, help="Patient-level folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the splits.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Validation share of patients.")] = 0.15,
    test_fraction: Annotated[float, typer.Option(help="Test share of patients.")] = 0.15,
    stratify: Annotated[
        str | None,
        typer.Option(
            help="Signature (omics) or label column (--labels; 'none' to not "
            "stratify) that stratifies the splits (default: the first)."
        ),
    ] = None,
    no_splits: Annotated[bool, typer.Option("--no-splits", help="Do not split.")] = False,
    name: Annotated[str, typer.Option(help="Cohort name recorded in the table.")] = "discovery",
    external_expression: Annotated[
        str | None, typer.Option(help="External validation cohort's expression matrix.")
    ] = None,
    external_mapping: Annotated[
        str | None, typer.Option(help="External cohort's mapping table.")
    ] = None,
    external_slides: Annotated[
        str | None, typer.Option(help="External cohort's slides (default: --slides).")
    ] = None,
    external_units: Annotated[
        str | None, typer.Option(help="External matrix units (default: --units).")
    ] = None,
    lance_out: Annotated[
        str | None, typer.Option(help="Also write the cohort as a Lance dataset at this URI.")
    ] = None,
    storage_option: OptionsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Label patients by immune signatures (or take labels from a plain table), join them
    with the store's slides, and write the cohort table with patient-level folds and
    train/val/test splits. An existing OUT (or its .report.json) is refused before
    anything is built, unless --overwrite.

    Example: slidebank cohort build tcga_lihc_tpm.tsv --store ./store --signature ayers_ifng6
    --signature ayers_expanded_immune18 --units tpm --out cohorts/lihc.parquet

    Example (no omics): slidebank cohort build --labels labels.csv --store ./store
    --out cohorts/msi.parquet
    """
    from slidebank import cohort_api

    options = parse_storage_options(storage_option)
    if (expression is None) == (labels is None):
        raise typer.BadParameter("give either an EXPRESSION matrix or --labels TABLE")
    with fail_on_slidebank_error(out):
        if labels is not None:
            report = cohort_api.cohort_from_labels(
                labels,
                slides,
                out=out,
                label_columns=label,
                stratify=stratify or "auto",
                folds=folds,
                seed=seed,
                val_fraction=val_fraction,
                test_fraction=test_fraction,
                splits=not no_splits,
                name=name,
                lance_out=lance_out,
                storage_options=options,
                overwrite=overwrite,
                slide_table=slide_table,
            )
        else:
            report = cohort_api.cohort_from_omics(
                str(expression),
                slides,
                out=out,
                signatures=tuple(signature or ()),
                signatures_file=signatures_file,
                units=units,
                orientation=orientation,
                gene_ids=gene_ids,
                duplicate_genes=duplicate_genes,
                mapping=mapping,
                gene_map=gene_map,
                score_method=score_method,
                label_method=label_method,
                clusters=clusters,
                high_quantile=high_quantile,
                sample_types=None if all_sample_types else tuple(sample_type or ("01",)),
                folds=folds,
                seed=seed,
                val_fraction=val_fraction,
                test_fraction=test_fraction,
                stratify=stratify,
                splits=not no_splits,
                name=name,
                external_expression=external_expression,
                external_mapping=external_mapping,
                external_slides=external_slides,
                external_units=external_units,
                lance_out=lance_out,
                storage_options=options,
                overwrite=overwrite,
            )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_summary(report)


def _print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for key in ("discovery", "external"):
        part = report.get(key)
        if part is None:
            continue
        summary = Table(show_header=False, title=f"cohort {part['name']} ({part['config_hash']})")
        summary.add_row("slides", str(part["n_slides"]))
        summary.add_row("patients", str(part["n_patients"]))
        summary.add_row(
            "patients with several slides", str(len(part["patients_with_several_slides"]))
        )
        if report.get("source") == "labels":
            summary.add_row("label columns", ", ".join(part["label_columns"]))
            for column, counts in part["label_counts"].items():
                summary.add_row(f"slides per {column}", json.dumps(counts))
        else:
            summary.add_row("slides without omics", _few(part["slides_without_omics"]))
            summary.add_row("omics without slides", _few(part["omics_without_slides"]))
        for split in ("folds", "splits"):
            if split in part:
                summary.add_row(f"patients per {split[:-1]}", json.dumps(part[split]))
        console.print(summary)
        if not part["signatures"]:
            continue
        sigs = Table(title="signatures")
        for column in ("signature", "method", "genes", "missing", "High", "Median/Low"):
            sigs.add_column(column)
        for sig in part["signatures"]:
            counts = part["label_counts"].get(sig["signature"], {})  # patients with slides
            n_genes = len(sig["genes_present"]) + len(sig["genes_missing"])
            sigs.add_row(
                sig["signature"],
                f"{sig['method']} / {sig['label_method']}",
                f"{len(sig['genes_present'])}/{n_genes}",
                ", ".join(sig["genes_missing"]) or "-",
                str(counts.get("High", 0)),
                str(counts.get("Median/Low", 0)),
            )
        console.print(sigs)
    console.print("wrote " + ", ".join(report["written"]))


def _few(items: list[str], limit: int = 5) -> str:
    if not items:
        return "0"
    shown = ", ".join(items[:limit])
    return f"{len(items)} ({shown}{', ...' if len(items) > limit else ''})"


def signatures(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the built-in signatures with their genes and sources.

    Example: slidebank cohort signatures --json
    """
    from training.omics.signatures import list_signatures

    rows = [s.to_dict() for s in list_signatures()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="signatures")
    for column in ("name", "genes", "source", "verified"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], " ".join(row["genes"]), row["source"], row["verified"])
    Console().print(table)


def register(app: typer.Typer) -> None:
    cohort = typer.Typer(
        name="cohort",
        help="Labels (omics signatures or a plain labels table) joined with slides, and leakage-safe splits.",
        no_args_is_help=True,
    )
    cohort.command("build")(build)
    cohort.command("signatures")(signatures)
    app.add_typer(cohort, name="cohort")
