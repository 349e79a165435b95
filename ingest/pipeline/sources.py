"""What to ingest: a manifest (CSV/TSV/Parquet) or a glob/prefix of slide files.

Manifest columns: ``uri`` (or ``path`` / ``slide_uri``) required; ``slide_id``,
``patient_id`` and ``mpp`` (an explicit resolution override) optional. Relative paths
are resolved against the manifest's own folder. Every slide id is validated before it
can reach a path, and duplicates are refused, naming the rows.
"""

from __future__ import annotations

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

__all__ = ["SLIDE_EXTENSIONS", "ManifestError", "SlideSource", "load_sources"]

SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".svslide")
_URI_COLUMNS = ("uri", "slide_uri", "path")
_MANIFEST_SUFFIXES = tuple(s for s in TABLE_SUFFIXES if not s.startswith(".txt"))


class ManifestError(SlidebankError, ValueError):
    """A manifest or source listing is malformed; names the file and the row."""


@dataclass(frozen=True)
class SlideSource:
    uri: str
    slide_id: str
    patient_id: str | None = None
    mpp: float | None = None


def load_sources(source: str, storage_options: Mapping[str, Any] | None = None) -> list[SlideSource]:
    """Slides named by ``source``: a manifest file, a glob, a folder or an object prefix."""
    if source.lower().endswith(_MANIFEST_SUFFIXES):
        return _from_manifest(source, storage_options)
    return _from_listing(source, storage_options)


def _read_table(source: str, storage_options: Mapping[str, Any] | None) -> pa.Table:
    from infra.tables import read_arrow_table

    try:
        # Ids stay text: a slide id "007" or a patient id "1e3" must not become a number.
        return read_arrow_table(source, storage_options, string_columns=("slide_id", "patient_id"))
    except TableReadError as exc:
        raise ManifestError(f"{source}: cannot read manifest: {exc.reason}") from exc


def _from_manifest(source: str, storage_options: Mapping[str, Any] | None) -> list[SlideSource]:
    rows = _read_table(source, storage_options).to_pylist()
    if not rows:
        raise ManifestError(f"{source}: manifest has no rows")
    column = next((c for c in _URI_COLUMNS if c in rows[0]), None)
    if column is None:
        raise ManifestError(f"{source}: no slide column; expected one of {list(_URI_COLUMNS)}")
    base = posixpath.dirname(strip_protocol(source)) if is_local(source) else source.rsplit("/", 1)[0]
    out: list[SlideSource] = []
    seen: dict[str, Any] = {}
    for number, row in enumerate(rows, start=2):  # row 1 is the header, as a spreadsheet shows it
        out.append(_row_source(source, number, row, column, base))
        sid = out[-1].slide_id
        if sid in seen:
            raise ManifestError(f"{source}: row {number}: slide_id {sid!r} repeats row {seen[sid]}")
        seen[sid] = number
    return out


def _row_source(source: str, number: int, row: dict, column: str, base: str) -> SlideSource:
    uri = row.get(column)
    if not uri or not str(uri).strip():
        raise ManifestError(f"{source}: row {number}: empty {column!r}")
    uri = str(uri).strip()
    if "://" not in uri and not posixpath.isabs(uri):
        uri = posixpath.join(base, uri)
    try:
        sid = validate_slide_id(str(row["slide_id"])) if row.get("slide_id") else slide_id_from_uri(uri)
    except InvalidSlideIdError as exc:
        raise ManifestError(f"{source}: row {number}: {exc}") from exc
    mpp = row.get("mpp")
    if mpp is not None and not (isinstance(mpp, int | float) and math.isfinite(mpp) and mpp > 0):
        raise ManifestError(f"{source}: row {number}: mpp must be a positive number, got {mpp!r}")
    patient = row.get("patient_id")
    return SlideSource(uri, sid, str(patient) if patient else None, float(mpp) if mpp else None)


def _from_listing(source: str, storage_options: Mapping[str, Any] | None) -> list[SlideSource]:
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
    seen: dict[str, Any] = {}
    for p in paths:
        uri = p if protocol is None else f"{protocol}://{p}"
        sid = slide_id_from_uri(uri)
        if sid in seen:
            raise ManifestError(
                f"{source}: {uri} and {seen[sid]} both give slide id {sid!r}; use a manifest "
                "with explicit slide_id values"
            )
        seen[sid] = uri
        out.append(SlideSource(uri, sid))
    return out
