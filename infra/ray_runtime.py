"""Ray start/connect for every slidebank entry point (ingest, training, tests).

Embedded by default: a local Ray whose dashboard (when wanted) listens on 127.0.0.1 only,
with token authentication set explicitly (``RAY_AUTH_MODE=token`` unless the user chose
otherwise) so that behaviour never depends on the Ray release's default, and without
Ray's notice about that default on the terminal. A cluster when ``address`` or
``RAY_ADDRESS`` names one (``auto``, ``host:port`` or ``ray://host:10001``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["connect", "embedded_auth_mode", "ray_session", "shutdown"]

log = logging.getLogger(__name__)

_AUTH_ENV = "RAY_AUTH_MODE"


def embedded_auth_mode() -> str:
    """The token-auth mode an embedded Ray runs with: the user's ``RAY_AUTH_MODE`` or ``token``."""
    mode = os.environ.setdefault(_AUTH_ENV, "token")
    return mode


def connect(address: str | None = None, *, dashboard: bool = False,
            num_cpus: int | None = None, **init_kwargs: Any) -> bool:
    """Join ``address`` / ``RAY_ADDRESS``, or start an embedded local Ray.

    Returns True when this call started or joined Ray (and the caller should shut it down),
    False when Ray was already initialised in this process (the caller must leave it up).
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False, **init_kwargs)
        log.info("connected to Ray cluster at %s", address)
        return True
    embedded_auth_mode()
    _quiet_ray_loggers()
    ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1", log_to_driver=False,
             configure_logging=False, num_cpus=num_cpus, **init_kwargs)
    return True


def shutdown(started: bool) -> None:
    """Shut Ray down when :func:`connect` started it."""
    if started:
        import ray

        ray.shutdown()


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
