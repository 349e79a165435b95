"""The cohort model: a cohort table (one row per slide) and the report of its join.

Every cohort builder (omics signatures in :mod:`training.cohorts.build`, clinical labels
in :mod:`training.cohorts.labels`) returns a :class:`Cohort`; it lives apart from both so
neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

__all__ = ["Cohort", "CohortReport", "write_parquet"]


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
