"""Sample, patient and slide identifiers: TCGA barcodes and mapping tables.

A TCGA barcode names a patient and, piece by piece, what was taken from them::

    TCGA-2V-A95S-01A-11R-A37K-07
    │    │  │    │ │ │ │ │    └ centre that received the aliquot (07)
    │    │  │    │ │ │ │ └ plate (A37K)
    │    │  │    │ │ │ └ analyte (R: RNA)
    │    │  │    │ │ └ portion (11)
    │    │  │    │ └ vial (A)
    │    │  │    └ sample type (01: primary solid tumour)
    │    │  └ participant (A95S)
    │    └ tissue source site (2V)
    └ project

The patient is the first three fields (12 characters). Slide barcodes end in a slide
section instead of an analyte and plate: ``TCGA-2V-A95S-01Z-00-DX1`` (DX diagnostic
FFPE slide; TS, MS, BS top, middle and bottom sections of a frozen sample). Code
meanings follow the GDC/TCGA code tables.

Other cohorts (an external hospital, a NanoString panel) have no such structure: a
mapping table with ``sample_id``, ``patient_id`` and optionally ``slide_id`` says
which is whose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from infra.errors import InvalidSlideIdError
from infra.ids import validate_slide_id
from training.omics.errors import MappingError, OmicsTableError

__all__ = [
    "ANALYTE_CODES",
    "SAMPLE_TYPES",
    "SLIDE_SECTIONS",
    "TcgaBarcode",
    "is_tcga_barcode",
    "load_mapping",
    "parse_tcga_barcode",
    "patients_for_samples",
    "patients_for_slides",
    "tcga_patient_id",
]

# Sample type code -> (definition, short letter code), from the GDC code tables.
SAMPLE_TYPES: Mapping[str, tuple[str, str]] = {
    "01": ("Primary Solid Tumor", "TP"),
    "02": ("Recurrent Solid Tumor", "TR"),
    "03": ("Primary Blood Derived Cancer - Peripheral Blood", "TB"),
    "04": ("Recurrent Blood Derived Cancer - Bone Marrow", "TRBM"),
    "05": ("Additional - New Primary", "TAP"),
    "06": ("Metastatic", "TM"),
    "07": ("Additional Metastatic", "TAM"),
    "08": ("Human Tumor Original Cells", "THOC"),
    "09": ("Primary Blood Derived Cancer - Bone Marrow", "TBM"),
    "10": ("Blood Derived Normal", "NB"),
    "11": ("Solid Tissue Normal", "NT"),
    "12": ("Buccal Cell Normal", "NBC"),
    "13": ("EBV Immortalized Normal", "NEBV"),
    "14": ("Bone Marrow Normal", "NBM"),
    "20": ("Control Analyte", "CELLC"),
    "40": ("Recurrent Blood Derived Cancer - Peripheral Blood", "TRB"),
    "50": ("Cell Lines", "CELL"),
    "60": ("Primary Xenograft Tissue", "XP"),
    "61": ("Cell Line Derived Xenograft Tissue", "XCL"),
}

ANALYTE_CODES: Mapping[str, str] = {
    "D": "DNA",
    "G": "Whole Genome Amplification (GenomePlex) DNA",
    "H": "mirVana RNA (Allprep DNA) produced by hybrid protocol",
    "R": "RNA",
    "T": "Total RNA",
    "W": "Whole Genome Amplification (Repli-G) DNA",
    "X": "Whole Genome Amplification (Repli-G X) DNA",
}

SLIDE_SECTIONS: Mapping[str, str] = {
    "DX": "diagnostic slide (FFPE)",
    "TS": "top section (frozen)",
    "MS": "middle section (frozen)",
    "BS": "bottom section (frozen)",
}

_BARCODE = re.compile(
    r"(?P<project>TCGA)-(?P<tss>[A-Z0-9]{2})-(?P<participant>[A-Z0-9]{4})"
    r"(?:-(?P<sample_code>\d{2})(?P<vial>[A-Z])?"
    r"(?:-(?P<portion>\d{2})"
    r"(?:(?P<analyte>[A-Z])(?:-(?P<plate>[A-Z0-9]{4})(?:-(?P<center>\d{2}))?)?"
    r"|-(?P<slide>(?:DX|TS|MS|BS)[A-Z0-9]{1,3}))?"
    r")?)?"
)


@dataclass(frozen=True)
class TcgaBarcode:
    """The fields of a (possibly partial) TCGA barcode; absent fields are None."""

    barcode: str
    project: str
    tss: str
    participant: str
    sample_code: str | None = None
    vial: str | None = None
    portion: str | None = None
    analyte: str | None = None
    plate: str | None = None
    center: str | None = None
    slide: str | None = None

    @property
    def patient_id(self) -> str:
        return f"{self.project}-{self.tss}-{self.participant}"

    @property
    def sample_id(self) -> str | None:
        """``TCGA-2V-A95S-01A`` (with the vial when the barcode has one)."""
        if self.sample_code is None:
            return None
        return f"{self.patient_id}-{self.sample_code}{self.vial or ''}"

    @property
    def sample_type(self) -> str | None:
        """The sample type's definition, e.g. ``Primary Solid Tumor``."""
        if self.sample_code is None:
            return None
        known = SAMPLE_TYPES.get(self.sample_code)
        return known[0] if known else f"sample type {self.sample_code}"

    @property
    def sample_type_letters(self) -> str | None:
        known = SAMPLE_TYPES.get(self.sample_code or "")
        return known[1] if known else None

    @property
    def is_tumor(self) -> bool | None:
        # Codes 01-09 are tumours, 10-19 normals, 20-29 controls (GDC code tables).
        return None if self.sample_code is None else 1 <= int(self.sample_code) <= 9

    @property
    def is_normal(self) -> bool | None:
        return None if self.sample_code is None else 10 <= int(self.sample_code) <= 19

    @property
    def analyte_name(self) -> str | None:
        return ANALYTE_CODES.get(self.analyte or "") if self.analyte else None

    @property
    def slide_kind(self) -> str | None:
        return SLIDE_SECTIONS.get(self.slide[:2]) if self.slide else None


