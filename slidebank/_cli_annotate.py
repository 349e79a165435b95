"""``slidebank slides set``: patient ids and clinical columns onto ingested slides,
without re-encoding.

``slidebank annotate`` is a hidden alias of the same function (the command's first name),
kept so scripts written against it keep working.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from slidebank._cli_common import (
    JsonOpt,
    StorageOpt,
    fail_on_slidebank_error,
    parse_storage_options,
)

__all__ = ["register"]


def set_slides(
    table: Annotated[
        str,
        typer.Argument(
            help="CSV/TSV/Parquet/.xlsx with slide_id (or an ingest manifest's uri), "
            "patient_id and/or clinical columns."
        ),
    ],
    store: Annotated[
        str, typer.Option("--store", envvar="SLIDEBANK_STORE", help="Feature store URI.")
    ],
    clinical: Annotated[
        str,
        typer.Option(
            help="Store table for the other columns: slide_features/NAME, "
            "read by probe, cohort build and train as store:NAME."
        ),
    ] = "clinical",
    storage_option: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set or replace the patient_id of slides already in the store (after a folder
    ingest, say), and keep the table's other columns (grade, stage...) per slide in the
    store: a new store version, no tile re-encoded; cohort, probe and train see the
    patient ids, and read the other columns as the labels table store:clinical.

    Example: slidebank slides set clinical.csv --store slidebank-demo/store

    Example: slidebank probe store:clinical --label grade --store slidebank-demo/store
    """
    from slidebank.annotate_api import annotate_slides

    options = parse_storage_options(storage_option)
    with fail_on_slidebank_error(store):
        report = annotate_slides(table, store, storage_options=options or None, clinical=clinical)
    if as_json:
        typer.echo(json.dumps(report.summary(), indent=2))
        return
    update = report.update
    if update.changed or update.unchanged:
        typer.echo(
            f"patient_id set on {len(update.changed)} slides ({update.rows} rows, store "
            f"version {update.version}), {len(update.unchanged)} already had it; "
            "no tile re-encoded"
        )
    if update.unknown:
        shown = ", ".join(update.unknown[:5]) + (" ..." if len(update.unknown) > 5 else "")
        typer.echo(f"{len(update.unknown)} slides of {table} are not in the store: {shown}")
    if report.clinical_columns:
        typer.echo(
            f"clinical columns stored: {', '.join(report.clinical_columns)} for "
            f"{report.clinical_slides} slides in {report.clinical_table}, no tile re-encoded "
            f"(read them as the labels table store:{clinical})"
        )
    if report.rows_without_value:
        typer.echo(f"{report.rows_without_value} rows without a slide id or patient id skipped")


def register(app: typer.Typer) -> None:
    slides = typer.Typer(
        name="slides",
        no_args_is_help=True,
        help="Slide metadata in the store: patient ids and clinical columns, no re-encoding.",
    )
    slides.command("set")(set_slides)
    app.add_typer(slides, name="slides")
    # The command's first name, hidden from --help: one implementation, two names.
    app.command("annotate", hidden=True)(set_slides)
