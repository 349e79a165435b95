"""``slidebank annotations``: pathologists' annotations in, tile coverage, maps out.

``import`` stores a QuPath GeoJSON, ASAP/CAMELYON XML or mask file with its slide and
computes every stored tile's coverage per class; ``coverage`` summarises it;
``export`` writes a prediction map as QuPath GeoJSON; ``classify`` trains tile heads.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from slidebank._cli_common import (
    JsonOpt,
    StorageOpt,
    fail_on_slidebank_error,
    parse_storage_options,
)

__all__ = ["register"]

StoreOpt = Annotated[str, typer.Option("--store", envvar="SLIDEBANK_STORE",
                                       help="Feature store URI.")]
NameOpt = Annotated[str, typer.Option("--name", help="Annotation set name (one derived "
                                                     "table per set).")]


def _store(uri: str, options: list[str] | None):
    from slidebank.probe_api import open_store

    return open_store(uri, parse_storage_options(options))


def _labels(pairs: list[str] | None) -> dict[int, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        value, sep, name = pair.partition("=")
        if not sep or not name or not value.strip().isdigit():
            raise typer.BadParameter(f"--label must be VALUE=CLASS (e.g. 1=tumour), got {pair!r}")
        out[int(value)] = name
    return out


def import_(
    file: Annotated[Path, typer.Argument(help="GeoJSON, ASAP XML, or PNG/TIFF mask.")],
    slide: Annotated[str, typer.Option("--slide", help="The slide id the file annotates.")],
    store: StoreOpt,
    fmt: Annotated[str | None, typer.Option("--format", help="geojson, asap or mask "
                                                             "(default: from the file).")] = None,
    name: NameOpt = "default",
    klass: Annotated[list[str] | None, typer.Option(
        "--class", help="Allowed class (repeatable); any other class is an error.")] = None,
    mask_mpp: Annotated[float | None, typer.Option(
        "--mask-mpp", help="Microns per pixel of a mask (required for masks).")] = None,
    label: Annotated[list[str] | None, typer.Option(
        "--label", help="Mask value and class, VALUE=CLASS (repeatable).")] = None,
    clip: Annotated[bool, typer.Option(help="Cut features reaching outside the slide "
                                            "instead of refusing the file.")] = False,
    storage_option: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store an annotation file with its slide and compute each tile's class coverage.

    Example: slidebank annotations import tumour.geojson --slide S01 --store ./store --class tumour
    """
    from features.annotations import ImportOptions, import_annotations

    labels = _labels(label)
    with fail_on_slidebank_error():
        options = ImportOptions(fmt=fmt, name=name, classes=tuple(klass) if klass else None,
                                mask_mpp=mask_mpp, labels=labels, clip=clip)
        report = import_annotations(_store(store, storage_option), slide, file, options)
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
        return
    for repair in report.repairs:
        typer.secho(f"repaired: {repair}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{report.slide_id}: {report.n_annotations} annotations "
               f"({', '.join(report.classes)}) as set {report.name!r}; coverage of "
               f"{report.n_tiles} tiles")
    for cls in report.classes:
        typer.echo(f"  {cls}: {report.tiles_touched.get(cls, 0)} tiles touched, "
                   f"{report.tiles_half.get(cls, 0)} at coverage >= 0.5")


def coverage(
    store: StoreOpt,
    name: NameOpt = "default",
    slide: Annotated[list[str] | None, typer.Option("--slide", help="Only these slides.")] = None,
    region: Annotated[str | None, typer.Option(help="Only tiles of this class...")] = None,
    min_coverage: Annotated[float, typer.Option(help="...with at least this coverage.")] = 0.5,
    storage_option: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per slide and class: tiles touched and tiles at or above --min-coverage.

    Example: slidebank annotations coverage --store ./store --region tumour --min-coverage 0.5
    """
    from features.annotations import coverage_table

    with fail_on_slidebank_error():
        rows = coverage_table(_store(store, storage_option), name, slide_ids=slide,
                              classes=[region] if region else None).to_pandas()
    rows["kept"] = rows["coverage"] >= min_coverage
    rows["touched"] = rows["coverage"] > 0
    summary = rows.groupby(["slide_id", "class"]).agg(
        tiles=("coverage", "size"), touched=("touched", "sum"), kept=("kept", "sum"),
        mean_coverage=("coverage", "mean")).reset_index()
    if as_json:
        typer.echo(summary.to_json(orient="records", indent=2))
    else:
        typer.echo(summary.to_string(index=False) if len(summary) else "no coverage rows")


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="annotations", no_args_is_help=True,
                        help="Annotations in (GeoJSON, ASAP XML, masks), tile coverage, "
                             "tile classifiers and prediction maps out.")
    group.command("import")(import_)
    group.command("coverage")(coverage)
    app.add_typer(group, name="annotations")