def parse_tcga_barcode(barcode: str) -> TcgaBarcode:
    """Parse a TCGA barcode (patient, sample, aliquot or slide level).

    Anything after the first ``.`` is ignored, so a GDC slide file name
    (``TCGA-...-DX1.<uuid>.svs``) parses to its slide barcode. Raises ``ValueError``
    (:class:`OmicsTableError`) when the text is not a TCGA barcode.
    """
    text = str(barcode).strip().split(".", 1)[0].upper()
    match = _BARCODE.fullmatch(text)
    if match is None:
        raise OmicsTableError(f"{barcode!r} is not a TCGA barcode (TCGA-TSS-PART[-...])")
    fields = match.groupdict()
    return TcgaBarcode(barcode=text, **fields)


def is_tcga_barcode(text: object) -> bool:
    if not isinstance(text, str):
        return False
    return _BARCODE.fullmatch(text.strip().split(".", 1)[0].upper()) is not None


def tcga_patient_id(barcode: str) -> str:
    """The patient (first 12 characters) of a TCGA barcode."""
    return parse_tcga_barcode(barcode).patient_id


# --------------------------------------------------------------------------- mapping tables

_MAPPING_COLUMNS = ("sample_id", "patient_id", "slide_id")


def _read_text_table(source: str, storage_options: Mapping[str, Any] | None) -> pd.DataFrame:
    from infra.errors import TableNotFoundError, TableReadError
    from infra.tables import read_table

    try:
        return read_table(source, storage_options, dtype="string", keep_default_na=False)
    except TableNotFoundError:
        raise
    except TableReadError as exc:
        raise MappingError(f"cannot read mapping table: {exc.reason}", file=source) from exc


