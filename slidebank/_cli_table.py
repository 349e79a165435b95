"""Tables for a terminal: whole columns that fit, never every column squeezed to "syn…".

Columns are taken in order while they fit the terminal width at their natural width
(cells capped at ``MAX_CELL`` characters); the rest are named in a footer with how to
see them (``--columns`` or ``--json``, which is always complete).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["fit_columns", "print_table"]

MAX_CELL = 36
_BORDER = 3  # rich's "│ " + " " per column


def cell(value: Any, wide: bool = False) -> str:
    if wide and value is not None:
        return f"[{len(value)} values]"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    text = "" if value is None else str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def fit_columns(widths: Sequence[int], budget: int) -> int:
    """How many leading columns of these widths fit ``budget`` characters (at least 1)."""
    used, count = 1, 0
    for width in widths:
        if used + width + _BORDER > budget and count:
            break
        used += width + _BORDER
        count += 1
    return count


def print_table(
    table: pa.Table,
    as_json: bool,
    title: str,
    *,
    columns: Sequence[str] | None = None,
    width: int | None = None,
) -> None:
    import pyarrow as pa
    from rich.console import Console
    from rich.table import Table

    if columns:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise typer.BadParameter(
                f"no column(s) {', '.join(missing)}; the result has {', '.join(table.column_names)}",
                param_hint="--columns",
            )
        table = table.select(list(columns))
    rows = table.to_pylist()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    console = Console(width=width) if width else Console()
    wide = {f.name for f in table.schema if pa.types.is_fixed_size_list(f.type)}
    names = table.column_names
    text = [[cell(row[c], c in wide) for c in names] for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in text)]) for i, n in enumerate(names)]
    shown = fit_columns(widths, console.width)
    view = Table(title=f"{title} ({len(rows)} rows)")
    for name, w in zip(names[:shown], widths[:shown], strict=True):
        view.add_column(name, no_wrap=True, min_width=min(w, console.width - 4))
    for r in text:
        view.add_row(*r[:shown])
    console.print(view)
    hidden = names[shown:]
    if hidden:
        console.print(
            f"{len(hidden)} more column(s) not shown to fit {console.width} characters: "
            f"{', '.join(hidden)} (choose with --columns, or --json for everything)",
            highlight=False,
            soft_wrap=True,
        )
