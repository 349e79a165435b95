"""Helpers shared by CLI commands: error reporting and option parsing."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Annotated

import typer

from infra.errors import SlidebankError

__all__ = ["AddressOpt", "JsonOpt", "StorageOpt", "fail_on_slidebank_error", "parse_storage_options"]

# Option aliases shared by every command, so one flag means one thing everywhere.
StorageOpt = Annotated[list[str] | None, typer.Option(
    "--storage-option", "-s",
    help="fsspec storage option KEY=VALUE (repeatable), e.g. -s endpoint_url=http://minio:9000.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
AddressOpt = Annotated[str | None, typer.Option(
    "--address", envvar="RAY_ADDRESS",
    help="A running Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: embedded local Ray).")]


@contextlib.contextmanager
def fail_on_slidebank_error() -> Iterator[None]:
    """Turn slidebank's typed errors into one red line and exit code 2 (no traceback)."""
    try:
        yield
    except SlidebankError as exc:
        typer.secho(f"error: {type(exc).__name__}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc


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