def load_mapping(
    source: str | pd.DataFrame,
    *,
    storage_options: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> pd.DataFrame:
    """Read and check a mapping table: ``sample_id``, ``patient_id`` and/or ``slide_id``.

    Columns are matched case-insensitively; other columns are kept. A row needs a
    patient (a slide or sample without one cannot be placed); a sample or slide with
    two different patients is an error naming both rows. Returns a DataFrame with
    string columns and a ``_line`` column (1-based line in the file) for messages.
    """
    label = name or (source if isinstance(source, str) else "<mapping table>")
    frame = (
        _read_text_table(source, storage_options)
        if isinstance(source, str)
        else source.astype("string")
    )
    frame = frame.rename(columns={c: str(c).strip().lower() for c in frame.columns})
    if "patient_id" not in frame.columns:
        raise MappingError(
            f"mapping table needs a patient_id column (found {list(frame.columns)})",
            file=label,
            column="patient_id",
        )
    if "sample_id" not in frame.columns and "slide_id" not in frame.columns:
        raise MappingError(
            "mapping table needs a sample_id or a slide_id column", file=label, column="sample_id"
        )
    frame = frame.reset_index(drop=True)
    frame["_line"] = frame.index + 2  # header is line 1
    for column in (c for c in _MAPPING_COLUMNS if c in frame.columns):
        frame[column] = frame[column].str.strip()
    _check_mapping(frame, label)
    return frame


def _check_mapping(frame: pd.DataFrame, label: str) -> None:
    blank = frame["patient_id"].isna() | (frame["patient_id"] == "")
    if blank.any():
        first = frame[blank].iloc[0]
        key = first.get("sample_id") if "sample_id" in frame else first.get("slide_id")
        raise MappingError(
            f"no patient_id for {key!r}", file=label, line=int(first["_line"]), column="patient_id"
        )
    if "slide_id" in frame.columns:
        for value, line in zip(frame["slide_id"], frame["_line"], strict=True):
            if pd.isna(value) or value == "":
                continue
            try:
                validate_slide_id(value)
            except InvalidSlideIdError as exc:
                raise MappingError(str(exc), file=label, line=int(line), column="slide_id") from exc
    for key in ("sample_id", "slide_id"):
        if key not in frame.columns:
            continue
        rows = frame[frame[key].notna() & (frame[key] != "")]
        patients = rows.groupby(key, sort=False)["patient_id"].nunique()
        conflicted = patients[patients > 1]
        if len(conflicted):
            ident = conflicted.index[0]
            clash = rows[rows[key] == ident]
            lines = ", ".join(str(x) for x in clash["_line"])
            raise MappingError(
                f"{key} {ident!r} is given to several patients "
                f"({', '.join(sorted(set(clash['patient_id'])))}) on lines {lines}",
                file=label,
                line=int(clash["_line"].iloc[1]),
                column="patient_id",
            )


def _lookup(mapping: pd.DataFrame | None, key: str) -> dict[str, str]:
    if mapping is None or key not in mapping.columns:
        return {}
    rows = mapping[mapping[key].notna() & (mapping[key] != "")]
    return dict(zip(rows[key], rows["patient_id"], strict=True))


def patients_for_samples(
    sample_ids: Iterable[str],
    mapping: pd.DataFrame | None = None,
    *,
    expression_file: str | None = None,
    mapping_file: str | None = None,
    positions: Mapping[str, str] | None = None,
) -> pd.Series:
    """Patient of each sample: from the mapping table, else from its TCGA barcode.

    A sample with neither is a :class:`MappingError` naming the expression file and
    where the sample sits in it (``positions``: sample -> "column 5"), and the
    mapping file that lacks it.
    """
    known = _lookup(mapping, "sample_id")
    out: dict[str, str] = {}
    for sample in sample_ids:
        patient = known.get(sample)
        if patient is None and is_tcga_barcode(sample):
            patient = tcga_patient_id(sample)
        if patient is None:
            where = (positions or {}).get(sample)
            looked = (
                f"not in mapping table {mapping_file}" if mapping_file else "no mapping table given"
            )
            raise MappingError(
                f"sample {sample!r} has no patient: {looked}, and it is not a TCGA barcode",
                file=expression_file or mapping_file,
                column=sample if where is None else f"{sample} ({where})",
            )
        out[sample] = patient
    return pd.Series(out, name="patient_id", dtype="string").rename_axis("sample_id")


def patients_for_slides(
    slide_ids: Iterable[str],
    mapping: pd.DataFrame | None = None,
    store_patients: Mapping[str, str | None] | None = None,
) -> pd.Series:
    """Patient of each slide, or <NA> when nothing says: mapping table first, then the
    store's ``patient_id`` column, then the slide's TCGA barcode."""
    known = _lookup(mapping, "slide_id")
    out: dict[str, str | None] = {}
    for slide in slide_ids:
        patient = known.get(slide)
        if patient is None and store_patients:
            value = store_patients.get(slide)
            patient = None if value is None or pd.isna(value) or value == "" else str(value)
        if patient is None and is_tcga_barcode(slide):
            patient = tcga_patient_id(slide)
        out[slide] = patient
    return pd.Series(out, name="patient_id", dtype="string").rename_axis("slide_id")
