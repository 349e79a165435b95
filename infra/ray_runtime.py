"""Ray start/connect for every slidebank entry point (ingest, training, tests).

Embedded by default: a local Ray that nothing outside this machine can reach —

* every server (GCS, raylet, object manager, workers, dashboard and runtime-env agents,
  the Prometheus metrics export) binds to 127.0.0.1. ``ray.init(_node_ip_address=
  "127.0.0.1")`` alone is not enough: Ray rewrites a loopback address to the machine's
  routable IP (``services.resolve_ip_for_localhost``) unless its cluster mode is off, so
  that switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, read as ``ray_constants.
  ENABLE_RAY_CLUSTER``) is turned off while Ray starts. ``tests/test_hostile_ray.py``
  checks the listening sockets of the whole process tree;
* token authentication is set explicitly (``RAY_AUTH_MODE=token`` unless the user chose
  otherwise), so behaviour never depends on the Ray release's default; the token is a
  fresh random one held in this process's environment (``RAY_AUTH_TOKEN``) unless the user
  has one, never a file written to the home folder;
* agents check their raylet through a pipe, so they exit as soon as the driver's Ray dies
  (including ``kill -9`` of the driver), instead of serving ``/metrics`` on for a while.

A cluster when ``address`` or ``RAY_ADDRESS`` names one (``auto``, ``host:port`` or
``ray://host:10001``; ``local`` means the embedded Ray): binding and firewalling are then the cluster's (see README,
"Cluster security"). ``slidebank cluster up`` (:mod:`infra.local_cluster`) starts its Ray
with the same environment (:func:`ray_process_env`); a driver joining it takes its auth
mode and token from that cluster's state file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from infra.environ import patched_environ

__all__ = [
    "LOOPBACK",
    "connect",
    "embedded_auth_mode",
    "fresh_token",
    "ray_process_env",
    "ray_session",
    "shutdown",
    "use_auth",
]

log = logging.getLogger(__name__)

_AUTH_ENV = "RAY_AUTH_MODE"


def embedded_auth_mode() -> str:
    """The token-auth mode an embedded Ray runs with: the user's ``RAY_AUTH_MODE`` or ``token``.

    Ray reads the mode into its native config when ``ray`` is first imported; setting the
    variable later reaches the child processes (GCS, raylet) but not this one, so this
    process would neither create a token nor send one and the GCS would abort. The native
    config is therefore re-read after setting it, as Ray itself does when it turns token
    auth on by default (``authentication_token_setup._enable_token_auth``).
    """
    if _AUTH_ENV in os.environ:
        return os.environ[_AUTH_ENV]
    os.environ[_AUTH_ENV] = "token"
    _reload_auth_config()
    return "token"


def use_auth(mode: str, token: str | None) -> None:
    """This process joins a Ray that runs with ``mode`` and ``token`` (the local cluster's,
    from its state file): set both and make Ray re-read them (see :func:`embedded_auth_mode`)."""
    os.environ[_AUTH_ENV] = mode
    if token:
        os.environ["RAY_AUTH_TOKEN"] = token
    _reload_auth_config()


def _reload_auth_config() -> None:
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]  # compiled module, no stubs
    except ImportError:  # a Ray without this hook reads the variable at init time
        return
    Config.initialize("")
    with contextlib.suppress(ImportError, AttributeError):
        from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

        AuthenticationTokenLoader.instance().reset_cache()


def connect(
    address: str | None = None,
    *,
    dashboard: bool = False,
    num_cpus: int | None = None,
    **init_kwargs: Any,
) -> bool:
    """Join ``address`` / ``RAY_ADDRESS``, or start an embedded local Ray.

    Returns True when this call started or joined Ray (and the caller should shut it down),
    False when Ray was already initialised in this process (the caller must leave it up).
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    # "local" asks for a new Ray of our own: the embedded one below, with its loopback
    # binding, token, quiet loggers and reaper (passed to ray.init as an address it would
    # start a Ray on every interface and print its notices).
    if address and address != "local":
        _join(address, init_kwargs)
        return True
    if embedded_auth_mode().lower() == "token":
        _ensure_token()
    _quiet_ray_loggers()
    init_kwargs.setdefault("_node_ip_address", LOOPBACK)
    with _loopback_only():
        # address="local": always a new Ray of our own. Without it, ray.init() joins any
        # cluster a `ray start` left on this machine (another user's, with its own exposure).
        ray.init(
            address="local",
            include_dashboard=dashboard,
            dashboard_host=LOOPBACK,
            log_to_driver=False,
            configure_logging=False,
            num_cpus=num_cpus,
            **init_kwargs,
        )
    _start_reaper()
    return True


