"""What to ingest: a manifest (CSV/TSV/Parquet) or a glob/prefix of slide files.

Manifest columns: ``uri`` (or ``path`` / ``slide_uri``) required; ``slide_id``,
``patient_id`` and ``mpp`` (an explicit resolution override) optional. Relative paths
are resolved against the manifest's own folder. Every slide id is validated before it
can reach a path, and duplicates are refused, naming the rows.

Validation is per row (:func:`load_listing`): every bad row is reported, with its row
number and reason, and the good rows are ingested. A row is bad when its slide id is
invalid, repeats an earlier row's or differs from one only by case (the two would share
a folder on a case-insensitive filesystem), or its ``mpp`` is not a number between
``MPP_RANGE`` µm/px (``nan`` included; ``force_mpp`` lifts the range, not the rest).
"""

from __future__ import annotations

import logging
import math
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from infra.errors import InvalidSlideIdError, SlidebankError, TableReadError
from infra.ids import slide_id_from_uri, validate_slide_id
from infra.storage import is_local, open_filesystem, strip_protocol
from infra.tables import TABLE_SUFFIXES

__all__ = [
    "MPP_RANGE",
    "SLIDE_EXTENSIONS",
    "ManifestError",
    "RejectedRow",
    "SlideSource",
    "SourceListing",
    "check_mpp",
    "load_listing",
    "load_sources",
]

#: Plausible µm/px for a slide scan or a target resolution: 0.05 (beyond any optical
#: scanner's 100x) to 50 (a 0.2x overview). Outside it a value is a typo (nm for µm, a
#: magnification for a resolution) that would plan zero or billions of tiles.
MPP_RANGE = (0.05, 50.0)

SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".svslide")
log = logging.getLogger(__name__)

_URI_COLUMNS = ("uri", "slide_uri", "path")
#: what ingest reads from a manifest besides the slide column
_KNOWN_COLUMNS = ("slide_id", "patient_id", "mpp")
_MANIFEST_SUFFIXES = tuple(s for s in TABLE_SUFFIXES if not s.startswith(".txt"))


class ManifestError(SlidebankError, ValueError):
    """A manifest or source listing is malformed; names the file and the row."""


@dataclass(frozen=True)
class SlideSource:
    uri: str
    slide_id: str
    patient_id: str | None = None
    mpp: float | None = None


@dataclass(frozen=True)
class RejectedRow:
    """A manifest row (or listed file) that is not ingested, and why."""

    where: str  # "row 7" or the file's URI
    slide_id: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True)
class SourceListing:
    sources: list[SlideSource]
    rejected: list[RejectedRow]


def check_mpp(value: Any, what: str, *, force: bool = False) -> float:
    """``value`` as a float µm/px, or a ``ValueError`` naming ``what`` and the reason."""
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in µm/px, got {value!r}") from None
    if not math.isfinite(mpp) or mpp <= 0:
        raise ValueError(f"{what} must be a positive finite number in µm/px, got {value!r}")
    low, high = MPP_RANGE
    if not force and not low <= mpp <= high:
        raise ValueError(
            f"{what} = {mpp:g} µm/px is outside {low:g}-{high:g} µm/px (a typo? "
            "nm for µm, or a magnification?); pass --force-mpp if it is real"
        )
    return mpp


def load_sources(
    source: str, storage_options: Mapping[str, Any] | None = None, *, force_mpp: bool = False
) -> list[SlideSource]:
    """Slides named by ``source``; a :class:`ManifestError` listing every bad row if any."""
    listing = load_listing(source, storage_options, force_mpp=force_mpp)
    if listing.rejected:
        raise ManifestError(_rejected_message(source, listing.rejected))
    return listing.sources


def load_listing(
    source: str, storage_options: Mapping[str, Any] | None = None, *, force_mpp: bool = False
) -> SourceListing:
    """Slides named by ``source`` (a manifest file, a glob, a folder or an object prefix),
    and the rows refused, each with its reason. ``ManifestError`` only when the whole
    source is unusable (unreadable, no slide column, nothing listed)."""
    if source.lower().endswith(_MANIFEST_SUFFIXES):
        return _from_manifest(source, storage_options, force_mpp)
    return _from_listing(source, storage_options)


def _rejected_message(source: str, rejected: list[RejectedRow]) -> str:
    lines = [f"{source}: {len(rejected)} bad row(s):"] + [f"  {r}" for r in rejected[:50]]
    if len(rejected) > 50:
        lines.append(f"  ... and {len(rejected) - 50} more")
    return "\n".join(lines)


def _read_table(source: str, storage_options: Mapping[str, Any] | None) -> pa.Table:
    from infra.tables import read_arrow_table

    try:
        # Ids stay text: a slide id "007" or a patient id "1e3" must not become a number.
        # mpp as text too: CSV readers turn "nan" into a missing value, which would silently
        # mean "use the metadata" instead of the error it is.
        return read_arrow_table(
            source, storage_options, string_columns=("slide_id", "patient_id", "mpp")
        )
    except TableReadError as exc:
        raise ManifestError(f"{source}: cannot read manifest: {exc.reason}") from exc


