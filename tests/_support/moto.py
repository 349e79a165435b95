"""A local S3-protocol endpoint: ``python -m moto.server`` on a free loopback port.

One launcher for the tests' session fixture and the benchmarks (``benchmarks/_common.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

#: Fake credentials for the local server only.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoStartError(RuntimeError):
    """The moto server exited or did not answer in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = 30.0,
    command: Callable[[int], list[str]] | None = None,
) -> Iterator[str]:
    """Start moto, wait until it answers, yield its endpoint URL, stop it on exit.

    ``env`` is the server's whole environment (default: this process's, plus the fake
    credentials), so it never sees real AWS credentials from the caller's shell.
    ``command`` (port -> argv) starts another server that serves moto's app on loopback
    (the benchmarks' request-counting one); by default ``python -m moto.server``.
    """
    port = free_port()
    argv = (
        command(port)
        if command is not None
        else [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    )
    proc = subprocess.Popen(
        argv,
        env=dict(env) if env is not None else {**os.environ, **FAKE_CREDENTIALS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        # Poll for up to ``timeout`` seconds (a start-up wait, not a measurement).
        attempts = max(1, int(timeout / 0.1))
        for attempt in range(attempts):
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError as exc:
                if proc.poll() is not None:
                    raise MotoStartError(
                        f"moto server on port {port} exited ({proc.returncode})"
                    ) from exc
                if attempt == attempts - 1:
                    raise MotoStartError(
                        f"moto server on port {port} did not answer in {timeout:.0f} s"
                    ) from exc
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def storage_options(
    endpoint: str, credentials: Mapping[str, str] = FAKE_CREDENTIALS
) -> dict[str, Any]:
    """fsspec/s3fs storage options for ``endpoint`` with the given fake credentials."""
    return {
        "key": credentials["AWS_ACCESS_KEY_ID"],
        "secret": credentials["AWS_SECRET_ACCESS_KEY"],
        "endpoint_url": endpoint,
        "skip_instance_cache": True,
    }
