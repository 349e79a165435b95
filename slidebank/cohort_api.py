"""The facade's cohort operations: a labelled, split cohort table from omics or a labels table.

>>> import slidebank as sb
>>> report = sb.cohort_from_labels("labels.csv", "./store", out="cohort.parquet")
>>> report = sb.cohort_from_omics("tpm.tsv", "./store", out="cohort.parquet",
...                               signatures=["ayers_ifng6"])

Both write ``<out>`` (Parquet, one row per slide with ``fold`` and ``split``) and
``<out stem>.report.json`` atomically, and return the report. Local files that exist
already are refused before any work (:class:`~infra.errors.OutputExistsError`) and never
replaced, unless ``overwrite=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

__all__ = ["cohort_from_labels", "cohort_from_omics"]


def _sibling(out: str | Path, suffix: str) -> Path:
    out = Path(out)
    return out.with_name(out.name.removesuffix(".parquet") + suffix)


def _split_counts(table: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "fold" in table.columns:
        out["folds"] = {
            str(k): int(v) for k, v in table.groupby("fold")["patient_id"].nunique().items()
        }
    if "split" in table.columns:
        out["splits"] = {
            str(k): int(v) for k, v in table.groupby("split")["patient_id"].nunique().items()
        }
    return out


def _check_outputs(out: str | Path, overwrite: bool, *, external: bool = False) -> None:
    """Refuse now, not after the cohort is built, the local files this call would replace."""
    from infra.files import check_output
    from infra.storage import is_local

    if not is_local(str(out)):
        return  # an object store PUT replaces; nothing to check cheaply
    for path in [out, _sibling(out, ".report.json")] + (
        [_sibling(out, ".external.parquet")] if external else []
    ):
        check_output(path, overwrite=overwrite)


def _finish(report: dict[str, Any], out: str | Path, overwrite: bool) -> dict[str, Any]:
    from infra.files import atomic_write_json

    atomic_write_json(_sibling(out, ".report.json"), report, overwrite=overwrite)
    return report


def cohort_from_labels(
    labels: str,
    slides: Any,
    *,
    out: str | Path,
    label_columns: Sequence[str] | None = None,
    stratify: str | None = "auto",
    folds: int = 5,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    splits: bool = True,
    name: str = "discovery",
    lance_out: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    slide_table: str | None = None,
) -> dict[str, Any]:
    """A cohort from a plain labels table (slide_id and/or patient_id + label columns);
    ``slide_table`` (slide_id, patient_id) maps a table keyed by patient to slides."""
    from training.cohorts.config import SplitConfig
    from training.cohorts.labels import build_label_cohort

    _check_outputs(out, overwrite)
    cohort = build_label_cohort(
        labels,
        slides,
        label_columns=label_columns,
        stratify=stratify,
        splits=SplitConfig(
            n_splits=folds, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
        ),
        make_splits=splits,
        name=name,
        storage_options=storage_options,
        slide_table=slide_table,
    )
    written = [cohort.write_parquet(str(out), storage_options, overwrite=overwrite)]
    if lance_out:
        written.append(cohort.write_lance(lance_out, storage_options))
    discovery = {
        **cohort.report.to_dict(),
        **_split_counts(cohort.table),
        "label_columns": [
            c
            for c in cohort.table.columns
            if c not in ("slide_id", "patient_id", "cohort", "fold", "split")
        ],
    }
    return _finish({"written": written, "source": "labels", "discovery": discovery}, out, overwrite)


def cohort_from_omics(
    expression: str,
    slides: Any,
    *,
    out: str | Path,
    signatures: Sequence[str] = (),
    signatures_file: str | None = None,
    units: str = "tpm",
    orientation: str = "auto",
    gene_ids: str = "auto",
    duplicate_genes: str = "max_mean",
    mapping: str | None = None,
    gene_map: str | None = None,
    score_method: str = "zscore",
    label_method: str = "hierarchical",
    clusters: int = 3,
    high_quantile: float = 2.0 / 3.0,
    sample_types: Sequence[str] | None = ("01",),
    folds: int = 5,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    stratify: str | None = None,
    splits: bool = True,
    name: str = "discovery",
    external_expression: str | None = None,
    external_mapping: str | None = None,
    external_slides: Any = None,
    external_units: str | None = None,
    lance_out: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Label patients by immune signatures from an expression matrix, join the store's
    slides, split by patient; optionally an external validation cohort beside it."""
    from training.cohorts.config import CohortConfig, SplitConfig
    from training.cohorts.pipeline import build_cohort, build_external
    from training.omics.config import ExpressionConfig, LabelConfig, ScoreConfig
    from training.omics.io import load_gene_map
    from training.omics.signatures import load_signatures

    _check_outputs(out, overwrite, external=bool(external_expression))
    options = dict(storage_options or {})
    user = load_signatures(signatures_file, storage_options=options) if signatures_file else {}
    names = tuple(signatures) or (tuple(user) if user else ("ayers_ifng6",))
    config = CohortConfig(
        signatures=names,
        expression=ExpressionConfig(
            units=units,  # type: ignore[arg-type]
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
        tcga_sample_types=None if sample_types is None else tuple(sample_types),
        stratify=stratify,
        name=name,
    )
    genes = load_gene_map(gene_map, storage_options=options) if gene_map else None
    common: dict[str, Any] = {
        "user_signatures": user,
        "gene_map": genes,
        "storage_options": options,
    }
    built = build_cohort(config, expression, slides, mapping=mapping, splits=splits, **common)
    written = [built.cohort.write_parquet(str(out), options, overwrite=overwrite)]
    if lance_out:
        written.append(built.cohort.write_lance(lance_out, options))
    report: dict[str, Any] = {
        "written": written,
        "source": "omics",
        "discovery": {**built.cohort.report.to_dict(), **_split_counts(built.cohort.table)},
    }
    if external_expression:
        ext_config = config
        if external_units:
            ext_config = replace(
                config,
                expression=replace(config.expression, units=external_units),  # type: ignore[arg-type]
            )
        external = build_external(
            ext_config,
            external_expression,
            external_slides or slides,
            discovery=built.cohort,
            mapping=external_mapping,
            **common,
        )
        written.append(
            external.cohort.write_parquet(
                str(_sibling(out, ".external.parquet")), options, overwrite=overwrite
            )
        )
        report["external"] = external.cohort.report.to_dict()
    return _finish(report, out, overwrite)