def _from_manifest(
    source: str, storage_options: Mapping[str, Any] | None, force_mpp: bool
) -> SourceListing:
    rows = _read_table(source, storage_options).to_pylist()
    if not rows:
        raise ManifestError(f"{source}: manifest has no rows")
    column = next((c for c in _URI_COLUMNS if c in rows[0]), None)
    if column is None:
        raise ManifestError(f"{source}: no slide column; expected one of {list(_URI_COLUMNS)}")
    extra = [c for c in rows[0] if c not in (*_URI_COLUMNS, *_KNOWN_COLUMNS)]
    if extra:
        # Clinical columns in a manifest are common; ingest stores none of them, so say
        # where they go instead of dropping them without a word.
        log.warning(
            "%s: ingest does not store the manifest columns %s; attach them to the slides "
            "with: slidebank slides set %s --store STORE",
            source,
            ", ".join(map(repr, extra)),
            source,
        )
    base = (
        posixpath.dirname(strip_protocol(source)) if is_local(source) else source.rsplit("/", 1)[0]
    )
    out: list[SlideSource] = []
    rejected: list[RejectedRow] = []
    seen: dict[str, tuple[int, str]] = {}  # lower-cased id -> (row, id as written)
    for number, row in enumerate(rows, start=2):  # row 1 is the header, as a spreadsheet shows it
        where = f"row {number}"
        try:
            item = _row_source(number, row, column, base, force_mpp)
        except ValueError as exc:
            sid = row.get("slide_id")
            rejected.append(RejectedRow(where, str(sid) if sid else None, str(exc)))
            continue
        first = seen.get(item.slide_id.lower())
        if first is not None:
            how = "repeats" if first[1] == item.slide_id else "differs only by case from"
            rejected.append(
                RejectedRow(
                    where,
                    item.slide_id,
                    (
                        f"slide_id {item.slide_id!r} {how} row {first[0]}'s {first[1]!r}"
                        + (
                            ""
                            if how == "repeats"
                            else " (they would share a folder on a case-insensitive filesystem)"
                        )
                    ),
                )
            )
            continue
        seen[item.slide_id.lower()] = (number, item.slide_id)
        out.append(item)
    return SourceListing(out, rejected)


def _row_source(number: int, row: dict, column: str, base: str, force_mpp: bool) -> SlideSource:
    uri = row.get(column)
    if not uri or not str(uri).strip():
        raise ValueError(f"empty {column!r}")
    uri = str(uri).strip()
    if "://" not in uri and not posixpath.isabs(uri):
        uri = posixpath.join(base, uri)
    try:
        sid = (
            validate_slide_id(str(row["slide_id"]))
            if row.get("slide_id")
            else slide_id_from_uri(uri)
        )
    except InvalidSlideIdError as exc:
        raise ValueError(str(exc)) from exc
    mpp = row.get("mpp")
    if isinstance(mpp, str) and not mpp.strip():
        mpp = None
    if mpp is not None:
        mpp = check_mpp(mpp.strip() if isinstance(mpp, str) else mpp, "mpp", force=force_mpp)
    patient = row.get("patient_id")
    return SlideSource(uri, sid, str(patient) if patient else None, mpp)


def _from_listing(source: str, storage_options: Mapping[str, Any] | None) -> SourceListing:
    fs, path = open_filesystem(source, storage_options)
    protocol = None if is_local(source) else source.split("://", 1)[0]
    if any(ch in path for ch in "*?["):
        paths = sorted(fs.glob(path))
    elif fs.isdir(path):
        paths = sorted(p for p in fs.find(path) if p.lower().endswith(SLIDE_EXTENSIONS))
    elif fs.exists(path):
        paths = [path]
    else:
        raise ManifestError(f"{source}: no such file, folder or prefix")
    if not paths:
        raise ManifestError(f"{source}: matched no slides")
    out: list[SlideSource] = []
    rejected: list[RejectedRow] = []
    seen: dict[str, str] = {}  # lower-cased id -> the first file giving it
    for p in paths:
        uri = p if protocol is None else f"{protocol}://{p}"
        try:
            sid = slide_id_from_uri(uri)
        except InvalidSlideIdError as exc:
            rejected.append(RejectedRow(uri, None, str(exc)))
            continue
        if sid.lower() in seen:
            rejected.append(
                RejectedRow(
                    uri,
                    sid,
                    (
                        f"gives slide id {sid!r}, as {seen[sid.lower()]} does (ids equal up to case "
                        "collide on case-insensitive filesystems); use a manifest with explicit "
                        "slide_id values"
                    ),
                )
            )
            continue
        seen[sid.lower()] = uri
        out.append(SlideSource(uri, sid))
    return SourceListing(out, rejected)
