"""The facade's metadata edit: patient ids added to ingested slides, never re-encoding.

>>> import slidebank as sb
>>> report = sb.annotate_slides("clinical.csv", "slidebank-demo/store")
>>> report.update.changed          # the slides whose patient_id was set or replaced
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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

    def summary(self) -> dict[str, Any]:
        return {
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
) -> AnnotateReport:
    """Set ``patient_id`` on the store's slides from ``table`` (CSV/TSV/Parquet or a
    DataFrame with ``slide_id`` or an ingest manifest's ``uri``, and ``patient_id``).

    One new store version; tiles are untouched (:meth:`FeatureStore.set_slide_metadata`).
    Slides the store lacks are reported in ``update.unknown``; none known is an error.
    """
    from features.store import FeatureStore, SlideNotInStoreError
    from features.store.metadata import METADATA_COLUMNS

    source = table if isinstance(table, str) else "the table"
    frame = _read(table, storage_options)
    ids = _slide_ids(frame, source)
    present = [c for c in METADATA_COLUMNS if c in frame.columns]
    if not present:
        raise ConfigError(
            f"{source}: no {' or '.join(METADATA_COLUMNS)} column; "
            f"it has {', '.join(map(str, frame.columns))}"
        )
    values, empty = _values(frame, ids, present, source)
    if isinstance(store, str):
        store = FeatureStore.open(store, storage_options)
    update = store.latest().set_slide_metadata(values)
    if values and len(update.unknown) == len(values):
        raise SlideNotInStoreError(
            f"{source}: none of its {len(values)} slides is in the store "
            f"(e.g. {update.unknown[0]!r})"
        )
    used = {"slide_id", *_URI_COLUMNS, *present}
    ignored = tuple(str(c) for c in frame.columns if c not in used)
    return AnnotateReport(source, update, ignored, empty)


def _read(table: str | pd.DataFrame, storage_options: Mapping[str, Any] | None) -> pd.DataFrame:
    if not isinstance(table, str):
        return table.astype("string")
    from infra.tables import read_table

    return read_table(table, storage_options, dtype="string")


def _slide_ids(frame: pd.DataFrame, source: str) -> list[str]:
    from infra.ids import slide_id_from_uri
    from training.cohorts.labels import misspelt_column

    if "slide_id" in frame.columns:
        return [str(v).strip() for v in frame["slide_id"].fillna("")]
    uri = next((c for c in _URI_COLUMNS if c in frame.columns), None)
    if uri is not None:  # an ingest manifest without slide ids: ids as ingest derived them
        return [slide_id_from_uri(str(v).strip()) for v in frame[uri]]
    found = misspelt_column(list(frame.columns), "slide_id")
    hint = (
        f" (found {found!r}); rename it to slide_id"
        if found
        else f"; it has {', '.join(map(str, frame.columns))}"
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
