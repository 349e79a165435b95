"""Plain labels tables (no omics): any label columns keyed by slide or patient id.

A labels table has a ``slide_id`` column, a ``patient_id`` column, or both, plus any
label columns. :func:`join_labels` attaches it to the store's slides:

* keyed by ``slide_id``: each labelled slide gets its row; the slide's patient is the
  store's ``patient_id`` (or the table's when the store has none);
* keyed by ``patient_id`` only: every slide of that patient gets the label;
* a ``patient_id`` in the table that contradicts the store's for the same slide is a
  :class:`~training.cohorts.errors.CohortError`, never a silent override: turning one
  patient's two slides into two patients would let them straddle a split (leakage).

Slides without a patient id anywhere are their own patient (``patient_id = slide_id``),
which keeps splits well defined and is logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from training.cohorts.errors import CohortError

__all__ = [
    "LabelJoin",
    "build_label_cohort",
    "check_patient_conflicts",
    "did_you_mean",
    "is_excel",
    "join_labels",
    "misspelt_column",
    "read_excel",
    "read_labels",
    "with_slide_table",
]

log = logging.getLogger(__name__)

KEYS = ("slide_id", "patient_id")
#: How to add patient ids to a store that has none (a folder ingest), said wherever
#: their absence stops a patient-level table.
ANNOTATE_HINT = (
    "add them without re-encoding: slidebank slides set MAPPING.csv --store STORE "
    "(a table with slide_id and patient_id columns)"
)


def _squash(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def misspelt_column(columns: Sequence[Any], key: str) -> str | None:
    """A column that is ``key`` written another way ('Slide ID', 'SlideID', 'Patient'),
    when ``key`` itself is absent: matching it silently could join on the wrong thing."""
    if key in columns:
        return None
    forms = {_squash(key), _squash(key.removesuffix("_id"))}
    return next((str(c) for c in columns if _squash(c) in forms), None)


#: other names of the id columns in clinical and slide tables (TCGA, STAMP, cBioPortal)
_SYNONYMS = {
    "slide_id": ("slide", "slide_name", "filename", "file_name", "image_id", "wsi"),
    "patient_id": ("patient", "case_id", "case", "subject_id", "submitter_id", "participant_id"),
}


def did_you_mean(wanted: str, columns: Sequence[Any]) -> str:
    """`` (did you mean 'x'?)`` for the column of ``columns`` closest to ``wanted``
    (spelling, or a known synonym of an id column), or an empty string."""
    import difflib

    names = [str(c) for c in columns]
    squashed = {_squash(c): c for c in names}
    for synonym in _SYNONYMS.get(wanted, ()):
        if _squash(synonym) in squashed:
            return f" (did you mean {squashed[_squash(synonym)]!r}?)"
    close = difflib.get_close_matches(_squash(wanted), list(squashed), n=1, cutoff=0.6)
    return f" (did you mean {squashed[close[0]]!r}?)" if close else ""


EXCEL_SUFFIXES = (".xlsx", ".xlsm")


def is_excel(uri: str) -> bool:
    return str(uri).split("?", 1)[0].lower().endswith(EXCEL_SUFFIXES)


def read_excel(uri: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The first sheet of an Excel workbook (.xlsx/.xlsm, through openpyxl), id columns
    as text. A workbook is a zip archive: what it unpacks to is bounded as compressed
    text tables are (:class:`infra.table_limits.TableLimits`), before any sheet is parsed."""
    import io
    import zipfile

    from infra.errors import TableReadError
    from infra.storage import open_filesystem
    from infra.table_limits import TableLimits

    limits = TableLimits.default()
    fs, path = open_filesystem(uri, storage_options)
    try:
        with fs.open(path, "rb") as handle:
            data = handle.read(limits.max_bytes + 1)
    except FileNotFoundError as exc:
        raise TableReadError(uri, "no such file") from exc
    if len(data) > limits.max_bytes:
        raise TableReadError(uri, f"the workbook is over {limits.max_bytes} bytes")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise TableReadError(uri, "cannot read as an Excel workbook: not an .xlsx file") from exc
    unpacked = sum(info.file_size for info in archive.infolist())
    allowed = limits.allowed_bytes(len(data))
    if unpacked > allowed:
        raise TableReadError(
            uri,
            f"the workbook unpacks to {unpacked} bytes from {len(data)}, over the "
            f"{allowed} allowed (a decompression bomb?)",
        )
    try:
        sheets = pd.read_excel(
            io.BytesIO(data), sheet_name=None, engine="openpyxl", dtype={k: str for k in KEYS}
        )
    except (ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise TableReadError(uri, f"cannot read as an Excel workbook: {exc}") from exc
    filled = {name: frame for name, frame in sheets.items() if not frame.empty}
    if not filled:
        raise TableReadError(uri, "the workbook has no sheet with rows")
    name, frame = next(iter(filled.items()))
    if len(filled) > 1:
        log.warning("%s: read sheet %r, the first of %d with rows", uri, name, len(filled))
    return frame


def read_labels(uri: str, storage_options: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """A labels table (csv/tsv/parquet, also compressed, or the first sheet of an .xlsx)
    read with :mod:`infra.tables`."""
    from infra.tables import read_table

    table = read_excel(uri, storage_options) if is_excel(uri) else read_table(uri, storage_options)
    for key in KEYS:
        found = misspelt_column(list(table.columns), key)
        if found is not None:
            raise CohortError(f"{uri}: no {key} column (found {found!r}); rename it to {key}")
    if not any(k in table.columns for k in KEYS):
        hint = did_you_mean("slide_id", table.columns) or did_you_mean("patient_id", table.columns)
        raise CohortError(
            f"{uri}: a labels table needs a slide_id or patient_id column{hint}; "
            f"it has {', '.join(map(str, table.columns))}"
        )
    for key in KEYS:
        if key in table.columns:
            table[key] = table[key].astype("string").str.strip()
    return table


def with_slide_table(
    labels: pd.DataFrame,
    slide_table: str | pd.DataFrame,
    storage_options: Mapping[str, Any] | None = None,
    *,
    source: str = "the labels table",
) -> pd.DataFrame:
    """A clinical table keyed by ``patient_id`` and a slide table (``slide_id``,
    ``patient_id``), STAMP's habit, as one labels table keyed by slide: each slide of the
    slide table gets its patient's row. The store's patient ids still win any conflict
    (:func:`join_labels` refuses a disagreement), and nothing is written to the store."""
    where = slide_table if isinstance(slide_table, str) else "the slide table"
    slides = (
        read_labels(slide_table, storage_options) if isinstance(slide_table, str) else slide_table
    )
    for key in KEYS:
        if key not in slides.columns:
            raise CohortError(
                f"{where}: a slide table needs slide_id and patient_id columns; no {key}"
                f"{did_you_mean(key, slides.columns)} among {', '.join(map(str, slides.columns))}"
            )
    if "patient_id" not in labels.columns:
        raise CohortError(
            f"{source}: a slide table joins on patient_id, which {source} lacks"
            f"{did_you_mean('patient_id', labels.columns)}"
        )
    if "slide_id" in labels.columns:
        raise CohortError(
            f"{source} is keyed by slide_id already; --slide-table is for a clinical table "
            "keyed by patient_id"
        )
    slides = slides[["slide_id", "patient_id"]].dropna(subset=["slide_id"])
    slides = slides.astype("string").apply(lambda c: c.str.strip())
    if slides["slide_id"].duplicated().any():
        dup = slides.loc[slides["slide_id"].duplicated(), "slide_id"].iloc[0]
        raise CohortError(f"{where}: slide {dup!r} is listed more than once")
    if labels["patient_id"].duplicated().any():
        dup = labels.loc[labels["patient_id"].duplicated(), "patient_id"].iloc[0]
        raise CohortError(f"{source}: patient {dup!r} is listed more than once")
    merged = slides.merge(labels, on="patient_id", how="inner")
    lost = sorted(set(slides["patient_id"].dropna()) - set(labels["patient_id"].dropna()))
    if lost:
        log.warning(
            "%d patients of %s have no row in %s (%s)",
            len(lost),
            where,
            source,
            ", ".join(lost[:10]) + (" ..." if len(lost) > 10 else ""),
        )
    if merged.empty:
        raise CohortError(
            f"no patient_id of {where} is in {source} (e.g. "
            f"{', '.join(slides['patient_id'].dropna().head(3))} against "
            f"{', '.join(map(str, labels['patient_id'].dropna().head(3)))})"
        )
    return merged


def check_patient_conflicts(
    table_patients: pd.DataFrame, store_patients: Mapping[str, Any], *, source: str
) -> None:
    """Raise when a (slide_id, patient_id) row disagrees with the store's patient id."""
    rows = table_patients.dropna(subset=["slide_id", "patient_id"])
    clashes = []
    for slide, patient in zip(rows["slide_id"], rows["patient_id"], strict=True):
        known = store_patients.get(str(slide))
        if known is not None and not pd.isna(known) and str(known) != str(patient):
            clashes.append(f"{slide}: {source} says {patient!r}, the store {known!r}")
    if clashes:
        raise CohortError(
            f"{len(clashes)} slide(s) have a patient_id in {source} that conflicts with the "
            f"store's ({'; '.join(clashes[:5])}); fix the table or drop its patient_id "
            "column: a silent override could split one patient across folds"
        )


@dataclass(frozen=True)
class LabelJoin:
    """The joined table (slide_id, patient_id, label columns) and what did not join."""

    table: pd.DataFrame
    label_columns: tuple[str, ...]
    unknown_slides: tuple[str, ...] = ()
    unknown_patients: tuple[str, ...] = ()
    unlabelled_slides: int = 0
    own_patient_slides: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> dict[str, Any]:
        return {
            "n_slides": len(self.table),
            "n_patients": int(self.table["patient_id"].nunique()),
            "label_columns": list(self.label_columns),
            "labels_for_unknown_slides": list(self.unknown_slides[:20]),
            "labels_for_unknown_patients": list(self.unknown_patients[:20]),
            "store_slides_without_label": self.unlabelled_slides,
        }


def _label_columns(labels: pd.DataFrame, wanted: Sequence[str] | None) -> tuple[str, ...]:
    available = [c for c in labels.columns if c not in KEYS]
    if not wanted:
        if not available:
            raise CohortError("the labels table has no label column besides slide_id/patient_id")
        return tuple(available)
    missing = [c for c in wanted if c not in labels.columns]
    if missing:
        raise CohortError(
            f"label column(s) {', '.join(map(repr, missing))} not in the labels table; "
            f"it has {', '.join(map(repr, available)) or 'no label columns'}"
            f"{did_you_mean(missing[0], available)}"
        )
    return tuple(wanted)


def _check_store_patients(store: pd.DataFrame, source: str) -> None:
    """A table keyed by patient needs the store's slides to know their patients."""
    missing = store.loc[store["patient_id"].isna(), "slide_id"]
    if len(store) and len(missing) == len(store):
        raise CohortError(
            f"{source} is keyed by patient_id, but none of the store's {len(store)} slides has "
            f"a patient_id (an ingest from a folder records none); {ANNOTATE_HINT}"
        )
    if len(missing):
        log.warning(
            "%d slides have no patient_id and get no patient-level label (e.g. %s); %s",
            len(missing),
            missing.iloc[0],
            ANNOTATE_HINT,
        )


def join_labels(
    labels: pd.DataFrame,
    slides: pd.DataFrame,
    *,
    label_columns: Sequence[str] | None = None,
    source: str = "the labels table",
) -> LabelJoin:
    """Attach ``labels`` to ``slides`` (``slide_id``, ``patient_id`` from the store)."""
    columns = _label_columns(labels, label_columns)
    store = slides[["slide_id", "patient_id"]].drop_duplicates("slide_id").copy()
    store["slide_id"] = store["slide_id"].astype("string")
    store["patient_id"] = store["patient_id"].astype("string")
    store_patients = dict(zip(store["slide_id"], store["patient_id"], strict=True))
    if "slide_id" in labels.columns:
        if labels["slide_id"].duplicated().any():
            dup = labels.loc[labels["slide_id"].duplicated(), "slide_id"].iloc[0]
            raise CohortError(f"{source}: slide {dup!r} is listed more than once")
        if "patient_id" in labels.columns:
            check_patient_conflicts(labels, store_patients, source=source)
        keep = ["slide_id", *([c for c in ["patient_id"] if c in labels.columns]), *columns]
        joined = store.merge(labels[keep], on="slide_id", how="inner", suffixes=("", "_labels"))
        if "patient_id_labels" in joined.columns:
            joined["patient_id"] = joined["patient_id"].fillna(joined.pop("patient_id_labels"))
        unknown = tuple(sorted(set(labels["slide_id"].dropna()) - set(store["slide_id"])))
        unknown_patients: tuple[str, ...] = ()
    else:
        _check_store_patients(store, source)
        per_patient = labels[["patient_id", *columns]]
        if per_patient["patient_id"].duplicated().any():
            dup = per_patient.loc[per_patient["patient_id"].duplicated(), "patient_id"].iloc[0]
            raise CohortError(f"{source}: patient {dup!r} is listed more than once")
        joined = store.dropna(subset=["patient_id"]).merge(per_patient, on="patient_id")
        unknown = ()
        unknown_patients = tuple(
            sorted(set(per_patient["patient_id"].dropna()) - set(store["patient_id"].dropna()))
        )
    if joined.empty:
        key = "slide_id" if "slide_id" in labels.columns else "patient_id"
        theirs = ", ".join(map(str, labels[key].dropna().head(3)))
        ours = ", ".join(map(str, store[key].dropna().head(3))) or "none"
        raise CohortError(
            f"no {key} of {source} matches the store ({len(labels)} label rows, e.g. "
            f"{theirs}; the store has {len(store)} slides, e.g. {ours})"
        )
    own = joined["patient_id"].isna()
    own_ids = tuple(sorted(joined.loc[own, "slide_id"]))
    if own_ids:
        log.info("%d slides have no patient id; each is its own patient", len(own_ids))
        joined.loc[own, "patient_id"] = joined.loc[own, "slide_id"]
    if unknown:
        log.warning("%d labelled slides are not in the store (e.g. %s)", len(unknown), unknown[0])
    joined = joined.sort_values(["patient_id", "slide_id"]).reset_index(drop=True)
    return LabelJoin(
        table=joined,
        label_columns=columns,
        unknown_slides=unknown,
        unknown_patients=unknown_patients,
        unlabelled_slides=len(store) - len(joined),
        own_patient_slides=own_ids,
    )


def build_label_cohort(
    labels: str | pd.DataFrame,
    slides: Any,
    *,
    label_columns: Sequence[str] | None = None,
    stratify: str | None = "auto",
    splits: Any = None,
    make_splits: bool = True,
    name: str = "discovery",
    status: str | None = "done",
    storage_options: Mapping[str, Any] | None = None,
    slide_table: str | pd.DataFrame | None = None,
) -> Any:
    """A cohort from a plain labels table: the store's slides ⋈ labels, plus patient-level
    ``fold`` and ``split`` columns (stratified on ``stratify``; ``"auto"``: the first label
    column when each patient has one value of it, else unstratified). ``slide_table``
    (slide_id, patient_id) maps a table keyed by patient to slides (:func:`with_slide_table`)."""
    import dataclasses

    from infra.provenance import stable_hash
    from training.cohorts.clinical import clinical_labels, is_store_labels
    from training.cohorts.config import SplitConfig
    from training.cohorts.model import Cohort, CohortReport
    from training.cohorts.slides_source import slides_frame
    from training.cohorts.splits import assign_folds, assign_train_val_test

    source = labels if isinstance(labels, str) else "the labels table"
    if is_store_labels(labels):  # store:clinical, written by slidebank slides set
        from features.store import FeatureStore

        store = slides if isinstance(slides, FeatureStore) else None
        if store is None and isinstance(slides, str):
            store = FeatureStore.open(slides, storage_options)
        if store is None:
            raise CohortError(f"{labels} names a store table; pass the store as slides")
        table = clinical_labels(store, str(labels))
    elif isinstance(labels, str):
        table = read_labels(labels, storage_options)
    else:
        table = labels
    if slide_table is not None:
        table = with_slide_table(table, slide_table, storage_options, source=source)
    store_slides = slides_frame(slides, status=status, storage_options=storage_options)
    joined = join_labels(table, store_slides, label_columns=label_columns, source=source)
    frame = joined.table
    _warn_unlabelled(store_slides, frame, source)
    frame.insert(2, "cohort", name)
    split_config = splits or SplitConfig()
    strat = _stratify_column(frame, joined.label_columns, stratify)
    if make_splits:
        frame = assign_folds(frame, split_config, stratify=strat)
        frame = assign_train_val_test(frame, split_config, stratify=strat)
    config = {
        "labels": source,
        "label_columns": list(joined.label_columns),
        "stratify": strat,
        "splits": dataclasses.asdict(split_config) if make_splits else None,
        "name": name,
    }
    per_patient = frame.groupby("patient_id")["slide_id"].count()
    report = CohortReport(
        name=name,
        n_slides=len(frame),
        n_patients=int(frame["patient_id"].nunique()),
        n_store_slides=len(store_slides),
        n_omics_patients=0,
        patients_with_several_slides={
            str(p): int(n) for p, n in per_patient[per_patient > 1].items()
        },
        slides_without_patient=joined.own_patient_slides,
        label_counts={
            c: {str(k): int(v) for k, v in frame[c].value_counts().items()}
            for c in joined.label_columns
            if frame[c].nunique() <= 20
        },
        config_hash=stable_hash("label-cohort", 1, config),
    )
    import json

    return Cohort(table=frame, report=report, config_json=json.dumps(config, sort_keys=True))


def _stratify_column(
    frame: pd.DataFrame, columns: Sequence[str], stratify: str | None
) -> str | None:
    if stratify is None or stratify == "none":
        return None
    if stratify != "auto":
        if stratify not in frame.columns:
            raise CohortError(
                f"stratify column {stratify!r} is not a label column ({', '.join(columns)})"
            )
        return stratify
    first = columns[0]
    if frame.groupby("patient_id")[first].nunique(dropna=False).max() > 1:
        log.warning("patients have slides with different %r values: splits not stratified", first)
        return None
    return first


def _warn_unlabelled(store_slides: pd.DataFrame, frame: pd.DataFrame, source: str) -> None:
    """Store slides left out of a cohort for want of a label row: said by id, not counted."""
    unlabelled = sorted(set(store_slides["slide_id"].dropna().astype(str)) - set(frame["slide_id"]))
    if unlabelled:
        more = f" ... ({len(unlabelled)} in all)" if len(unlabelled) > 10 else ""
        log.warning(
            "%d store slides have no row in %s and are left out: %s",
            len(unlabelled),
            source,
            ", ".join(unlabelled[:10]) + more,
        )
