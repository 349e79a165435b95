"""A long-lived local Ray that slidebank runs join instead of starting their own.

Starting Ray costs 15-40 s on a small shared machine; a run that joins a running one
pays about a second. ``slidebank cluster up`` starts a head node in its own temp
folder (so other Ray users on the machine never auto-join it, and ``ray start``'s
``/tmp/ray`` bookkeeping stays theirs) and records its address in a state file;
:func:`address` returns it while its GCS answers. ``down`` ends exactly the processes
of that cluster (found by its temp folder), never every Ray process on the machine
as ``ray stop`` would.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from infra.errors import ConfigError
from infra.files import atomic_write_json

__all__ = ["address", "down", "resolve_address", "state_file", "up"]

log = logging.getLogger(__name__)


def state_file() -> Path:
    """Where the running cluster is recorded (``SLIDEBANK_CLUSTER_STATE`` overrides)."""
    default = Path.home() / ".cache" / "slidebank" / "local-cluster.json"
    return Path(os.environ.get("SLIDEBANK_CLUSTER_STATE") or default)


def _read_state() -> dict[str, Any] | None:
    import json

    try:
        state = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "address" in state else None


def _answers(addr: str, timeout: float = 0.5) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def address() -> str | None:
    """The recorded local cluster's GCS address when it is up, else None."""
    state = _read_state()
    if state is None or not _answers(str(state["address"])):
        return None
    return str(state["address"])


def resolve_address(requested: str | None) -> str | None:
    """``None`` or ``auto``: the slidebank local cluster when one is up; otherwise
    ``None`` stays None (embedded Ray) and ``auto`` is left to Ray (``RAY_ADDRESS``,
    then the latest ``ray start`` cluster). Anything else is returned as given."""
    if requested not in (None, "auto") or os.environ.get("RAY_ADDRESS"):
        return requested
    local = address()
    if local is not None:
        from infra.ray_runtime import embedded_auth_mode

        embedded_auth_mode()  # the cluster was started with it; the driver must match
        log.info("joining the local slidebank cluster at %s", local)
        return local
    return requested


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def up(num_cpus: int | None = None, *, dashboard: bool = False, timeout_s: float = 120.0) -> str:
    """Start the local cluster (or return the running one's address)."""
    running = address()
    if running is not None:
        return running
    from infra.ray_runtime import embedded_auth_mode

    embedded_auth_mode()
    temp_dir = Path(os.environ.get("SLIDEBANK_CLUSTER_TMP") or f"/tmp/slidebank-ray-{os.getuid()}")
    port = _free_port()
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
           "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
           f"--include-dashboard={'true' if dashboard else 'false'}"]
    if dashboard:
        cmd.append("--dashboard-host=127.0.0.1")
    if num_cpus is not None:
        cmd.append(f"--num-cpus={int(num_cpus)}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise ConfigError(f"could not start the local Ray cluster: {proc.stderr.strip()[-1500:]}")
    addr = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while not _answers(addr):
        if time.monotonic() > deadline:
            raise ConfigError(f"the local Ray cluster did not answer at {addr} within {timeout_s:.0f} s")
        time.sleep(0.2)
    state_file().parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(state_file(), {"address": addr, "temp_dir": str(temp_dir),
                                     "started_at": time.time()})
    return addr


def down(timeout_s: float = 30.0) -> int:
    """Stop the recorded cluster's processes; returns how many were signalled."""
    import psutil

    state = _read_state()
    if state is None:
        return 0
    temp_dir = str(state.get("temp_dir") or "")
    if not temp_dir:
        raise ConfigError(f"{state_file()} names no temp folder; not stopping anything")
    port = str(state["address"]).rpartition(":")[2]

    def ours(args: list[str]) -> bool:  # its temp folder, or the Ray client server's --address
        return any(temp_dir in a or (a.startswith("--address=") and a.endswith(f":{port}"))
                   for a in args)

    mine = [p for p in psutil.process_iter(["pid", "cmdline"])
            if p.info["pid"] != os.getpid() and ours(p.info["cmdline"] or [])]
    for p in mine:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(mine, timeout=timeout_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            continue
    state_file().unlink(missing_ok=True)
    return len(mine)