def _join(address: str, init_kwargs: dict[str, Any]) -> None:
    import ray

    from infra.local_cluster import take_cluster_auth

    take_cluster_auth(address)
    # Ray turns a loopback GCS address into the machine's routable IP (where a loopback-only
    # cluster such as `slidebank cluster up`'s does not listen) unless cluster mode is off.
    on_loopback = _host(address) in _LOOPBACK_NAMES
    with _loopback_only() if on_loopback else contextlib.nullcontext():
        ray.init(address=address, log_to_driver=False, **init_kwargs)
    log.info("connected to Ray cluster at %s", address)


def _host(address: str) -> str:
    return address.removeprefix("ray://").rpartition(":")[0].strip("[]")


LOOPBACK = "127.0.0.1"
_LOOPBACK_NAMES = {LOOPBACK, "localhost", "::1"}
#: Environment the Ray processes started by an embedded ``ray.init`` inherit: cluster mode
#: off (loopback node IP) and pipe-based agent → raylet health checks (agents die with it).
_EMBEDDED_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_enable_pipe_based_agent_to_parent_health_check": "1",
}
#: Ray starts its worker processes this much nicer than the raylet (its default, 15, made
#: slidebank's actors yield to every other job on a shared workstation). The raylet
#: inherits the driver's niceness, so 0 runs workers at the user's own priority; a
#: ``RAY_worker_niceness`` the user set is kept.
_WORKER_NICENESS = "RAY_worker_niceness"


def _embedded_env() -> dict[str, str]:
    """:data:`_EMBEDDED_ENV` plus the worker niceness (the user's, or 0: the driver's own)."""
    return {**_EMBEDDED_ENV, _WORKER_NICENESS: os.environ.get(_WORKER_NICENESS, "0")}


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Ray's cluster mode off while it starts (children inherit the environment then);
    this process's environment and Ray's constant restored afterwards."""
    from ray._private import ray_constants

    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    with patched_environ(_embedded_env()):
        ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time by get_node_ip_address
        try:
            yield
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = saved_flag


def _ensure_token() -> None:
    """A token for an embedded Ray in token mode: the user's (``RAY_AUTH_TOKEN`` or
    ``RAY_AUTH_TOKEN_PATH``) or a fresh random one in this process's environment, which the
    GCS, raylet and workers inherit. Never ``~/.ray/auth_token``: a token file in a shared
    home folder is readable by every job there, and one deleted by another process between
    ``ray.init`` writing it and the GCS reading it aborts the GCS (seen on this machine)."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    os.environ["RAY_AUTH_TOKEN"] = fresh_token()
    _reload_auth_config()


def fresh_token() -> str:
    """A new random token for a Ray this machine starts (256 bits, hex)."""
    return secrets.token_hex(32)


def ray_process_env(mode: str, token: str | None) -> dict[str, str]:
    """The environment for Ray processes started outside ``ray.init`` (``ray start`` for the
    local cluster): this process's, with the embedded Ray's loopback, agent and worker
    niceness settings, ``mode`` and ``token``. ``RAY_ADDRESS`` and a token file are left out: the new Ray must
    neither join another cluster nor read a token other than ``token``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    }
    env.update(_embedded_env())
    env[_AUTH_ENV] = mode
    if token:
        env["RAY_AUTH_TOKEN"] = token
    return env


def shutdown(started: bool) -> None:
    """Shut Ray down when :func:`connect` started it."""
    if started:
        import ray

        ray.shutdown()
        _stop_reaper()


_REAPER: dict[str, subprocess.Popen[bytes]] = {}


def _start_reaper() -> None:
    """Watchdog that ends this Ray's agents if the driver dies (see ``infra/_ray_reaper.py``)."""
    import ray

    node = ray._private.worker._global_node
    raylets: list[Any] = (node.all_processes.get("raylet") if node is not None else None) or []
    if not raylets:
        return
    _stop_reaper()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ray_reaper.py")
    _REAPER["proc"] = subprocess.Popen(
        [sys.executable, script, str(raylets[0].process.pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop_reaper() -> None:
    proc = _REAPER.pop("proc", None)
    if proc is not None and proc.stdin is not None:
        proc.stdin.close()  # end-of-file: it ends any leftovers, then exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


@contextlib.contextmanager
def ray_session(address: str | None = None, **kwargs: Any) -> Iterator[bool]:
    """``with ray_session(address):`` — Ray up for the block, down after if we started it."""
    started = connect(address, **kwargs)
    try:
        yield started
    finally:
        shutdown(started)


def _quiet_ray_loggers() -> None:
    # Ray logs start-up notices (token auth on, dashboard URL) at WARNING/INFO on its own
    # loggers; the slidebank CLI shows its own progress instead.
    for name in ("ray", "ray._private.authentication.authentication_token_setup"):
        logging.getLogger(name).setLevel(logging.ERROR)
