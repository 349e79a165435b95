"""The ``slidebank`` command line: a thin typer layer over the facade.

Each command lives in its own ``_cli_*.py`` module exposing ``register(app)``; this
module only assembles them, so adding a command never touches another's code.
"""

from __future__ import annotations

import gc
import importlib
import logging
import warnings
from typing import Any

import typer

from infra.arrays import hide_cupy_without_driver
from infra.logs import install_redaction

__all__ = ["app", "main"]

_COMMAND_MODULES = (
    "slidebank._cli_info",
    "slidebank._cli_tissue",
    "slidebank._cli_encoders",
    "slidebank._cli_query",
    "slidebank._cli_cohort",
    "slidebank._cli_ingest",
    "slidebank._cli_train",
    "slidebank._cli_cluster",
    # data-science commands (issue 18)
    "slidebank._cli_probe",
    "slidebank._cli_export",
    "slidebank._cli_pictures",
    # spatial context: tissue modules (issue 15)
    "slidebank._cli_spatial",
    # patient ids after ingestion (issue 30)
    "slidebank._cli_annotate",
    # tile-level truth: annotations, coverage, tile classifiers (issue 31)
    "slidebank._cli_annotations",
    # precomputed embeddings in (issue 26)
    "slidebank._cli_import",
)


class _Program(typer.Typer):
    """The command line run as a program (the ``slidebank`` script, ``app()``).

    In standalone mode every command ends in ``SystemExit`` and the interpreter exits next.
    Its last garbage collections would walk every object of the ~1,500 modules a command
    imports (Lance, pyarrow, pandas, zarr, SciPy): 0.5-1 s of a 4-5 s one-slide ingest on
    2 cores, after the summary is printed. Freezing those objects skips that walk; atexit
    handlers, thread joins, file closes by reference counting and Ray's shutdown all still
    run, and Python never promised finalizers of objects alive at exit. A caller that keeps
    the process (``standalone_mode=False``, ``CliRunner``) is left alone.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit:
            gc.freeze()
            raise


app = _Program(
    name="slidebank",
    help="Whole-slide images into a queryable feature store, and slide-level models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    install_redaction()
    hide_cupy_without_driver()
    # Ray starts its daemons with fork+exec after Lance is loaded; no Lance state is used in
    # those children, so Lance's fork-safety warning is noise to a command-line user.
    warnings.filterwarnings("ignore", message="lance is not fork-safe", category=UserWarning)


for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    app()
