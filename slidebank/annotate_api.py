"""The facade's metadata edit: patient ids and clinical columns added to ingested
slides, never re-encoding (``slidebank slides set TABLE --store S`` on the command line).

>>> import slidebank as sb
>>> report = sb.annotate_slides("clinical.csv", "slidebank-demo/store")
>>> report.update.changed          # the slides whose patient_id was set or replaced
>>> report.clinical_columns        # the other columns, now in slide_features/clinical
>>> sb.probe(store, "store:clinical", label="grade")    # read back as a labels table
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from infra.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from features.store import FeatureStore
    from features.store.metadata import MetadataUpdate

__all__ = ["AnnotateReport", "annotate_slides"]

_URI_COLUMNS = ("uri", "slide_uri", "path")  # an ingest manifest's slide column


@dataclass(frozen=True)
class AnnotateReport:
    source: str
    update: MetadataUpdate
    ignored_columns: tuple[str, ...]
    rows_without_value: int
    #: the table's other columns, stored per slide in ``slide_features/<clinical_table>``
    clinical_columns: tuple[str, ...] = ()
    clinical_slides: int = 0
    clinical_table: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "clinical_columns": list(self.clinical_columns),
            "clinical_slides": self.clinical_slides,
            "clinical_table": self.clinical_table,
            "source": self.source,
            "changed": list(self.update.changed),
            "unchanged": len(self.update.unchanged),
            "unknown": list(self.update.unknown),
            "rows_rewritten": self.update.rows,
            "store_version": self.update.version,
            "ignored_columns": list(self.ignored_columns),
            "rows_without_value": self.rows_without_value,
        }


def annotate_slides(
    table: str | pd.DataFrame,
    store: FeatureStore | str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    clinical: str = "clinical",
) -> AnnotateReport:
    """Set ``patient_id`` on the store's slides from ``table`` (CSV/TSV/Parquet/.xlsx or
    a DataFrame with ``slide_id`` or an ingest manifest's ``uri``), and keep its other
    columns (grade, stage...) in the store's ``slide_features/<clinical>`` table, which
    probe, cohort build and train read as ``store:<clinical>``.

    One new store version per table written; tiles are untouched
    (:meth:`FeatureStore.set_slide_metadata`, :mod:`training.cohorts.clinical`). Slides
    the store lacks are reported in ``update.unknown``; none known is an error.
    """
    from features.store import FeatureStore, SlideNotInStoreError
    from features.store.metadata import METADATA_COLUMNS
    from training.cohorts.clinical import write_clinical

    source = table if isinstance(table, str) else "the table"
    frame = _read(table, storage_options)
    ids = _slide_ids(frame, source)
    present = [c for c in METADATA_COLUMNS if c in frame.columns]
    used = {"slide_id", *_URI_COLUMNS, *METADATA_COLUMNS}
    others = [str(c) for c in frame.columns if c not in used]
    if not present and not others:
        raise ConfigError(
            f"{source}: no {' or '.join(METADATA_COLUMNS)} column and no clinical column; "
            f"it has {', '.join(map(str, frame.columns))}"
        )
    values, empty = _values(frame, ids, present, source) if present else ({}, 0)
    cells, _ = _values(frame, ids, others, source) if others else ({}, 0)
    if isinstance(store, str):
        store = FeatureStore.open(store, storage_options)
    store = store.latest()
    known = set(store.slides(columns=["slide_id"]).column("slide_id").to_pylist())
    given = set(values) | set(cells)
    if given and not given & known:
        raise SlideNotInStoreError(
            f"{source}: none of its {len(given)} slides is in the store (e.g. {sorted(given)[0]!r})"
        )
    update = store.set_slide_metadata(values)
    written = write_clinical(store, {s: c for s, c in cells.items() if s in known}, name=clinical)
    unknown = tuple(sorted(given - known))
    if unknown != update.unknown:
        update = replace(update, unknown=unknown)
    return AnnotateReport(
        source,
        update,
        (),
        empty,
        clinical_columns=tuple(others),
        clinical_slides=written,
        clinical_table=f"slide_features/{clinical}" if others else "",
    )


def _read(table: str | pd.DataFrame, storage_options: Mapping[str, Any] | None) -> pd.DataFrame:
    if not isinstance(table, str):
        return table.astype("string")
    from infra.tables import read_table
    from training.cohorts.labels import is_excel, read_excel

    if is_excel(table):
        return read_excel(table, storage_options).astype("string")
    return read_table(table, storage_options, dtype="string")


def _slide_ids(frame: pd.DataFrame, source: str) -> list[str]:
    from infra.ids import slide_id_from_uri
    from training.cohorts.labels import did_you_mean, misspelt_column

    if "slide_id" in frame.columns:
        return [str(v).strip() for v in frame["slide_id"].fillna("")]
    uri = next((c for c in _URI_COLUMNS if c in frame.columns), None)
    if uri is not None:  # an ingest manifest without slide ids: ids as ingest derived them
        return [slide_id_from_uri(str(v).strip()) for v in frame[uri]]
    found = misspelt_column(list(frame.columns), "slide_id")
    hint = (
        f" (found {found!r}); rename it to slide_id"
        if found
        else f"{did_you_mean('slide_id', frame.columns)}; it has {', '.join(map(str, frame.columns))}"
    )
    raise ConfigError(f"{source}: no slide_id column{hint}")


def _values(
    frame: pd.DataFrame, ids: list[str], columns: list[str], source: str
) -> tuple[dict[str, dict[str, str]], int]:
    """slide_id -> {column: value}; blank cells leave the store's value, a slide given
    two different values is an error."""
    import pandas as pd

    values: dict[str, dict[str, str]] = {}
    empty = 0
    for number, (sid, row) in enumerate(
        zip(ids, frame[columns].to_dict("records"), strict=True), start=2
    ):
        given = {c: str(v).strip() for c, v in row.items() if not pd.isna(v) and str(v).strip()}
        if not sid or not given:
            empty += 1
            continue
        before = values.setdefault(sid, given)
        if before != given:
            raise ConfigError(
                f"{source}: row {number} gives slide {sid!r} {given}, an earlier row {before}"
            )
    return values, empty
