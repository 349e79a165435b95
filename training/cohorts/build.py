"""Cohorts: patient labels joined with the slides of the feature store.

A cohort table has one row per slide that has both features and omics: ``slide_id``,
``patient_id``, ``cohort`` and the per-patient label and score columns (so every slide
of a patient carries the same label). The build reports what did not join:

* patients with several slides (kept; splits keep them together),
* slides without omics (their patient has no expression, or no patient is known),
* omics without slides (patients with expression but no slide in the store).

The slides come from the store's ``slides`` table (a :class:`FeatureStore`, its URI,
a Lance dataset URI, a Parquet/CSV file, an Arrow table or a DataFrame): only the
columns ``slide_id``, and ``patient_id`` / ``status`` when present, are used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from infra.errors import InvalidSlideIdError
from infra.ids import validate_slide_id
from training.cohorts.errors import CohortError
from training.omics.ids import patients_for_slides

__all__ = ["Cohort", "CohortReport", "join_slides", "slides_frame", "write_parquet"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CohortReport:
    """What joined and what did not."""

    name: str
    n_slides: int
    n_patients: int
    n_store_slides: int
    n_omics_patients: int
    patients_with_several_slides: Mapping[str, int] = field(default_factory=dict)
    slides_without_omics: tuple[str, ...] = ()
    slides_without_patient: tuple[str, ...] = ()
    omics_without_slides: tuple[str, ...] = ()
    label_counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    signatures: tuple[Mapping[str, Any], ...] = ()
    config_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config_hash": self.config_hash,
            "n_slides": self.n_slides,
            "n_patients": self.n_patients,
            "n_store_slides": self.n_store_slides,
            "n_omics_patients": self.n_omics_patients,
            "patients_with_several_slides": dict(self.patients_with_several_slides),
            "slides_without_omics": list(self.slides_without_omics),
            "slides_without_patient": list(self.slides_without_patient),
            "omics_without_slides": list(self.omics_without_slides),
            "label_counts": {k: dict(v) for k, v in self.label_counts.items()},
            "signatures": [dict(s) for s in self.signatures],
        }


@dataclass(frozen=True)
class Cohort:
    """A cohort table (one row per slide) and its report."""

    table: pd.DataFrame
    report: CohortReport
    config_json: str = "{}"

    @property
    def name(self) -> str:
        return self.report.name

    @property
    def config_hash(self) -> str:
        return self.report.config_hash

    def patients(self) -> pd.DataFrame:
        """One row per patient (the label columns are per patient)."""
        return self.table.drop(columns=["slide_id"]).drop_duplicates("patient_id")

    def to_arrow(self) -> pa.Table:
        """The table with its config, hash and report in the schema metadata."""
        import json

        table = pa.Table.from_pandas(self.table, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta.update(
            {
                b"slidebank.cohort": self.name.encode(),
                b"slidebank.config_hash": self.config_hash.encode(),
                b"slidebank.config": self.config_json.encode(),
                b"slidebank.report": json.dumps(self.report.to_dict()).encode(),
            }
        )
        return table.replace_schema_metadata(meta)

    def write_parquet(
        self, path: str, storage_options: Mapping[str, Any] | None = None, *, overwrite: bool = True
    ) -> str:
        """Write the table; a local file appears whole or not at all (temp + rename), and
        with ``overwrite=False`` never replaces one that exists."""
        return write_parquet(self.to_arrow(), path, storage_options, overwrite=overwrite)

    def write_lance(self, uri: str, storage_options: Mapping[str, Any] | None = None) -> str:
        """Write the table as a Lance dataset (a new version each time it is rewritten),
        so Lance and DuckDB readers find it beside the store's own tables."""
        import lance

        options = {k: str(v) for k, v in (storage_options or {}).items()} or None
        lance.write_dataset(self.to_arrow(), uri, mode="overwrite", storage_options=options)
        return uri


