"""Expression matrices: read, orient, clean gene ids, collapse duplicates, log-normalise.

Accepted: TSV, CSV (optionally gzipped) and Parquet; genes × samples or samples ×
genes (declared, or detected from the labels); gene symbols, Ensembl ids (version
suffixes stripped) or TCGA legacy ``SYMBOL|ENTREZ`` ids; counts (to CPM), TPM, FPKM or
already-normalised linear values, brought to ``log2(x + 1)``; or values already on a
log2 scale. The result is always samples × genes.

Every problem found in the file raises :class:`OmicsTableError` naming the file and
the row, column (and text line) at fault: duplicate samples, non-numeric or missing
values, negative values on a linear scale, an empty library.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from infra.errors import TableNotFoundError, TableReadError
from infra.tables import open_table, read_table
from training.omics.config import ExpressionConfig
from training.omics.errors import OmicsTableError

__all__ = [
    "ExpressionMatrix",
    "detect_orientation",
    "load_expression",
    "load_gene_map",
    "normalize_gene_id",
]

log = logging.getLogger(__name__)

_ENSEMBL = re.compile(r"(ENS[A-Z]*[GT]\d{6,})(?:\.\d+)?(_PAR_Y)?")
_SYMBOL_ENTREZ = re.compile(r"([^|]+)\|(\d+)")
_TCGA = re.compile(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", re.IGNORECASE)
# Counter rows that quantifiers append to per-gene tables (HTSeq, STAR): not genes.
_COUNTER_ROWS = re.compile(r"__.*|N_(unmapped|multimapping|noFeature|ambiguous)")
# Annotation columns that sit beside the id column in genes × samples tables.
_ANNOTATION = {
    "gene_name",
    "gene_symbol",
    "symbol",
    "hgnc_symbol",
    "gene",
    "gene_type",
    "gene_biotype",
    "biotype",
    "description",
    "entrez",
    "entrez_id",
    "entrezgene_id",
    "length",
}
_SYMBOL_COLUMNS = ("gene_name", "gene_symbol", "symbol", "hgnc_symbol", "gene")


@dataclass(frozen=True)
class ExpressionMatrix:
    """Log2-scale expression, samples × genes, and how it was obtained."""

    data: pd.DataFrame
    source: str
    units: str
    orientation: str
    gene_ids: str
    duplicate_genes: Mapping[str, int] = field(default_factory=dict)
    dropped_rows: tuple[str, ...] = ()
    sample_positions: Mapping[str, str] = field(default_factory=dict)

    @property
    def samples(self) -> list[str]:
        return [str(s) for s in self.data.index]

    @property
    def genes(self) -> list[str]:
        return [str(g) for g in self.data.columns]

    @property
    def shape(self) -> tuple[int, int]:
        n_samples, n_genes = self.data.shape
        return int(n_samples), int(n_genes)

    def to_long(self) -> pa.Table:
        """``sample_id, gene, log2_expression``: a shape DuckDB joins and filters well."""
        stacked = self.data.stack()
        return pa.table(
            {
                "sample_id": pa.array(stacked.index.get_level_values(0).astype(str)),
                "gene": pa.array(stacked.index.get_level_values(1).astype(str)),
                "log2_expression": pa.array(stacked.to_numpy(dtype=np.float64)),
            }
        )


def normalize_gene_id(label: object) -> str | None:
    """A clean gene id, or None for rows that are not genes.

    ``ENSG00000111640.14`` -> ``ENSG00000111640`` (``_PAR_Y`` kept so the Y copies of
    pseudo-autosomal genes do not collide with the X ones); ``CD8A|925`` -> ``CD8A``;
    ``?|100130426`` and quantifier counters (``__no_feature``, ``N_unmapped``) -> None.
    """
    if label is None or (isinstance(label, float) and np.isnan(label)):
        return None
    text = str(label).strip()
    if not text or _COUNTER_ROWS.fullmatch(text):
        return None
    ensembl = _ENSEMBL.fullmatch(text)
    if ensembl:
        return ensembl.group(1) + (ensembl.group(2) or "")
    legacy = _SYMBOL_ENTREZ.fullmatch(text)
    if legacy:
        symbol = legacy.group(1).strip()
        return None if symbol == "?" else symbol
    return text


def _fraction(labels: list[str], pattern: re.Pattern[str]) -> float:
    if not labels:
        return 0.0
    # A prefix match: a TCGA aliquot barcode starts with the patient pattern.
    return sum(1 for x in labels if pattern.match(x)) / len(labels)


def _known_genes() -> frozenset[str]:
    from training.omics.signatures import library_genes

    return library_genes()


def detect_orientation(
    row_labels: list[str], column_labels: list[str], *, source: str = "<table>"
) -> tuple[str, str]:
    """``("genes_x_samples" | "samples_x_genes", reason)`` from the labels alone.

    In order: Ensembl / ``SYMBOL|ENTREZ`` ids on one axis only; TCGA barcodes on one
    axis only; more known immune-signature genes on one axis; one axis at least five
    times longer (matrices hold thousands of genes and tens to hundreds of samples).
    Raises when none of these decides, asking for ``orientation=``.
    """
    gene_like = re.compile(_ENSEMBL.pattern + "|" + _SYMBOL_ENTREZ.pattern)
    rows_ids, cols_ids = _fraction(row_labels, gene_like), _fraction(column_labels, gene_like)
    if max(rows_ids, cols_ids) >= 0.5 and min(rows_ids, cols_ids) < 0.1:
        rows_are_genes = rows_ids > cols_ids
        return _orient(rows_are_genes), "Ensembl or SYMBOL|ENTREZ gene ids"
    rows_tcga, cols_tcga = _fraction(row_labels, _TCGA), _fraction(column_labels, _TCGA)
    if max(rows_tcga, cols_tcga) >= 0.5 and min(rows_tcga, cols_tcga) < 0.1:
        return _orient(cols_tcga > rows_tcga), "TCGA barcodes"
    known = _known_genes()
    rows_known = sum(1 for x in row_labels if x in known)
    cols_known = sum(1 for x in column_labels if x in known)
    if max(rows_known, cols_known) >= 3 and min(rows_known, cols_known) == 0:
        return _orient(rows_known > cols_known), "known signature genes"
    n_rows, n_cols = len(row_labels), len(column_labels)
    if max(n_rows, n_cols) >= 5 * max(1, min(n_rows, n_cols)):
        return _orient(n_rows > n_cols), "many more labels on the gene axis"
    raise OmicsTableError(
        f"cannot tell whether genes are rows or columns ({n_rows} rows, {n_cols} columns); "
        "declare orientation='genes_x_samples' or 'samples_x_genes'",
        file=source,
    )


def _orient(rows_are_genes: bool) -> str:
    return "genes_x_samples" if rows_are_genes else "samples_x_genes"


# --------------------------------------------------------------------------- reading


@dataclass
class _Raw:
    """The file as read: row labels, column labels (as written), numeric-or-not body."""

    rows: list[str]
    columns: list[str]
    body: pd.DataFrame  # positional columns 0..n-1
    annotations: dict[str, list[Any]]  # name -> values per row
    text_lines: bool  # True when row i is on line i + 2 of a text file


def _read_raw(source: str, storage_options: Mapping[str, Any] | None) -> _Raw:
    try:
        with open_table(source, storage_options) as (handle, fmt):
            if fmt.kind == "parquet":
                return _read_parquet(handle, source)
            return _read_delimited(handle, fmt.delimiter or "\t", source)
    except FileNotFoundError:
        raise
    except OmicsTableError:
        raise
    except TableReadError as exc:
        raise OmicsTableError(exc.reason, file=source) from exc
    except (UnicodeDecodeError, pd.errors.ParserError, pa.ArrowInvalid, OSError) as exc:
        raise OmicsTableError(f"cannot read table: {exc}", file=source) from exc


def _read_delimited(handle: Any, sep: str, source: str) -> _Raw:
    first = handle.readline().decode("utf-8-sig").rstrip("\r\n")
    if not first.strip():
        raise OmicsTableError("empty table (no header line)", file=source, line=1)
    header = next(csv.reader([first], delimiter=sep))
    # Header read by hand: pandas would silently rename a duplicate "S1" to "S1.1".
    # The body is parsed from the same stream, never held twice as text.
    try:
        body = pd.read_csv(
            handle,
            encoding="utf-8",
            sep=sep,
            header=None,
            dtype={0: str},  # labels stay text: Entrez-like ids must not become floats
            keep_default_na=True,
            skip_blank_lines=False,
        )
    except pd.errors.EmptyDataError:
        raise OmicsTableError("table has a header but no rows", file=source, line=2) from None
    if len(header) == body.shape[1] - 1:  # R-style header without the corner cell
        header = ["", *header]
    if len(header) != body.shape[1]:
        raise OmicsTableError(
            f"header has {len(header)} fields but rows have {body.shape[1]}", file=source, line=1
        )
    blank_rows = body.isna().all(axis=1).to_numpy()
    trailing = len(blank_rows) - int(np.argmax(~blank_rows[::-1])) if (~blank_rows).any() else 0
    body, blank_rows = body.iloc[:trailing], blank_rows[:trailing]
    if body.empty:
        raise OmicsTableError("table has a header but no rows", file=source, line=2)
    if blank_rows.any():
        line = int(np.flatnonzero(blank_rows)[0]) + 2
        raise OmicsTableError("blank line inside the table", file=source, line=line)
    return _split_labels(header, body, source, text_lines=True)


def _read_parquet(handle: Any, source: str) -> _Raw:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(handle)
    schema = parquet.schema_arrow
    names = list(schema.names)
    _check_unique_header(names, source)  # before reading: Arrow refuses duplicate names
    meta = schema.pandas_metadata or {}
    index_cols = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    # A pandas index saved in the file is the label column; otherwise the first column.
    order = index_cols + [n for n in names if n not in index_cols]
    frame = parquet.read(columns=order).select(order).to_pandas(ignore_metadata=True)
    frame.columns = range(frame.shape[1])
    header = ["" if n in index_cols else n for n in order]
    return _split_labels(header, frame, source, text_lines=False)


def _check_unique_header(names: list[str], source: str) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in seen:
            raise OmicsTableError(
                f"column name {name!r} appears twice (columns {seen[name] + 1} and {position + 1})",
                file=source,
                column=name,
            )
        seen[name] = position


def _split_labels(header: list[str], body: pd.DataFrame, source: str, *, text_lines: bool) -> _Raw:
    """First column: row labels; named annotation columns set aside; the rest: values."""
    rows = [str(x).strip() for x in body.iloc[:, 0].tolist()]
    missing = [
        i for i, x in enumerate(body.iloc[:, 0].tolist()) if pd.isna(x) or str(x).strip() == ""
    ]
    if missing:
        line = missing[0] + 2 if text_lines else None
        raise OmicsTableError(
            "row without a label in the first column",
            file=source,
            line=line,
            row=None if text_lines else missing[0],
        )
    annotations: dict[str, list[Any]] = {}
    keep: list[int] = []
    columns: list[str] = []
    for position in range(1, body.shape[1]):
        name = str(header[position]).strip()
        if name.lower() in _ANNOTATION and not pd.api.types.is_numeric_dtype(body[position]):
            annotations[name.lower()] = body[position].tolist()
            continue
        keep.append(position)
        columns.append(name)
    values = body[keep]
    values.columns = range(len(keep))
    return _Raw(rows, columns, values, annotations, text_lines)


def _first_duplicate(labels: list[str]) -> tuple[str, int, int] | None:
    seen: dict[str, int] = {}
    for position, label in enumerate(labels):
        if label in seen:
            return label, seen[label], position
        seen[label] = position
    return None


def _numeric(raw: _Raw, source: str) -> np.ndarray:
    """The value block as float64; the first non-numeric or missing cell is an error."""
    body = raw.body
    for position in range(body.shape[1]):
        column = body[position]
        if pd.api.types.is_bool_dtype(column):
            bad = np.ones(len(column), dtype=bool)
            kind = "non-numeric value"
        elif pd.api.types.is_numeric_dtype(column):
            bad = column.isna().to_numpy()
            kind = "missing value"
        else:
            coerced = pd.to_numeric(column, errors="coerce")
            bad = coerced.isna().to_numpy()
            kind = "non-numeric value"
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = column.iloc[i]
            what = "missing value" if pd.isna(value) else f"{kind} {value!r}"
            raise OmicsTableError(
                what,
                file=source,
                row=raw.rows[i],
                column=raw.columns[position] or f"#{position + 2}",
                line=i + 2 if raw.text_lines else None,
            )
    values = body.apply(pd.to_numeric).to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        i, j = (int(k[0]) for k in np.nonzero(~np.isfinite(values)))
        raise OmicsTableError(
            f"infinite value {values[i, j]!r}",
            file=source,
            row=raw.rows[i],
            column=raw.columns[j],
            line=i + 2 if raw.text_lines else None,
        )
    return values


# --------------------------------------------------------------------------- loading


def load_expression(
    source: str,
    config: ExpressionConfig | None = None,
    *,
    gene_map: Mapping[str, str] | pd.Series | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> ExpressionMatrix:
    """Load an expression matrix as log2 expression, samples × genes.

    ``gene_map`` (Ensembl id -> symbol) converts Ensembl-indexed matrices to symbols
    when the file has no symbol column of its own; signatures are lists of symbols.
    """
    config = config or ExpressionConfig()
    raw = _read_raw(source, storage_options)
    orientation: str = config.orientation
    if orientation == "auto":
        orientation, reason = detect_orientation(raw.rows, raw.columns, source=source)
        log.info("%s: %s (from %s)", source, orientation, reason)
    genes_are_rows = orientation == "genes_x_samples"
    if raw.annotations and not genes_are_rows:
        names = ", ".join(raw.annotations)
        raise OmicsTableError(
            f"annotation columns ({names}) in a samples × genes table", file=source, column=names
        )
    sample_labels = raw.columns if genes_are_rows else raw.rows
    _check_samples(sample_labels, source, genes_are_rows, raw.text_lines)
    values = _numeric(raw, source)
    matrix = values.T if genes_are_rows else values  # samples × genes from here on
    gene_labels = raw.rows if genes_are_rows else raw.columns
    genes, kind, dropped = _clean_genes(gene_labels, raw.annotations, config, gene_map, source)
    keep = np.array([g is not None for g in genes])
    matrix = matrix[:, keep]
    frame = pd.DataFrame(
        matrix,
        index=pd.Index(sample_labels, name="sample_id", dtype="string"),
        columns=pd.Index([g for g in genes if g is not None], name="gene", dtype="string"),
    )
    frame, duplicates = _collapse_duplicates(frame, config, source, genes_are_rows)
    frame = _to_log2(frame, config, source, genes_are_rows)
    positions = {
        s: (f"column {i + 2}" if genes_are_rows else f"row {i + 1}")
        for i, s in enumerate(sample_labels)
    }
    if dropped:
        log.info("%s: dropped %d non-gene rows (%s...)", source, len(dropped), dropped[0])
    return ExpressionMatrix(
        data=frame,
        source=source,
        units=config.units,
        orientation=orientation,
        gene_ids=kind,
        duplicate_genes=duplicates,
        dropped_rows=tuple(dropped),
        sample_positions=positions,
    )


def _check_samples(labels: list[str], source: str, in_header: bool, text_lines: bool) -> None:
    if any(label == "" for label in labels):
        raise OmicsTableError(
            "a sample has an empty name", file=source, line=1 if in_header else None
        )
    duplicate = _first_duplicate(labels)
    if duplicate is None:
        return
    name, first, second = duplicate
    if in_header:
        # +2: the label column is column 1 and positions are 0-based.
        raise OmicsTableError(
            f"duplicate sample {name!r} (columns {first + 2} and {second + 2})",
            file=source,
            column=name,
            line=1 if text_lines else None,
        )
    raise OmicsTableError(
        f"duplicate sample {name!r} (rows {first + 1} and {second + 1})",
        file=source,
        row=name,
        line=second + 2 if text_lines else None,
    )


def _clean_genes(
    labels: list[str],
    annotations: Mapping[str, list[Any]],
    config: ExpressionConfig,
    gene_map: Mapping[str, str] | pd.Series | None,
    source: str,
) -> tuple[list[str | None], str, list[str]]:
    ids = [normalize_gene_id(x) for x in labels]
    dropped = [label for label, gene in zip(labels, ids, strict=True) if gene is None]
    ensembl = sum(1 for g in ids if g and _ENSEMBL.fullmatch(g)) >= 0.5 * max(1, len(ids))
    if not ensembl or config.gene_ids == "ensembl":
        return ids, "ensembl" if ensembl else "symbol", dropped
    symbols = _symbol_source(annotations, gene_map)
    if symbols is None:
        if config.gene_ids == "symbol":
            raise OmicsTableError(
                "gene ids are Ensembl ids and the table has no gene_name/symbol column: "
                "pass gene_map (Ensembl id -> symbol) to use symbols",
                file=source,
            )
        return ids, "ensembl", dropped
    out: list[str | None] = []
    for position, gene in enumerate(ids):
        if gene is None:
            out.append(None)
            continue
        symbol = symbols(position, gene)
        out.append(symbol if symbol else None)
        if not symbol:
            dropped.append(labels[position])
    return out, "symbol", dropped


def _symbol_source(
    annotations: Mapping[str, list[Any]], gene_map: Mapping[str, str] | pd.Series | None
) -> Callable[[int, str], str | None] | None:
    """Where symbols come from: the table's own symbol column, else ``gene_map``."""
    for name in _SYMBOL_COLUMNS:
        if name in annotations:
            column = annotations[name]

            def from_column(position: int, _gene: str, column: list[Any] = column) -> str | None:
                value = column[position]
                return None if pd.isna(value) or str(value).strip() == "" else str(value).strip()

            return from_column
    if gene_map is not None:
        mapping = {normalize_gene_id(k): str(v) for k, v in dict(gene_map).items()}

        def from_map(_position: int, gene: str) -> str | None:
            return mapping.get(gene)

        return from_map
    return None


