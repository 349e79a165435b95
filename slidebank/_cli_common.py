"""Helpers shared by CLI commands: error reporting and option parsing."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Annotated, Literal, NoReturn

import typer

from infra.errors import SlidebankError
from infra.fs_errors import write_error

__all__ = [
    "AddressOpt",
    "JsonOpt",
    "MppOverrideOpt",
    "OverwriteOpt",
    "ReaderOpt",
    "SlideUriArg",
    "StorageOpt",
    "StrategyOpt",
    "fail_on_slidebank_error",
    "parse_storage_options",
]

# Option aliases shared by every command, so one flag means one thing everywhere.
StorageOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        "-s",
        help="fsspec storage option KEY=VALUE (repeatable), e.g. -s endpoint_url=http://minio:9000.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="RAY_ADDRESS",
        help="A running Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: embedded local Ray).",
    ),
]
MppOverrideOpt = Annotated[
    float | None, typer.Option(help="MPP override in µm/px (manifest value).")
]
ReaderOpt = Annotated[
    str | None, typer.Option(help="Force a backend: cucim, openslide, tiffslide.")
]
StrategyOpt = Annotated[
    Literal["auto", "stream", "stage"],
    typer.Option(help="Remote access: stream byte ranges, stage to local scratch, or auto."),
]
SlideUriArg = Annotated[str, typer.Argument(help="Path or URI: slide.svs, file://, s3://, gs://.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Replace output files that exist already (default: refuse, exit 2)."
    ),
]


@contextlib.contextmanager
def fail_on_slidebank_error(target: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Turn slidebank's typed errors into one red line and exit code 2 (no traceback).

    So are a full disk, a read-only file system and a file where a folder must be, from
    any layer (Lance, h5py, a Ray worker): ``target`` (the store or output being written)
    names the place when the error itself does not.
    """
    try:
        yield
    except SlidebankError as exc:
        _fail(exc)
    except Exception as exc:
        typed = write_error(exc, target)
        if typed is None:
            raise
        _fail(typed, exc)


def _fail(exc: SlidebankError, cause: BaseException | None = None) -> NoReturn:
    typer.secho(f"error: {type(exc).__name__}: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2) from (cause or exc)


def parse_storage_options(pairs: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs to a dict; values parsed as JSON when they are JSON."""
    options: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"storage option must be KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options
