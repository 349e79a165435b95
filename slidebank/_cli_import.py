"""``slidebank import h5``: precomputed tile embeddings (CLAM/TRIDENT ``<slide>.h5``) into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from slidebank._cli_common import StorageOpt, fail_on_slidebank_error, parse_storage_options

__all__ = ["register"]


def h5(
    folder: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="Folder of <slide_id>.h5 files (features, coords)."
        ),
    ],
    store: Annotated[
        str,
        typer.Option(
            "--store", envvar="SLIDEBANK_STORE", help="Feature store URI (made when none is there)."
        ),
    ],
    mpp: Annotated[
        float, typer.Option(help="µm per pixel the tiles were read at (e.g. 0.5 for 20x).")
    ],
    tile_size: Annotated[int, typer.Option(help="Tile side in pixels at --mpp (e.g. 256).")],
    encoder: Annotated[
        str, typer.Option(help="Encoder id to store the embeddings under (e.g. uni-v1).")
    ],
    slide_mpp: Annotated[
        float | None,
        typer.Option(help="The slides' level-0 µm per pixel, the unit of coords (default: --mpp)."),
    ] = None,
    storage_option: StorageOpt = None,
) -> None:
    """Import precomputed tile embeddings: one <slide_id>.h5 per slide with datasets
    `features` (N, D) and `coords` (N, 2, level-0 x, y of each tile's top-left corner), as
    CLAM, TRIDENT and `slidebank export h5` write them.

    --mpp and --tile-size are required: the files do not say reliably, and slidebank
    never guesses a scale. A bad file is reported (exit 1) and the others are imported;
    slide ids come from the file names. Patient ids: `slidebank slides set`.

    Example: slidebank import h5 trident_out/features_uni_v1/ --store ./store --mpp 0.5 --tile-size 256 --encoder uni-v1
    """
    from features.store import FeatureStore
    from features.store.import_h5 import H5ImportConfig, import_h5

    with fail_on_slidebank_error(store):
        config = H5ImportConfig(mpp=mpp, tile_size=tile_size, encoder=encoder, slide_mpp=slide_mpp)
        paths = sorted(folder.glob("*.h5"))
        if not paths:
            typer.secho(f"error: no .h5 files in {folder}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2)
        opened = FeatureStore.open(store, parse_storage_options(storage_option), create=True)
        result = import_h5(opened, paths, config)
    typer.echo(
        f"imported {len(result.imported)} slide(s), {result.tiles} tiles, into {store} "
        f"as encoder {encoder}"
    )
    for reason in result.failed.values():
        typer.secho(f"  not imported: {reason}", fg=typer.colors.RED, err=True)
    if result.failed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="import", no_args_is_help=True, help="Import precomputed embeddings: CLAM/TRIDENT h5."
    )
    group.command("h5")(h5)
    app.add_typer(group, name="import")
