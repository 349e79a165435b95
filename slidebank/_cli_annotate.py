"""``slidebank annotate``: patient ids onto ingested slides, without re-encoding."""

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


def annotate(
    table: Annotated[
        str,
        typer.Argument(
            help="CSV/TSV/Parquet with slide_id (or an ingest manifest's uri) and patient_id."
        ),
    ],
    store: Annotated[
        str, typer.Option("--store", envvar="SLIDEBANK_STORE", help="Feature store URI.")
    ],
    storage_option: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set or replace the patient_id of slides already in the store (after a folder
    ingest, say): one new store version, no tile re-encoded; cohort, probe and train see it.

    Example: slidebank annotate clinical.csv --store slidebank-demo/store
    """
    from slidebank.annotate_api import annotate_slides

    options = parse_storage_options(storage_option)
    with fail_on_slidebank_error(store):
        report = annotate_slides(table, store, storage_options=options or None)
    if as_json:
        typer.echo(json.dumps(report.summary(), indent=2))
        return
    update = report.update
    typer.echo(
        f"patient_id set on {len(update.changed)} slides ({update.rows} rows, store "
        f"version {update.version}), {len(update.unchanged)} already had it; "
        "no tile re-encoded"
    )
    if update.unknown:
        shown = ", ".join(update.unknown[:5]) + (" ..." if len(update.unknown) > 5 else "")
        typer.echo(f"{len(update.unknown)} slides of {table} are not in the store: {shown}")
    if report.ignored_columns:
        typer.echo(
            f"columns not stored: {', '.join(report.ignored_columns)} (only patient_id "
            "can be set after ingestion)"
        )
    if report.rows_without_value:
        typer.echo(f"{report.rows_without_value} rows without a slide id or patient id skipped")


def register(app: typer.Typer) -> None:
    app.command("annotate")(annotate)
