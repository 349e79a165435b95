"""``slidebank export``: the store's committed rows as AnnData, SpatialData, CLAM/TRIDENT h5
or Parquet.

Existing files are refused (exit 2, naming the file) unless ``--overwrite``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from slidebank._cli_common import OverwriteOpt, fail_on_slidebank_error, parse_storage_options

__all__ = ["register"]

StoreOpt = Annotated[
    str, typer.Option("--store", envvar="SLIDEBANK_STORE", help="Feature store URI.")
]
EncoderOpt = Annotated[str | None, typer.Option(help="Encoder id (several in the store).")]
SlidesOpt = Annotated[
    list[str] | None, typer.Option("--slide", help="Only these slides (repeatable).")
]
OptionsOpt = Annotated[
    list[str] | None,
    typer.Option("--storage-option", "-s", help="fsspec storage option KEY=VALUE (repeatable)."),
]


def _store(uri: str, options: list[str] | None):
    from slidebank.probe_api import open_store

    return open_store(uri, parse_storage_options(options))


def anndata(
    out: Annotated[Path, typer.Argument(help="The .h5ad file to write.")],
    store: StoreOpt,
    level: Annotated[
        str, typer.Option(help="tile (obs per tile, obsm['spatial']) or slide.")
    ] = "tile",
    encoder: EncoderOpt = None,
    slide: SlidesOpt = None,
    storage_option: OptionsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Tile (or slide) embeddings as AnnData for scanpy/squidpy.

    Example: slidebank export anndata tiles.h5ad --store ./store --slide TCGA-A1
    """
    from features.store.export import to_anndata

    with fail_on_slidebank_error(out):
        path = to_anndata(
            _store(store, storage_option),
            out,
            encoder=encoder,
            slide_ids=slide,
            level=level,
            overwrite=overwrite,
        )
    typer.echo(f"wrote {path}")


def spatialdata(
    out: Annotated[Path, typer.Argument(help="The SpatialData .zarr folder to write.")],
    store: StoreOpt,
    encoder: EncoderOpt = None,
    slide: SlidesOpt = None,
    storage_option: OptionsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Tiles as SpatialData (scverse): per slide the thumbnail and the tile circles in
    level-0 pixels, and the table 'tiles' (embeddings, obs as in 'export anndata'), for
    spatialdata-plot, squidpy and napari-spatialdata. Needs: pip install spatialdata.

    Example: slidebank export spatialdata tiles.zarr --store ./store
    """
    from features.store.export import to_spatialdata

    with fail_on_slidebank_error(out):
        path = to_spatialdata(
            _store(store, storage_option),
            out,
            encoder=encoder,
            slide_ids=slide,
            overwrite=overwrite,
        )
    typer.echo(f"wrote {path}")


def h5(
    out: Annotated[Path, typer.Argument(help="Folder for one <slide_id>.h5 per slide.")],
    store: StoreOpt,
    encoder: EncoderOpt = None,
    slide: SlidesOpt = None,
    storage_option: OptionsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """One CLAM/TRIDENT-style h5 per slide (datasets ``features`` and ``coords``).

    Example: slidebank export h5 features_h5/ --store ./store
    """
    from features.store.export import to_h5_per_slide

    with fail_on_slidebank_error(out):
        paths = to_h5_per_slide(
            _store(store, storage_option),
            out,
            encoder=encoder,
            slide_ids=slide,
            overwrite=overwrite,
        )
    typer.echo(f"wrote {len(paths)} files to {out}")


def parquet(
    out: Annotated[Path, typer.Argument(help="Folder for slides/tiles/slide_embeddings.parquet.")],
    store: StoreOpt,
    encoder: EncoderOpt = None,
    storage_option: OptionsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Committed rows as Parquet, e.g. for the DuckDB CLI offline:
    duckdb -c "SELECT slide_id, count(*) FROM 'out/tiles.parquet' GROUP BY 1".
    views.sql defines views with FLOAT[D] embeddings (array_cosine_similarity, no cast):
    duckdb -init out/views.sql.

    Example: slidebank export parquet store-parquet/ --store ./store
    """
    from features.store.export import to_parquet

    with fail_on_slidebank_error(out):
        paths = to_parquet(_store(store, storage_option), out, encoder=encoder, overwrite=overwrite)
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def register(app: typer.Typer) -> None:
    export = typer.Typer(
        name="export",
        no_args_is_help=True,
        help="Export committed rows: AnnData, SpatialData, CLAM/TRIDENT h5, Parquet.",
    )
    export.command("anndata")(anndata)
    export.command("spatialdata")(spatialdata)
    export.command("h5")(h5)
    export.command("parquet")(parquet)
    app.add_typer(export, name="export")
