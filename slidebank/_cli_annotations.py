"""``slidebank annotations``: pathologists' annotations in, tile coverage, maps out.

``import`` stores a QuPath GeoJSON, ASAP/CAMELYON XML or mask file with its slide and
computes every stored tile's coverage per class; ``coverage`` summarises it;
``export`` writes a prediction map as QuPath GeoJSON; ``classify`` trains tile heads;
``burden`` stores each slide's tumour area, fraction and purity from a prediction map.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from slidebank._cli_common import (
    JsonOpt,
    OverwriteOpt,
    StorageOpt,
    fail_on_slidebank_error,
    parse_storage_options,
)

__all__ = ["register"]

StoreOpt = Annotated[
    str, typer.Option("--store", envvar="SLIDEBANK_STORE", help="Feature store URI.")
]
NameOpt = Annotated[
    str, typer.Option("--name", help="Annotation set name (one derived table per set).")
]


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
    file: Annotated[
        Path,
        typer.Argument(
            help="GeoJSON, ASAP XML, PNG/TIFF mask, or OME-Zarr label image (a .zarr folder)."
        ),
    ],
    slide: Annotated[str, typer.Option("--slide", help="The slide id the file annotates.")],
    store: StoreOpt,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="geojson, asap, mask or ome-zarr (default: from the file)."),
    ] = None,
    name: NameOpt = "default",
    klass: Annotated[
        list[str] | None,
        typer.Option("--class", help="Allowed class (repeatable); any other class is an error."),
    ] = None,
    mask_mpp: Annotated[
        float | None,
        typer.Option(
            "--mask-mpp",
            help="Microns per pixel of a PNG/TIFF mask (required; an OME-Zarr "
            "label image states its own).",
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="Mask value and class, VALUE=CLASS (repeatable)."),
    ] = None,
    clip: Annotated[
        bool,
        typer.Option(help="Cut features reaching outside the slide instead of refusing the file."),
    ] = False,
    storage_option: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store an annotation file with its slide and compute each tile's class coverage.

    Example: slidebank annotations import tumour.geojson --slide S01 --store ./store --class tumour
    """
    from features.annotations import ImportOptions, import_annotations

    labels = _labels(label)
    with fail_on_slidebank_error():
        options = ImportOptions(
            fmt=fmt,
            name=name,
            classes=tuple(klass) if klass else None,
            mask_mpp=mask_mpp,
            labels=labels,
            clip=clip,
        )
        report = import_annotations(_store(store, storage_option), slide, file, options)
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
        return
    for repair in report.repairs:
        typer.secho(f"repaired: {repair}", fg=typer.colors.YELLOW, err=True)
    typer.echo(
        f"{report.slide_id}: {report.n_annotations} annotations "
        f"({', '.join(report.classes)}) as set {report.name!r}; coverage of "
        f"{report.n_tiles} tiles"
    )
    for cls in report.classes:
        typer.echo(
            f"  {cls}: {report.tiles_touched.get(cls, 0)} tiles touched, "
            f"{report.tiles_half.get(cls, 0)} at coverage >= 0.5"
        )


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
        rows = coverage_table(
            _store(store, storage_option),
            name,
            slide_ids=slide,
            classes=[region] if region else None,
        ).to_pandas()
    rows["kept"] = rows["coverage"] >= min_coverage
    rows["touched"] = rows["coverage"] > 0
    summary = (
        rows.groupby(["slide_id", "class"])
        .agg(
            tiles=("coverage", "size"),
            touched=("touched", "sum"),
            kept=("kept", "sum"),
            mean_coverage=("coverage", "mean"),
        )
        .reset_index()
    )
    if as_json:
        typer.echo(summary.to_json(orient="records", indent=2))
    else:
        typer.echo(summary.to_string(index=False) if len(summary) else "no coverage rows")


