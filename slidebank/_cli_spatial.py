"""``slidebank spatial fit-modules``: tissue modules fitted on training folds, applied to slides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from slidebank._cli_common import fail_on_slidebank_error

__all__ = ["register"]


def fit_modules(
    store: Annotated[str, typer.Option(help="Feature store (path or s3://...).")],
    cohort: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="Cohort table with a fold column.")
    ],
    train_folds: Annotated[
        list[int], typer.Option("--train-fold", help="Fold(s) to fit on (repeatable).")
    ],
    k: Annotated[int, typer.Option(min=2, help="Number of tissue modules.")] = 8,
    encoder: Annotated[
        str | None, typer.Option(help="Encoder whose embeddings are clustered.")
    ] = None,
    smooth: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="UTAG neighbour smoothing weight.")
    ] = 0.0,
    apply: Annotated[bool, typer.Option(help="Write every cohort slide's module map.")] = True,
    png_dir: Annotated[Path | None, typer.Option(help="Folder for module-map PNGs.")] = None,
) -> None:
    """Fit K tissue modules on the training folds only, store the codebook, map every slide.

    Example: slidebank spatial fit-modules --store ./store --cohort cohort.parquet --train-fold 0 --train-fold 1 --train-fold 2 --k 8 --png-dir maps
    """
    from infra.tables import read_table
    from training.spatial.api import fit_and_apply_modules

    with fail_on_slidebank_error(store):  # the codebook and module maps go into the store
        table = read_table(str(cohort))
        summary = fit_and_apply_modules(
            store,
            table,
            train_folds=train_folds,
            k=k,
            encoder=encoder,
            smooth=smooth,
            apply=apply,
            png_dir=png_dir,
        )
    typer.echo(json.dumps(summary, indent=2))


def register(app: typer.Typer) -> None:
    spatial = typer.Typer(
        help="Spatial context: tissue modules, module maps.", no_args_is_help=True
    )
    spatial.command("fit-modules")(fit_modules)
    app.add_typer(spatial, name="spatial")
