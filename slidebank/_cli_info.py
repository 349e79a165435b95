"""``slidebank info`` and ``slidebank sample``: look at one slide; write a synthetic one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from slidebank._cli_common import (
    JsonOpt,
    MppOverrideOpt,
    ReaderOpt,
    SlideUriArg,
    StorageOpt,
    StrategyOpt,
    fail_on_slidebank_error,
    parse_storage_options,
)

__all__ = ["register"]


def info(
    slide_uri: SlideUriArg,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the thumbnail PNG to OUT/<slide_id>/thumbnail.png (default: nothing written)."
        ),
    ] = None,
    mpp: MppOverrideOpt = None,
    reader: ReaderOpt = None,
    strategy: StrategyOpt = "auto",
    thumbnail_mpp: Annotated[float, typer.Option(help="Thumbnail resolution in µm/px.")] = 8.0,
    storage_option: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a slide's levels, dimensions, MPP (and its source), vendor and objective power;
    with --out, also write a thumbnail PNG.

    Example: slidebank info ../shared/data/cmu_small_region.svs --json --out slidebank-out
    """
    from slidebank.api import describe_slide

    with fail_on_slidebank_error():
        report = describe_slide(
            slide_uri,
            out_dir=out,
            mpp=mpp,
            reader=reader,
            strategy=strategy,
            thumbnail_mpp=thumbnail_mpp,
            storage_options=parse_storage_options(storage_option),
        )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_table(report)


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(show_header=False, title=f"slide {report['slide_id']}")
    for key in (
        "uri",
        "reader",
        "access",
        "vendor",
        "scanner_model",
        "objective_power",
        "mpp",
        "mpp_source",
        "tile_size",
        "size_bytes",
        "thumbnail",
    ):
        value = report.get(key)
        summary.add_row(
            key,
            "not written (--out DIR writes one)"
            if key == "thumbnail" and value is None
            else str(value),
        )
    console.print(summary)
    levels = Table(title="levels")
    for col in ("level", "width", "height", "downsample", "µm/px"):
        levels.add_column(col, justify="right")
    for lv in report["levels"]:
        levels.add_row(
            str(lv["level"]),
            str(lv["width"]),
            str(lv["height"]),
            f"{lv['downsample']:.3f}",
            f"{lv['mpp']:.4f}" if lv["mpp"] else "?",
        )
    console.print(levels)


def sample(
    path: Annotated[Path, typer.Argument(help="Where to write the slide (.svs or .tif).")],
    width: Annotated[int, typer.Option(help="Level-0 width in pixels.")] = 4096,
    height: Annotated[int, typer.Option(help="Level-0 height in pixels.")] = 3072,
    mpp: Annotated[float, typer.Option(help="Resolution written into the metadata, µm/px.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same slide).")] = 0,
    pen_marks: Annotated[bool, typer.Option(help="Draw pen marks on the glass.")] = True,
) -> None:
    """Write a synthetic H&E-like pyramidal slide (SVS style for .svs, generic TIFF otherwise).

    Example: slidebank sample slidebank-out/sample.svs --width 8192 --height 6144
    """
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    style: Literal["svs", "tiff"] = "svs" if path.suffix.lower() == ".svs" else "tiff"
    path.parent.mkdir(parents=True, exist_ok=True)
    with fail_on_slidebank_error():
        slide = write_synthetic_slide(
            path,
            SyntheticSlideSpec(
                width=width, height=height, mpp=mpp, seed=seed, style=style, pen_marks=pen_marks
            ),
        )
    typer.echo(
        f"wrote {slide.path} ({width}x{height} px at {mpp} µm/px, "
        f"levels {[d for d in slide.level_dimensions]}, tissue {slide.tissue_fraction:.1%})"
    )


def register(app: typer.Typer) -> None:
    app.command("info")(info)
    app.command("sample")(sample)
