"""``slidebank heatmap`` and ``slidebank umap``: pictures of what a model and an encoder see.

An existing ``--out`` is refused (exit 2, naming the file) unless ``--overwrite``.
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
OptionsOpt = Annotated[
    list[str] | None,
    typer.Option("--storage-option", "-s", help="fsspec storage option KEY=VALUE (repeatable)."),
]


def heatmap(
    slide: Annotated[str, typer.Argument(help="Slide id.")],
    store: StoreOpt,
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("heatmap.png"),
    attention: Annotated[
        str | None,
        typer.Option(
            help="Attention run name (as written by `slidebank train` with attention: true)."
        ),
    ] = None,
    values: Annotated[
        str | None,
        typer.Option(
            help="Per-tile values table (.parquet/.csv) with x, y[, slide_id] and --column."
        ),
    ] = None,
    column: Annotated[str | None, typer.Option(help="Column of --values to draw.")] = None,
    cmap: Annotated[str, typer.Option(help="matplotlib colour map.")] = "inferno",
    storage_option: OptionsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Draw attention or per-tile predictions over the slide thumbnail, with a colour bar.

    Example: slidebank heatmap TCGA-A1 --store ./store --attention mil-20261203-ab12 --out a1.png
    """
    from infra.tables import read_table
    from slidebank.pictures_api import heatmap as draw
    from slidebank.probe_api import open_store

    options = parse_storage_options(storage_option)
    with fail_on_slidebank_error(out):
        fs = open_store(store, options)
        table = read_table(values, options) if values else None
        path = draw(
            fs,
            slide,
            out,
            attention=attention,
            values=table,
            column=column,
            cmap=cmap,
            overwrite=overwrite,
        )
    typer.echo(f"wrote {path}")


def umap(
    store: StoreOpt,
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("umap.png"),
    level: Annotated[str, typer.Option(help="slide (mean-pooled) or tile embeddings.")] = "slide",
    labels: Annotated[str | None, typer.Option(help="Labels table to colour by.")] = None,
    color: Annotated[
        str | None, typer.Option(help="Label column to colour by (default: slide).")
    ] = None,
    encoder: Annotated[str | None, typer.Option(help="Encoder id (several in the store).")] = None,
    max_tiles: Annotated[
        int, typer.Option(min=100, help="Tiles sampled for --level tile.")
    ] = 20_000,
    seed: Annotated[int, typer.Option(help="UMAP and sampling seed.")] = 0,
    method: Annotated[
        str,
        typer.Option(
            help="pca (instant), umap (umap-learn; its first call takes tens of seconds) or auto: "
            "PCA below 50 points or without umap-learn, else UMAP."
        ),
    ] = "auto",
    storage_option: OptionsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """A UMAP (or PCA) map of slide or tile embeddings, coloured by a label or by slide.

    Example: slidebank umap --store ./store --labels labels.csv --color msi --method pca --out umap.png
    """
    from slidebank.pictures_api import embedding_map
    from slidebank.probe_api import open_store

    options = parse_storage_options(storage_option)
    with fail_on_slidebank_error(out):
        path = embedding_map(
            open_store(store, options),
            out,
            level=level,
            labels=labels,
            color=color,
            encoder=encoder,
            max_tiles=max_tiles,
            seed=seed,
            method=method,
            storage_options=options,
            overwrite=overwrite,
        )
    typer.echo(f"wrote {path}")


def report(
    run: Annotated[
        Path,
        typer.Argument(
            exists=True,
            file_okay=False,
            help="A run folder: `slidebank train`'s OUT/RUN_ID or `slidebank probe`'s --out.",
        ),
    ],
    screenshot: Annotated[
        Path | None,
        typer.Option(help="Also render the page to this PNG in headless Chromium (on PATH)."),
    ] = None,
) -> None:
    """(Re)write RUN/report.html: one self-contained page (no script, no CDN) with the
    metrics and CIs, the class mapping, the ROC and calibration figures, the top and bottom
    slides (with attention over the tissue for MIL runs) and the config. `probe --out` and
    `train` write it already; this rebuilds it, e.g. for a run made before it existed.

    Example: slidebank report runs/abmil/abmil-20261207T101500-ab12cd --screenshot report.png
    """
    from training.report import screenshot as render
    from training.report import write_report

    with fail_on_slidebank_error(run):
        page = write_report(run)
        typer.echo(f"report: {page}")
        if screenshot is not None:
            typer.echo(f"screenshot: {render(page, screenshot)}")


def register(app: typer.Typer) -> None:
    app.command("heatmap")(heatmap)
    app.command("umap")(umap)
    app.command("report")(report)
