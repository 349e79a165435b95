"""``slidebank cohort``: label patients from omics, join them with slides, split them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from slidebank._cli_common import fail_on_slidebank_error, parse_storage_options

if TYPE_CHECKING:
    from training.cohorts.pipeline import CohortBuild

__all__ = ["register"]

OptionsOpt = Annotated[
    list[str] | None,
    typer.Option("--storage-option", "-s", help="fsspec storage option KEY=VALUE (repeatable)."),
]


def build(
    expression: Annotated[
        str, typer.Argument(help="Expression matrix: .tsv, .csv (optionally .gz) or .parquet.")
    ],
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
        str | None, typer.Option(help="Signature whose label stratifies splits (default: first).")
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
) -> None:
    """Label patients by immune signatures, join them with the store's slides, and write
    the cohort table with patient-level folds and train/val/test splits.

    Example: slidebank cohort build tcga_lihc_tpm.tsv --store ./store --signature ayers_ifng6
    --signature ayers_expanded_immune18 --units tpm --out cohorts/lihc.parquet
    """
    from dataclasses import replace

    from training.cohorts.config import CohortConfig, SplitConfig
    from training.cohorts.pipeline import build_cohort, build_external
    from training.omics.config import ExpressionConfig, LabelConfig, ScoreConfig
    from training.omics.io import load_gene_map
    from training.omics.signatures import load_signatures

    options = parse_storage_options(storage_option)
    with fail_on_slidebank_error():
        user = load_signatures(signatures_file, storage_options=options) if signatures_file else {}
        names = tuple(signature or ()) or (tuple(user) if user else ("ayers_ifng6",))
        config = CohortConfig(
            signatures=names,
            expression=ExpressionConfig(
                units=units,  # type: ignore[arg-type]  # validated by the config
                orientation=orientation,  # type: ignore[arg-type]
                gene_ids=gene_ids,  # type: ignore[arg-type]
                duplicate_genes=duplicate_genes,  # type: ignore[arg-type]
            ),
            scores=ScoreConfig(method=score_method),  # type: ignore[arg-type]
            labels=LabelConfig(
                method=label_method,  # type: ignore[arg-type]
                n_clusters=clusters,
                high_quantile=high_quantile,
            ),
            splits=SplitConfig(
                n_splits=folds, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
            ),
            tcga_sample_types=None if all_sample_types else tuple(sample_type or ("01",)),
            stratify=stratify,
            name=name,
        )
        genes = load_gene_map(gene_map, storage_options=options) if gene_map else None
        common: dict[str, Any] = {
            "user_signatures": user,
            "gene_map": genes,
            "storage_options": options,
        }
        built = build_cohort(
            config, expression, slides, mapping=mapping, splits=not no_splits, **common
        )
        written = [built.cohort.write_parquet(str(out), options)]
        if lance_out:
            written.append(built.cohort.write_lance(lance_out, options))
        external = None
        if external_expression:
            ext_config = config
            if external_units:
                units_ = replace(config.expression, units=external_units)  # type: ignore[arg-type]
                ext_config = replace(config, expression=units_)
            external = build_external(
                ext_config,
                external_expression,
                external_slides or slides,
                discovery=built.cohort,
                mapping=external_mapping,
                **common,
            )
            written.append(
                external.cohort.write_parquet(_sibling(out, ".external.parquet"), options)
            )
        report = _report(built, external, written)
        _sibling_path(out, ".report.json").write_text(json.dumps(report, indent=2))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_summary(report)


def _sibling_path(out: Path, suffix: str) -> Path:
    return out.with_name(out.name.removesuffix(".parquet") + suffix)


def _sibling(out: Path, suffix: str) -> str:
    return str(_sibling_path(out, suffix))


def _report(built: CohortBuild, external: CohortBuild | None, written: list[str]) -> dict:
    report: dict[str, Any] = {"written": written, "discovery": built.cohort.report.to_dict()}
    table = built.cohort.table
    if "fold" in table.columns:
        report["discovery"]["folds"] = {
            str(k): int(v) for k, v in table.groupby("fold")["patient_id"].nunique().items()
        }
        report["discovery"]["splits"] = {
            str(k): int(v) for k, v in table.groupby("split")["patient_id"].nunique().items()
        }
    if external is not None:
        report["external"] = external.cohort.report.to_dict()
    return report


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
        summary.add_row("slides without omics", _few(part["slides_without_omics"]))
        summary.add_row("omics without slides", _few(part["omics_without_slides"]))
        for split in ("folds", "splits"):
            if split in part:
                summary.add_row(f"patients per {split[:-1]}", json.dumps(part[split]))
        console.print(summary)
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
        help="Omics labels joined with slides, and leakage-safe splits.",
        no_args_is_help=True,
    )
    cohort.command("build")(build)
    cohort.command("signatures")(signatures)
    app.add_typer(cohort, name="cohort")
