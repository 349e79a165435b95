"""Shared helpers for benchmark scripts: timing, JSON output, tables, a local S3 server."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra.files import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / ".data"


def best_of(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    """(best seconds, items) over ``repeats`` runs: the least-disturbed run on a shared box."""
    best, items = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        items = fn()
        best = min(best, time.perf_counter() - start)
    return best, items


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    atomic_write_json(path, payload)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in columns:
        table.add_column(col, justify="right" if col not in ("case", "reader") else "left")
    for row in rows:
        table.add_row(*[_fmt(row.get(c)) for c in columns])
    Console().print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    return "" if value is None else str(value)


@contextmanager
def moto_s3() -> Iterator[dict[str, Any]]:
    """A local S3 endpoint (moto) and fsspec storage options for it (fake credentials).

    The same launcher the tests use (tests/_support/moto.py), so there is one copy."""
    from tests._support.moto import moto_server, storage_options

    credentials = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with moto_server({**os.environ, **credentials}) as endpoint:
        yield storage_options(endpoint, credentials)