def _collapse_duplicates(
    frame: pd.DataFrame, config: ExpressionConfig, source: str, genes_are_rows: bool
) -> tuple[pd.DataFrame, dict[str, int]]:
    duplicated = frame.columns.duplicated(keep=False)
    if not duplicated.any():
        return frame, {}
    counts = pd.Series(frame.columns[duplicated]).value_counts()
    duplicates = {str(k): int(v) for k, v in counts.items()}
    policy = config.duplicate_genes
    if policy == "error":
        gene = next(iter(duplicates))
        where = "rows" if genes_are_rows else "columns"
        raise OmicsTableError(
            f"gene {gene!r} appears {duplicates[gene]} times ({where}); "
            "choose duplicate_genes='max_mean', 'mean', 'sum' or 'first'",
            file=source,
            row=gene if genes_are_rows else None,
            column=None if genes_are_rows else gene,
        )
    log.info("%s: %d genes with several rows, collapsed by %s", source, len(duplicates), policy)
    if policy == "first":
        return frame.loc[:, ~frame.columns.duplicated(keep="first")], duplicates
    if policy == "max_mean":
        means = frame.mean(axis=0).to_numpy()
        order = pd.DataFrame({"gene": frame.columns, "mean": means, "pos": np.arange(len(means))})
        best = order.sort_values(["mean", "pos"], ascending=[False, True]).drop_duplicates("gene")
        # Genes stay in the order they first appear, whichever of their rows wins.
        first = order.drop_duplicates("gene").set_index("gene")["pos"]
        best = best.assign(first=best["gene"].map(first)).sort_values("first")
        return frame.iloc[:, best["pos"].to_numpy()], duplicates
    grouped = frame.T.groupby(level=0, sort=False)
    collapsed = grouped.mean() if policy == "mean" else grouped.sum()
    collapsed.index.name = "gene"
    return collapsed.T, duplicates


