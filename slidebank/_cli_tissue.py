"""``slidebank tissue``: tissue mask, tile plan and a picture to check them by."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from slidebank._cli_common import (
    MppOverrideOpt,
    OverwriteOpt,
    ReaderOpt,
    SlideUriArg,
    StorageOpt,
    StrategyOpt,
    fail_on_slidebank_error,
    parse_storage_options,
)

__all__ = ["register"]


def tissue(
    slide_uri: SlideUriArg,
    out: Annotated[Path, typer.Option(help="Directory; files go to OUT/<slide_id>/.")] = Path(
        "slidebank-out"
    ),
    mpp: MppOverrideOpt = None,
    reader: ReaderOpt = None,
    strategy: StrategyOpt = "auto",
    thumbnail_mpp: Annotated[float, typer.Option(min=0.1, help="Mask resolution, µm/px.")] = 8.0,
    target_mpp: Annotated[float, typer.Option(min=0.05, help="Tile resolution, µm/px.")] = 0.5,
    tile_size: Annotated[int, typer.Option(min=8, max=8192, help="Tile side in pixels.")] = 256,
    overlap: Annotated[
        float, typer.Option(min=0.0, max=0.95, help="Fraction shared by neighbouring tiles.")
    ] = 0.0,
    min_tissue: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Keep tiles at least this much tissue.")
    ] = 0.5,
    device: Annotated[
        Literal["auto", "cpu", "cuda"], typer.Option(help="Array device for the mask.")
    ] = "auto",
    storage_option: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Detect tissue (pen marks and scanner artifacts removed), plan tiles, and write
    overlay.png, tissue.geojson (QuPath annotations), tiles.parquet and summary.json.
    Files already in OUT/<slide_id>/ are refused before the slide is read, unless --overwrite.

    Example: slidebank tissue ../shared/data/cmu_small_region.svs --out slidebank-out
    """
    from ingest.tiling import TilingConfig
    from ingest.tiling.report import tissue_report
    from ingest.tissue import TissueConfig

    with fail_on_slidebank_error(out):
        summary = tissue_report(
            slide_uri,
            out,
            tissue_config=TissueConfig(thumbnail_mpp=thumbnail_mpp),
            tiling_config=TilingConfig(
                tile_size=tile_size,
                target_mpp=target_mpp,
                overlap=overlap,
                min_tissue_fraction=min_tissue,
            ),
            mpp=mpp,
            reader=reader,
            strategy=strategy,
            device=device,
            storage_options=parse_storage_options(storage_option),
            overwrite=overwrite,
        )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    t = summary["tissue"]
    typer.echo(
        f"{summary['slide_id']}: {summary['status']}, tissue {t['tissue_fraction']:.1%} "
        f"({t['tissue_area_mm2']:.2f} mm²), {summary['tile_count']} tiles of {tile_size} px "
        f"at {target_mpp:g} µm/px; inks {', '.join(t['inks']) or 'none'}\n"
        f"wrote {Path(summary['files']['overlay']).parent}/"
        "{overlay.png, tissue.geojson, tiles.parquet, summary.json}"
    )


def register(app: typer.Typer) -> None:
    app.command("tissue")(tissue)
