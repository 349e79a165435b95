"""``slidebank cluster up|down|status``: a local Ray that later runs join in about a second."""

from __future__ import annotations

from typing import Annotated

import typer

from slidebank._cli_common import fail_on_slidebank_error

__all__ = ["register"]

cluster_app = typer.Typer(
    help="A long-lived local Ray cluster that slidebank runs reuse.", no_args_is_help=True
)


@cluster_app.command("up")
def up(
    num_cpus: Annotated[
        int | None, typer.Option(help="CPUs the cluster offers (default: all).")
    ] = None,
    dashboard: Annotated[bool, typer.Option(help="Start the Ray dashboard on 127.0.0.1.")] = False,
) -> None:
    """Start a local Ray cluster (or report the running one). Later `slidebank ingest`,
    `train` and `demo` runs join it instead of starting Ray each time (15-40 s on a
    small machine); `--address auto` does the same explicitly.

    Every server listens on 127.0.0.1 only. Token auth is on (RAY_AUTH_MODE=token
    unless set) with your RAY_AUTH_TOKEN or a fresh random token, kept for later
    runs in the cluster's state file (mode 0600). RAY_AUTH_MODE=disabled is
    refused unless every server is on loopback.

    Example: slidebank cluster up --num-cpus 2
    """
    from infra.local_cluster import auth_mode
    from infra.local_cluster import up as start

    with fail_on_slidebank_error():
        address = start(num_cpus, dashboard=dashboard)
    typer.echo(
        f"local cluster at {address}, {_auth_words(auth_mode())} "
        "(stop it with: slidebank cluster down)"
    )


def _auth_words(mode: str | None) -> str:
    if mode == "disabled":
        return "no token auth: any process on this machine can run code on it"
    return "token auth" if mode == "token" else "auth mode not recorded"


@cluster_app.command("down")
def down() -> None:
    """Stop the local cluster started by `slidebank cluster up` (only its processes).

    Example: slidebank cluster down
    """
    from infra.local_cluster import down as stop

    with fail_on_slidebank_error():
        stopped = stop()
    typer.echo(f"stopped {stopped} processes" if stopped else "no local cluster was running")


@cluster_app.command("status")
def status() -> None:
    """Say whether the local cluster is up and where.

    Example: slidebank cluster status
    """
    from infra.local_cluster import address, auth_mode, state_file

    running = address()
    typer.echo(
        f"local cluster at {running}, {_auth_words(auth_mode())}"
        if running
        else f"no local cluster ({state_file()})"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
