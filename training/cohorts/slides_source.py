"""The slides a cohort may use: ``slide_id`` and ``patient_id`` from any slides source
(a :class:`FeatureStore`, its URI, a Lance dataset, Parquet/CSV, Arrow or pandas)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pyarrow as pa

from infra.errors import InvalidSlideIdError
from infra.ids import validate_slide_id
from training.cohorts.errors import CohortError

__all__ = ["slides_frame"]


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
