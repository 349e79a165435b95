"""``slidebank encoders``: list the patch encoders and whether their weights are available."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from slidebank._cli_common import fail_on_slidebank_error

__all__ = ["register"]

_STATUS_STYLE = {
    "built-in": "green",
    "local file": "green",
    "hub cache": "green",
    "downloadable": "yellow",
    "needs weights": "red",
}


def _rows() -> list[dict[str, Any]]:
    from features.encoders import list_encoders, weights_status

    rows = []
    for spec in list_encoders():
        weights = spec.weights
        rows.append(
            {
                "name": spec.name,
                "family": spec.family,
                "dim": spec.embed_dim,
                "input_size": spec.input_size,
                "pooling": spec.pooling,
                "weights": weights_status(spec),
                "gated": bool(weights and weights.gated),
                "hub_repo": weights.hub_repo if weights else None,
                "env_var": None if spec.is_builtin else spec.env_var,
                "description": spec.description,
            }
        )
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="slidebank patch encoders", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True)
    table.add_column("dim", justify="right", no_wrap=True)
    table.add_column("input", justify="right", no_wrap=True)
    table.add_column("weights", no_wrap=True)
    table.add_column("hub repository", overflow="fold")
    for row in rows:
        status = row["weights"]
        hub = row["hub_repo"] or "-"
        table.add_row(
            row["name"],
            str(row["dim"]),
            f"{row['input_size']}px" if row["pooling"] != "handcrafted" else "any",
            f"[{_STATUS_STYLE[status]}]{status}[/]",
            f"{hub} *" if row["gated"] else hub,
        )
    console = Console()
    console.print(table)
    console.print(
        "* gated: request access on the hub, then pass --weights FILE, set "
        "SLIDEBANK_WEIGHTS_<NAME> (names in --json) or SLIDEBANK_WEIGHTS_DIR, or log in to "
        "the hub with HF_HUB_OFFLINE unset. Any timm architecture also works as "
        "[bold]timm:<name>[/] (e.g. timm:resnet50)."
    )


def encoders(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of a table.")
    ] = False,
) -> None:
    """List the patch encoders: dimension, input size and where their weights would come from.

    Weights: built-in (none needed), local file (SLIDEBANK_WEIGHTS_<NAME> or
    SLIDEBANK_WEIGHTS_DIR), hub cache, downloadable (public, hub usable), or needs weights.
    Nothing is downloaded and no weights are hashed.

    Example: slidebank encoders --json
    """
    with fail_on_slidebank_error():
        rows = _rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    _print_table(rows)


def register(app: typer.Typer) -> None:
    """Add the ``encoders`` command to ``app``."""
    app.command("encoders")(encoders)