def _to_log2(
    frame: pd.DataFrame, config: ExpressionConfig, source: str, genes_are_rows: bool
) -> pd.DataFrame:
    if config.units == "log2":
        return frame
    values = frame.to_numpy(dtype=np.float64)
    if (values < 0).any():
        i, j = (int(k[0]) for k in np.nonzero(values < 0))
        sample, gene = frame.index[i], frame.columns[j]
        raise OmicsTableError(
            f"negative value {values[i, j]!r} on a linear scale ({config.units}); "
            "if the values are already log2, declare units='log2'",
            file=source,
            row=gene if genes_are_rows else sample,
            column=sample if genes_are_rows else gene,
        )
    if config.units == "counts":
        library = values.sum(axis=1, keepdims=True)
        empty = np.flatnonzero(library[:, 0] <= 0)
        if len(empty):
            sample = frame.index[int(empty[0])]
            raise OmicsTableError(
                "sample has no counts (library size 0)",
                file=source,
                column=sample if genes_are_rows else None,
                row=None if genes_are_rows else sample,
            )
        values = values / library * 1e6  # counts per million: depth no longer matters
    logged = np.log2(values + config.pseudocount)
    return pd.DataFrame(logged, index=frame.index, columns=frame.columns)


def load_gene_map(
    source: str, *, storage_options: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Ensembl id -> symbol from a two-column table (TSV/CSV/Parquet; the first column
    is the id, the second the symbol, whatever their names). Versions are stripped."""
    try:
        frame = read_table(source, storage_options, dtype="string", keep_default_na=False)
    except TableNotFoundError:
        raise
    except TableReadError as exc:
        raise OmicsTableError(exc.reason, file=source) from exc
    if frame.shape[1] < 2:
        raise OmicsTableError("a gene map needs two columns: gene id, symbol", file=source)
    out: dict[str, str] = {}
    for line, (gene, symbol) in enumerate(zip(frame.iloc[:, 0], frame.iloc[:, 1], strict=True), 2):
        key = normalize_gene_id(gene)
        if key is None or pd.isna(symbol) or not str(symbol).strip():
            continue
        if key in out and out[key] != str(symbol).strip():
            raise OmicsTableError(
                f"gene {key!r} mapped to both {out[key]!r} and {symbol!r}",
                file=source,
                line=line,
                row=key,
            )
        out[key] = str(symbol).strip()
    return out