def export(
    out: Annotated[
        Path, typer.Argument(help="The .geojson file, or .zarr folder (OME-Zarr labels), to write.")
    ],
    store: StoreOpt,
    slide: Annotated[str, typer.Option("--slide", help="The slide whose map to export.")],
    predictions: Annotated[
        str, typer.Option(help="Name of the predictions table (printed by classify).")
    ],
    threshold: Annotated[
        float, typer.Option(help="Probability at or above which a tile is inside.")
    ] = 0.5,
    klass: Annotated[
        str, typer.Option("--class", help="Class of the exported contours.")
    ] = "tumour",
    storage_option: StorageOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """A prediction map's contours as QuPath GeoJSON (class and probability measurements),
    or, for a .zarr OUT, the thresholded map as an OME-Zarr label image (labels/<name>).

    Example: slidebank annotations export S01-map.geojson --store ./store --slide S01 --predictions tiles-tumour-linear-1a2b3c4d5e
    """
    from features.annotations.export import export_prediction_geojson
    from features.annotations.omezarr_export import export_prediction_labels

    with fail_on_slidebank_error(out):
        if out.suffix.lower() == ".zarr":
            path = export_prediction_labels(
                _store(store, storage_option),
                slide,
                predictions,
                out,
                threshold=threshold,
                class_name=klass,
                overwrite=overwrite,
            )
        else:
            path = str(
                export_prediction_geojson(
                    _store(store, storage_option),
                    slide,
                    predictions,
                    out,
                    threshold=threshold,
                    class_name=klass,
                    overwrite=overwrite,
                )
            )
    typer.echo(f"wrote {path}")


def classify(
    store: StoreOpt,
    positive: Annotated[
        str,
        typer.Option(
            "--class", help="The positive class (tile label: its coverage >= --min-coverage)."
        ),
    ],
    name: NameOpt = "default",
    min_coverage: Annotated[float, typer.Option(help="Coverage making a tile positive.")] = 0.5,
    region: Annotated[
        str | None, typer.Option(help="Only tiles of this class (coverage >= --region-coverage).")
    ] = None,
    region_coverage: Annotated[float, typer.Option(help="Threshold for --region.")] = 0.5,
    head: Annotated[
        str,
        typer.Option(
            help="linear or mlp (with --context-hops), or a spatial model trained on tile "
            "labels: tile_gnn, region_transformer."
        ),
    ] = "linear",
    context_hops: Annotated[
        int,
        typer.Option(help="Add the mean embedding of neighbours within this many tiles (0: none)."),
    ] = 0,
    folds: Annotated[int, typer.Option(help="Patient-level folds.")] = 5,
    seed: int = 0,
    encoder: Annotated[str | None, typer.Option(help="Encoder id (several in the store).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for metrics.json and PNG maps.")] = None,
    storage_option: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tile classifier from annotation coverage: patient-level CV, tile AUROC with CI,
    Dice/IoU of the map; probabilities go into the store's predictions table.

    Example: slidebank annotations classify --store ./store --class tumour --head mlp --out tiles_run/
    """
    from features.annotations import RegionFilter
    from training.tiles import TileClassifierConfig, TileTask, run_tile_classifier

    with fail_on_slidebank_error(out):
        keep = RegionFilter(region, region_coverage, name) if region else None
        task = TileTask(positive, min_coverage, name, encoder, keep)
        config = TileClassifierConfig(
            task, head=head, folds=folds, seed=seed, context_hops=context_hops
        )
        result = run_tile_classifier(_store(store, storage_option), config, out_dir=out)
    summary = result.summary()
    if as_json:
        typer.echo(
            json.dumps(
                {k: v for k, v in summary.items() if k != "per_slide"}, indent=2, default=str
            )
        )
        return
    auc = result.metrics["auroc"]
    typer.echo(
        f"{result.name}: {summary['n_tiles']} tiles ({summary['n_positive']} {positive}) "
        f"on {summary['n_slides']} slides"
    )
    typer.echo(
        f"  tile AUROC {auc['value']:.3f} (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})"
        f", map Dice {summary['dice_mean']:.3f}, IoU {summary['iou_mean']:.3f}"
    )
    typer.echo(f"  predictions: {result.outputs.get('predictions')}")


def burden(
    store: StoreOpt,
    predictions: Annotated[
        str, typer.Option(help="Name of the predictions table (printed by classify).")
    ],
    threshold: Annotated[
        float, typer.Option(help="Probability at or above which a tile is tumour.")
    ] = 0.5,
    nuclei_encoder: Annotated[
        str, typer.Option(help="Encoder whose tiles carry nuclei counts ('none': no purity).")
    ] = "handcrafted-he-v1",
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Table slide_features/<name> (default: the predictions' name)."
        ),
    ] = None,
    slide: Annotated[list[str] | None, typer.Option("--slide", help="Only these slides.")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Also write the table (.csv/.tsv/.parquet) for cohort build --labels, probe "
            "and query sql --table."
        ),
    ] = None,
    storage_option: StorageOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Per-slide tumour area (mm²), tumour fraction of the tissue and nuclear purity
    (tumour nuclei over all nuclei, from the handcrafted encoder's nuclei counts), stored
    as slide-level features (slide_features/<name>).

    Example: slidebank annotations burden --store ./store --predictions tiles-tumour-linear-1a2b3c4d5e --out burden.csv
    """
    from training.tiles.burden import BurdenConfig, tumour_burden, write_table_file

    with fail_on_slidebank_error(out):
        if out is not None:
            from infra.files import check_output

            check_output(out, overwrite=overwrite)
        config = BurdenConfig(
            predictions, threshold, None if nuclei_encoder.lower() == "none" else nuclei_encoder
        )
        frame = tumour_burden(_store(store, storage_option), config, slide_ids=slide, name=name)
        if out is not None:
            write_table_file(frame, out, overwrite=overwrite)
    if as_json:
        typer.echo(frame.to_json(orient="records", indent=2))
        return
    shown = ["slide_id", "n_tiles", "tumour_area_mm2", "tumour_fraction", "purity"]
    typer.echo(frame[shown].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo(
        f"stored as slide_features/{name or predictions}"
        + (f"; wrote {out}" if out is not None else "")
    )


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="annotations",
        no_args_is_help=True,
        help="Annotations in (GeoJSON, ASAP XML, masks), tile coverage, "
        "tile classifiers and prediction maps out.",
    )
    group.command("import")(import_)
    group.command("coverage")(coverage)
    group.command("classify")(classify)
    group.command("export")(export)
    group.command("burden")(burden)
    app.add_typer(group, name="annotations")
