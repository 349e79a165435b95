"""``slidebank query``: similar tiles, SQL, slides and versions of a feature store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from slidebank._cli_common import fail_on_slidebank_error, parse_storage_options

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
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _open(uri: str, options: list[str] | None, at: str | None) -> FeatureStore:
    from features.store import FeatureStore

    version: int | str | None = int(at) if at is not None and at.isdigit() else at
    return FeatureStore.open(uri, parse_storage_options(options), create=False, version=version)


def _print(table: pa.Table, as_json: bool, title: str) -> None:
    import pyarrow as pa

    rows = table.to_pylist()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    view = Table(title=f"{title} ({len(rows)} rows)")
    # Embedding vectors are long; a table shows their width, --json shows values.
    wide = {f.name for f in table.schema if pa.types.is_fixed_size_list(f.type)}
    for name in table.column_names:
        view.add_column(name)
    for row in rows:
        view.add_row(*(_cell(row[c], c in wide) for c in table.column_names))
    Console().print(view)


def _cell(value: Any, wide: bool) -> str:
    if wide and value is not None:
        return f"[{len(value)} values]"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
    storage_option: OptionsOpt = None,
    at: VersionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tiles most similar to a tile (--slide --x --y) or to a vector (--vector-file).

    Example: slidebank query similar --store s3://lab/cohort --slide TCGA-A1 --x 4096 --y 2048 -k 20
    """
    import numpy as np

    tile_given = [v is not None for v in (slide, x, y)]
    if not (all(tile_given) and vector_file is None) and not (
        vector_file is not None and not any(tile_given)
    ):
        raise typer.BadParameter("give either --slide, --x and --y, or --vector-file")
    with fail_on_slidebank_error():
        fs = _open(store, storage_option, at)
        if slide is not None and x is not None and y is not None:
            result = fs.search_by_tile(
                slide,
                x,
                y,
                k=k,
                encoder=encoder,
                exclude_same_slide=not same_slide,
                slide_ids=cohort,
            )
        else:
            vector = np.load(str(vector_file), allow_pickle=False)
            result = fs.search(vector, k=k, encoder=encoder, slide_ids=cohort)
    _print(result, as_json, "similar tiles")


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
) -> None:
    """Run SQL over the store; join your own tables (omics, labels) by slide_id.

    Example: slidebank query sql --store ./store --table omics=expr.parquet
    "SELECT o.gene_x, count(*) FROM tiles t JOIN omics o USING (slide_id) GROUP BY 1"
    """
    from features.store.sql import read_table_file

    options = parse_storage_options(storage_option)
    extra = {}
    for pair in table or []:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"--table must be NAME=PATH, got {pair!r}")
        extra[name] = path
    with fail_on_slidebank_error():
        fs = _open(store, storage_option, at)
        loaded = {name: read_table_file(path, options) for name, path in extra.items()}
        result = fs.sql(query, encoder=encoder, tables=loaded)
    _print(result, as_json, "query")


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
) -> None:
    """List slides with their status, tile count, MPP and source.

    Example: slidebank query slides --store ./store --status failed --json
    """
    columns = [
        "slide_id",
        "encoder",
        "config_hash",
        "status",
        "tile_count",
        "mpp",
        "mpp_source",
        "vendor",
        "error_type",
        "created_at",
    ]
    with fail_on_slidebank_error():
        fs = _open(store, storage_option, at)
        result = fs.slides(status=status, encoder=encoder, where=where, columns=columns)
    _print(result, as_json, "slides")


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