def write_parquet(
    table: pa.Table,
    path: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> str:
    import pyarrow.parquet as pq

    from infra.files import atomic_write
    from infra.storage import is_local, open_filesystem, strip_protocol

    if is_local(path):
        target = strip_protocol(path)
        with atomic_write(target, overwrite=overwrite) as handle:
            pq.write_table(table, handle)
        return target
    fs, fs_path = open_filesystem(path, storage_options)
    with fs.open(fs_path, "wb") as handle:  # object stores publish a PUT atomically
        pq.write_table(table, handle)
    return path


# --------------------------------------------------------------------------- slides source


def slides_frame(
    slides: Any,
    *,
    status: str | None = "done",
    storage_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """``slide_id`` (unique) and ``patient_id`` (or <NA>) from any slides source.

    The store's slides table has one row per (slide, encoder, config); a slide counts
    once. With ``status`` set and a ``status`` column present, only those slides count.
    """
    frame = _as_frame(slides, storage_options)
    if "slide_id" not in frame.columns:
        raise CohortError(f"slides table has no slide_id column (columns: {list(frame.columns)})")
    if status is not None and "status" in frame.columns:
        frame = frame[frame["status"] == status]
    if "patient_id" not in frame.columns:
        frame = frame.assign(patient_id=pd.NA)
    frame = frame[["slide_id", "patient_id"]].astype("string")
    for slide in frame["slide_id"]:
        try:
            validate_slide_id(slide)
        except InvalidSlideIdError as exc:
            raise CohortError(f"slides table: {exc}") from exc
    # Prefer a row that knows the patient when a slide appears several times.
    frame = frame.sort_values(["slide_id", "patient_id"], na_position="last")
    patients = frame.dropna(subset=["patient_id"]).groupby("slide_id")["patient_id"].nunique()
    if (patients > 1).any():
        slide = patients[patients > 1].index[0]
        raise CohortError(f"slides table gives slide {slide!r} several patient_id values")
    return frame.drop_duplicates("slide_id").reset_index(drop=True)


def _as_frame(slides: Any, storage_options: Mapping[str, Any] | None) -> pd.DataFrame:
    if isinstance(slides, pd.DataFrame):
        return slides
    if isinstance(slides, pa.Table):
        return slides.to_pandas()
    if hasattr(slides, "slides") and callable(slides.slides):  # a FeatureStore
        return slides.slides().to_pandas()
    if hasattr(slides, "to_table") and callable(slides.to_table):  # a Lance dataset
        return slides.to_table(columns=_wanted_columns(slides.schema.names)).to_pandas()
    if isinstance(slides, (str, os.PathLike)):
        return _from_uri(os.fspath(slides), storage_options)
    raise CohortError(f"cannot read slides from {type(slides).__name__}")


def _wanted_columns(names: list[str]) -> list[str]:
    return [c for c in ("slide_id", "patient_id", "status") if c in names]


def _from_uri(uri: str, storage_options: Mapping[str, Any] | None) -> pd.DataFrame:
    from infra.storage import open_filesystem

    fs, path = open_filesystem(uri, storage_options)
    lower = path.rstrip("/").lower()
    if lower.endswith(".lance"):
        import lance

        dataset = lance.dataset(uri, storage_options=dict(storage_options or {}) or None)
        return dataset.to_table(columns=_wanted_columns(dataset.schema.names)).to_pandas()
    if fs.exists(f"{path.rstrip('/')}/slides.lance"):  # a feature store root
        from features.store import FeatureStore

        return FeatureStore.open(uri, storage_options, create=False).slides().to_pandas()
    from infra.errors import TableReadError
    from infra.tables import read_table, table_format

    try:
        kind = table_format(uri).kind
    except TableReadError:
        raise CohortError(
            f"{uri}: expected a feature store, a .lance dataset, .parquet or "
            ".csv/.tsv (optionally .gz)"
        ) from None
    # Through infra.tables, so a slides table gets the same size and decompression caps.
    return read_table(uri, storage_options, dtype="string" if kind == "delimited" else None)


# --------------------------------------------------------------------------- join


def join_slides(
    patient_table: pd.DataFrame,
    slides: pd.DataFrame,
    *,
    slide_mapping: pd.DataFrame | None = None,
    name: str = "discovery",
    config_hash: str = "",
    signatures: tuple[Mapping[str, Any], ...] = (),
) -> tuple[pd.DataFrame, CohortReport]:
    """Join per-patient columns (index: patient id) with slides (from :func:`slides_frame`).

    Each slide's patient comes from ``slide_mapping`` first, then the store's
    ``patient_id``, then its TCGA barcode.
    """
    store_patients = dict(zip(slides["slide_id"], slides["patient_id"], strict=True))
    if slide_mapping is not None and {"slide_id", "patient_id"} <= set(slide_mapping.columns):
        from training.cohorts.labels import check_patient_conflicts

        # The mapping wins over the store below; a disagreement is an error, not an override.
        check_patient_conflicts(slide_mapping, store_patients, source="the mapping")
    slide_patients = patients_for_slides(slides["slide_id"], slide_mapping, store_patients)
    frame = pd.DataFrame(
        {"slide_id": slide_patients.index.astype("string"), "patient_id": slide_patients.array}
    )
    no_patient = tuple(sorted(frame.loc[frame["patient_id"].isna(), "slide_id"]))
    omics = patient_table.copy()
    omics.index = omics.index.astype("string")
    omics.index.name = "patient_id"
    joined = frame.dropna(subset=["patient_id"]).merge(
        omics, left_on="patient_id", right_index=True, how="inner"
    )
    joined.insert(2, "cohort", name)
    joined = joined.sort_values(["patient_id", "slide_id"]).reset_index(drop=True)
    matched = set(joined["slide_id"])
    without_omics = tuple(sorted(s for s in frame["slide_id"] if s not in matched))
    patients_with_slides = set(joined["patient_id"])
    without_slides = tuple(sorted(str(p) for p in omics.index if p not in patients_with_slides))
    per_patient = joined.groupby("patient_id")["slide_id"].count()
    several = {str(p): int(n) for p, n in per_patient[per_patient > 1].items()}
    label_counts = {
        column.removesuffix("_label"): {
            str(k): int(v)
            for k, v in joined.drop_duplicates("patient_id")[column].value_counts().items()
        }
        for column in joined.columns
        if column.endswith("_label")
    }
    report = CohortReport(
        name=name,
        n_slides=len(joined),
        n_patients=len(patients_with_slides),
        n_store_slides=len(frame),
        n_omics_patients=len(omics),
        patients_with_several_slides=several,
        slides_without_omics=without_omics,
        slides_without_patient=no_patient,
        omics_without_slides=without_slides,
        label_counts=label_counts,
        signatures=signatures,
        config_hash=config_hash,
    )
    if without_omics:
        log.warning("%s: %d slides without omics", name, len(without_omics))
    if without_slides:
        log.warning("%s: %d patients with omics but no slide", name, len(without_slides))
    if joined.empty:
        raise CohortError(
            f"cohort {name!r}: no slide joins the omics ({len(frame)} slides, "
            f"{len(omics)} patients with omics); check the patient ids or pass a mapping"
        )
    return joined, report
