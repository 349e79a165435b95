"""``slidebank query``: similar tiles, SQL, slides and versions of a feature store."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from slidebank._cli_common import OverwriteOpt, fail_on_slidebank_error, parse_storage_options
from slidebank._cli_table import print_table

if TYPE_CHECKING:
    import pyarrow as pa

    from features.store import FeatureStore

__all__ = ["register"]

StoreOpt = Annotated[
    str,
    typer.Option("--store", envvar="SLIDEBANK_STORE", help="Feature store URI (path or s3://...)."),
]
OptionsOpt = Annotated[
    list[str] | None,
    typer.Option("--storage-option", "-s", help="fsspec storage option KEY=VALUE (repeatable)."),
]
VersionOpt = Annotated[
    str | None, typer.Option("--at", help="Read a past store version: a number or a tag.")
]
EncoderOpt = Annotated[
    str | None, typer.Option(help="Encoder id (needed when the store holds several).")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON (every column) instead of a table.")
]
ColumnsOpt = Annotated[
    str | None,
    typer.Option("--columns", help="Comma-separated columns to show (default: those that fit)."),
]
METRIC_WORDS = {
    "L2": "squared L2 distance",
    "cosine": "cosine distance (1 - cos)",
    "dot": "negative dot product",
}


def _open(uri: str, options: list[str] | None, at: str | None) -> FeatureStore:
    from features.store import FeatureStore

    version: int | str | None = int(at) if at is not None and at.isdigit() else at
    return FeatureStore.open(uri, parse_storage_options(options), create=False, version=version)


def _print(table: pa.Table, as_json: bool, title: str, columns: str | None = None) -> None:
    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    print_table(table, as_json, title, columns=chosen)


@contextlib.contextmanager
def query_errors(what: str, columns: Sequence[str] = ()) -> Iterator[None]:
    """A mistake in the user's SQL or predicate: one line naming it and what exists.

    DuckDB and Lance raise their own exception types (with Rust or C++ locations in
    the text); the first sentence is what the user needs, plus the columns they can use.
    """
    import duckdb

    try:
        yield
    except (duckdb.Error, ValueError) as exc:
        from infra.errors import SlidebankError

        if isinstance(exc, SlidebankError):
            raise
        text = str(exc).strip().splitlines()
        message = " ".join(line.strip() for line in text[:2])
        message = re.sub(r",?\s*/\S+\.rs:\d+:\d+", "", message)  # Lance's Rust source location
        hint = f"; columns: {', '.join(columns)}" if columns else ""
        typer.secho(f"error: {what}: {message}{hint}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc


def _tile_columns(fs: FeatureStore, encoder: str | None) -> list[str]:
    view = fs._view()
    tiles = view.tiles(view.resolve_encoder(encoder))
    return [n for n in tiles.schema.names if n != "embedding"] if tiles is not None else []


def similar(
    store: StoreOpt,
    slide: Annotated[str | None, typer.Option(help="Slide id of the query tile.")] = None,
    x: Annotated[int | None, typer.Option(help="Query tile x (level-0 pixels).")] = None,
    y: Annotated[int | None, typer.Option(help="Query tile y (level-0 pixels).")] = None,
    vector_file: Annotated[
        str | None, typer.Option(help="Query by a vector saved with numpy.save (.npy).")
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=10_000, help="Number of results.")] = 10,
    encoder: EncoderOpt = None,
    cohort: Annotated[
        list[str] | None, typer.Option(help="Restrict results to these slide ids (repeatable).")
    ] = None,
    same_slide: Annotated[
        bool, typer.Option(help="Also return tiles from the query tile's own slide.")
    ] = False,
    where: Annotated[
        str | None,
        typer.Option(help='Filter on tile columns before ranking, e.g. "tissue_fraction > 0.8".'),
    ] = None,
    metric: Annotated[
        str, typer.Option(help="Distance: L2 (squared Euclidean), cosine (1 - cos) or dot.")
    ] = "L2",
    gallery: Annotated[
        str | None,
        typer.Option(help="Also draw the query tile beside its neighbours into this PNG."),
    ] = None,
    overwrite: OverwriteOpt = False,
    storage_option: OptionsOpt = None,
    at: VersionOpt = None,
    as_json: JsonOpt = False,
    columns: ColumnsOpt = None,
) -> None:
    """Tiles most similar to a tile (--slide --x --y) or to a vector (--vector-file).

    Results are nearest first; ``distance`` is in the metric chosen (stated in the
    title). --where filters before ranking, so k hits come back when k tiles match.

    Example: slidebank query similar --store s3://lab/cohort --slide TCGA-A1 --x 4096 --y 2048 -k 20
    --metric cosine --where "tissue_fraction > 0.8" --gallery similar.png
    """
    import numpy as np

    from features.store.vectors import check_metric

    tile_given = [v is not None for v in (slide, x, y)]
    if not (all(tile_given) and vector_file is None) and not (
        vector_file is not None and not any(tile_given)
    ):
        raise typer.BadParameter("give either --slide, --x and --y, or --vector-file")
    with fail_on_slidebank_error():
        metric = check_metric(metric)
        if gallery:  # refused before the search, not after it
            from infra.files import check_output

            check_output(gallery, overwrite=overwrite)
        fs = _open(store, storage_option, at)
        with query_errors("--where", _tile_columns(fs, encoder) if where else ()):
            if slide is not None and x is not None and y is not None:
                result = fs.search_by_tile(
                    slide,
                    x,
                    y,
                    k=k,
                    encoder=encoder,
                    exclude_same_slide=not same_slide,
                    slide_ids=cohort,
                    where=where,
                    metric=metric,
                )
            else:
                vector = np.load(str(vector_file), allow_pickle=False)
                result = fs.search(
                    vector, k=k, encoder=encoder, slide_ids=cohort, where=where, metric=metric
                )
        if gallery:
            from slidebank.pictures_api import similarity_gallery

            query = (slide, x, y) if slide is not None else None
            path = similarity_gallery(
                fs, result, gallery, query=query, metric=metric, overwrite=overwrite
            )
            typer.echo(f"gallery: {path}", err=True)
    order = ["slide_id", "x", "y", "distance", "tile_size", "read_mpp", "level", "config_hash"]
    result = result.select([c for c in order if c in result.column_names])
    _print(result, as_json, f"similar tiles, distance = {METRIC_WORDS[metric]}", columns)


def sql(
    query: Annotated[
        str, typer.Argument(help="DuckDB SQL over slides, tiles, runs, extra tables.")
    ],
    store: StoreOpt,
    table: Annotated[
        list[str] | None,
        typer.Option(help="Extra table NAME=PATH (.parquet/.csv/.tsv) to join (repeatable)."),
    ] = None,
    encoder: EncoderOpt = None,
    storage_option: OptionsOpt = None,
    at: VersionOpt = None,
    as_json: JsonOpt = False,
    columns: ColumnsOpt = None,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Stop the query after this many seconds.")
    ] = 60.0,
    limit: Annotated[
        int, typer.Option(min=1, help="Return at most this many rows (says so when cut).")
    ] = 100_000,
    memory_limit: Annotated[
        str, typer.Option(help="DuckDB memory budget; spill to a private temp dir is capped too.")
    ] = "2GB",
) -> None:
    """Run one sandboxed SELECT over the store; join your own tables (omics, labels) by
    slide_id. Only slides, runs, tiles* and --table tables are visible; time, memory and
    rows are bounded.

    Example: slidebank query sql --store ./store --table omics=expr.parquet
    "SELECT o.gene_x, count(*) FROM tiles t JOIN omics o USING (slide_id) GROUP BY 1"
    """
    from features.store.sandbox import SqlLimits, truncated_at
    from features.store.sql import read_table_file

    options = parse_storage_options(storage_option)
    extra = {}
    for pair in table or []:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"--table must be NAME=PATH, got {pair!r}")
        extra[name] = path
    with fail_on_slidebank_error():
        limits = SqlLimits(timeout_s=timeout, max_rows=limit, memory_limit=memory_limit)
        fs = _open(store, storage_option, at)
        loaded = {name: read_table_file(path, options) for name, path in extra.items()}
        with query_errors("SQL", _sql_tables(fs, encoder, loaded, at)):
            result = fs.sql(query, encoder=encoder, tables=loaded, limits=limits)
    _print(result, as_json, "query", columns)
    if truncated_at(result) is not None:
        typer.secho(f"note: the result was cut at --limit {limit} rows", err=True)


def _sql_tables(fs: FeatureStore, encoder: str | None, extra: dict, at: str | None) -> list[str]:
    """What a query can name, as ``table(col, ...)``, so a misspelling can be fixed."""
    view = fs._view()
    out = [f"slides({', '.join(view.slides().schema.names)})"]
    try:
        name = view.resolve_encoder(encoder)
    except Exception:
        name = None
    tiles = view.tiles(name) if name else None
    if tiles is not None:
        out.append(f"tiles({', '.join(_tile_columns(fs, name))}, embedding)")
    elif at is not None:
        out.append(f"no tiles table at version {at} (no tiles were committed yet then)")
    out += [
        f"{n}({', '.join(map(str, t.schema.names if hasattr(t, 'schema') else t.columns))})"
        for n, t in extra.items()
    ]
    return out


def slides(
    store: StoreOpt,
    status: Annotated[str | None, typer.Option(help="Only 'done' or 'failed' slides.")] = None,
    encoder: EncoderOpt = None,
    where: Annotated[
        str | None, typer.Option(help='SQL predicate over slides columns, e.g. "mpp < 0.3".')
    ] = None,
    storage_option: OptionsOpt = None,
    at: VersionOpt = None,
    as_json: JsonOpt = False,
    columns: ColumnsOpt = None,
) -> None:
    """List slides with their status, tile count, MPP and source.

    Example: slidebank query slides --store ./store --status failed --json
    """
    # Most useful first: the table shows the leading columns that fit the terminal.
    shown = [
        "slide_id",
        "status",
        "tile_count",
        "mpp",
        "patient_id",
        "error_type",
        "encoder",
        "config_hash",
        "mpp_source",
        "vendor",
        "created_at",
        "source_uri",
    ]
    with fail_on_slidebank_error():
        fs = _open(store, storage_option, at)
        with query_errors("--where", fs._view().slides().schema.names):
            result = fs.slides(
                status=status, encoder=encoder, where=where, columns=None if as_json else shown
            )
    _print(result, as_json, "slides", columns)


def versions(
    store: StoreOpt,
    runs: Annotated[bool, typer.Option("--runs", help="List ingestion runs instead.")] = False,
    storage_option: OptionsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List store versions with their tags (one per ingestion run), or the runs.

    Example: slidebank query versions --store ./store --runs
    """
    import pyarrow as pa

    with fail_on_slidebank_error():
        fs = _open(store, storage_option, None)
        if runs:
            result = fs.runs().drop_columns(["config_json"])
        else:
            result = pa.Table.from_pylist(
                [
                    {
                        "version": v.version,
                        "timestamp": v.timestamp,
                        "tags": ",".join(v.tags),
                        "rows": v.n_rows,
                    }
                    for v in fs.versions()
                ]
            )
    _print(result, as_json, "runs" if runs else "versions")


def tag(
    name: Annotated[str, typer.Argument(help="Tag name (letters, digits, '.', '-', '_').")],
    store: StoreOpt,
    version: Annotated[
        int | None, typer.Option(help="Store version to tag (default: the latest).")
    ] = None,
    storage_option: OptionsOpt = None,
) -> None:
    """Tag a store version so it survives cleanup and can be read with --at NAME.

    Example: slidebank tag paper-v1 --store ./store && slidebank query slides --store ./store --at paper-v1
    """
    with fail_on_slidebank_error(store):
        fs = _open(store, storage_option, None)
        tagged = fs.tag(name, version)
    tables = ", ".join(f"{t} v{v}" for t, v in tagged.items() if t != "slides")
    typer.echo(
        f"tagged store version {tagged['slides']} as {name!r}"
        + (f" (tiles tables: {tables})" if tables else "")
    )


def register(app: typer.Typer) -> None:
    query = typer.Typer(
        name="query",
        help="Query a feature store: similar tiles, SQL, slides, versions.",
        no_args_is_help=True,
    )
    query.command("similar")(similar)
    query.command("sql")(sql)
    query.command("slides")(slides)
    query.command("versions")(versions)
    app.add_typer(query, name="query")
    app.command("tag")(tag)
