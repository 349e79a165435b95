"""A long-lived local Ray that slidebank runs join instead of starting their own.

Starting Ray costs 15-40 s on a small shared machine; a run that joins a running one
pays about a second. ``slidebank cluster up`` starts a head node in its own temp
folder (so other Ray users on the machine never auto-join it, and ``ray start``'s
``/tmp/ray`` bookkeeping stays theirs) and records it in a state file (0600);
:func:`address` returns its address while its GCS answers.

It is exposed no more than the embedded Ray (:mod:`infra.ray_runtime`), through the same
mechanism: ``ray start`` runs with the embedded Ray's environment (cluster mode off, so
every server, agents and the ``/metrics`` export included, binds 127.0.0.1), and token
auth is explicit, with the user's token or a fresh random one that only the state file
keeps (never ``~/.ray``); :func:`take_cluster_auth` hands it to later drivers. Once it is
up, a census of its processes' listening sockets must find loopback only, or it is stopped
again: without it ``RAY_AUTH_MODE=disabled`` would mean code execution for anyone who
reaches a port. ``down`` ends exactly the processes of that cluster (they carry its id in
their environment), never every Ray process on the machine as ``ray stop`` would.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from infra.errors import ConfigError
from infra.files import atomic_path

__all__ = [
    "address",
    "auth_mode",
    "down",
    "listening_sockets",
    "resolve_address",
    "state_file",
    "take_cluster_auth",
    "up",
]

log = logging.getLogger(__name__)

#: Set in the environment of ``ray start``, so every process of the cluster carries it.
CLUSTER_ENV = "SLIDEBANK_CLUSTER_ID"
_AUTH_MODES = ("token", "disabled")
#: Servers started with a port chosen here (Ray's defaults are fixed numbers another Ray
#: on the machine may hold); ``up`` waits until each listens before its census.
_PORT_FLAGS = {
    "client": "--ray-client-server-port",
    "metrics": "--metrics-export-port",
    "agent_http": "--dashboard-agent-listen-port",
    "agent_grpc": "--dashboard-agent-grpc-port",
    "runtime_env_agent": "--runtime-env-agent-port",
}


def state_file() -> Path:
    """Where the running cluster is recorded (``SLIDEBANK_CLUSTER_STATE`` overrides)."""
    default = Path.home() / ".cache" / "slidebank" / "local-cluster.json"
    return Path(os.environ.get("SLIDEBANK_CLUSTER_STATE") or default)


def _read_state() -> dict[str, Any] | None:
    try:
        state = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "address" in state else None


def _write_state(state: dict[str, Any]) -> None:
    """Atomically, readable by this user only from the start (it may hold the token)."""
    with atomic_path(state_file()) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=2, sort_keys=True)


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


def auth_mode() -> str | None:
    """The recorded cluster's auth mode (``token``/``disabled``; None: not recorded)."""
    state = _read_state()
    return str(state["auth_mode"]) if state and state.get("auth_mode") else None


def resolve_address(requested: str | None) -> str | None:
    """``None`` or ``auto``: the slidebank local cluster when one is up; otherwise
    ``None`` stays None (embedded Ray) and ``auto`` is left to Ray (``RAY_ADDRESS``,
    then the latest ``ray start`` cluster). Anything else is returned as given."""
    if requested not in (None, "auto") or os.environ.get("RAY_ADDRESS"):
        return requested
    local = address()
    if local is not None:
        log.info("joining the local slidebank cluster at %s", local)
        return local
    return requested


def take_cluster_auth(addr: str) -> bool:
    """Before a driver joins ``addr``: when it is the local cluster, use the auth mode and
    token its state file records (a later run needs neither in its environment)."""
    state = _read_state()
    if state is None or not _same_endpoint(addr, str(state["address"])):
        return False
    from infra.ray_runtime import embedded_auth_mode, use_auth

    mode = state.get("auth_mode")
    if mode is None:  # recorded before the mode was: the cluster ran with embedded_auth_mode
        embedded_auth_mode()
        return True
    token = state.get("token")
    info = state_file().stat()
    if token and (info.st_uid != os.getuid() or info.st_mode & 0o077):
        raise ConfigError(
            f"{state_file()} holds the local cluster's token but other users may "
            "read or replace it; run `slidebank cluster down` and `up` again"
        )
    use_auth(str(mode), str(token) if token else None)
    return True


def _same_endpoint(a: str, b: str) -> bool:
    def endpoint(addr: str) -> tuple[str, str]:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        return ("loopback" if host in ("127.0.0.1", "localhost", "::1") else host), port

    return endpoint(a) == endpoint(b)


def _requested_auth_mode() -> str:
    """``RAY_AUTH_MODE`` as the user set it, ``token`` when unset (as the embedded Ray)."""
    mode = os.environ.get("RAY_AUTH_MODE", "token").strip().lower() or "token"
    if mode not in _AUTH_MODES:
        raise ConfigError(
            f"RAY_AUTH_MODE={mode!r} is not supported by `slidebank cluster up`; "
            "use token (the default) or disabled"
        )
    return mode


def _cluster_token() -> str:
    """The user's token (``RAY_AUTH_TOKEN``, or the file ``RAY_AUTH_TOKEN_PATH`` names) or a
    fresh random one, as for the embedded Ray; never ``~/.ray/auth_token``."""
    from infra.ray_runtime import fresh_token

    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not path:
        return fresh_token()
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"RAY_AUTH_TOKEN_PATH={path!r} cannot be read: {exc.strerror}") from exc
    if not token:
        raise ConfigError(f"RAY_AUTH_TOKEN_PATH={path!r} is an empty file")
    return token


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (held together so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def up(num_cpus: int | None = None, *, dashboard: bool = False, timeout_s: float = 120.0) -> str:
    """Start the local cluster (or return the running one's address).

    Raises :class:`~infra.errors.ConfigError` when ``RAY_AUTH_MODE`` is neither ``token``
    nor ``disabled``, when Ray does not start, and when any of its servers listens beyond
    loopback (the cluster is stopped again first).
    """
    running = address()
    if running is not None:
        return running
    mode = _requested_auth_mode()
    token = _cluster_token() if mode == "token" else None
    names = ["gcs", *_PORT_FLAGS] + (["dashboard"] if dashboard else [])
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    state: dict[str, Any] = {
        "address": f"127.0.0.1:{ports['gcs']}",
        "auth_mode": mode,
        "cluster_id": uuid.uuid4().hex,
        "ports": ports,
        "started_at": time.time(),
        "temp_dir": os.environ.get("SLIDEBANK_CLUSTER_TMP") or f"/tmp/slidebank-ray-{os.getuid()}",
    }
    if token:
        state["token"] = token
    deadline = time.monotonic() + timeout_s
    try:
        _ray_start(state, num_cpus, dashboard, token, timeout_s)
        _wait_for_loopback_listeners(state, deadline)
    except BaseException:
        _stop(_cluster_processes(state), timeout_s=10.0)
        raise
    _write_state(state)
    return str(state["address"])


def _ray_start(
    state: dict[str, Any],
    num_cpus: int | None,
    dashboard: bool,
    token: str | None,
    timeout_s: float,
) -> None:
    from infra.ray_runtime import LOOPBACK, ray_process_env

    ports = state["ports"]
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        f"--port={ports['gcs']}",
        f"--node-ip-address={LOOPBACK}",
        f"--temp-dir={state['temp_dir']}",
        "--disable-usage-stats",
        f"--include-dashboard={'true' if dashboard else 'false'}",
    ]
    cmd += [f"{flag}={ports[name]}" for name, flag in _PORT_FLAGS.items()]
    if dashboard:
        cmd += [f"--dashboard-host={LOOPBACK}", f"--dashboard-port={ports['dashboard']}"]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={int(num_cpus)}")
    env = ray_process_env(str(state["auth_mode"]), token) | {CLUSTER_ENV: str(state["cluster_id"])}
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"`ray start` for the local cluster did not finish within {timeout_s:.0f} s "
            f"(logs: {state['temp_dir']}/session_latest/logs)"
        ) from None
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise ConfigError(
            f"could not start the local Ray cluster: {lines[-1] if lines else 'no output'} "
            f"(logs: {state['temp_dir']}/session_latest/logs)"
        )


def _wait_for_loopback_listeners(state: dict[str, Any], deadline: float) -> None:
    """Until every server given a port listens: any socket of the cluster listening beyond
    loopback stops the wait with an error (checked again once all are up)."""
    expected = {int(p) for p in state["ports"].values()}
    while True:
        sockets = listening_sockets(_cluster_processes(state))
        exposed = [s for s in sockets if not _is_loopback(s[2])]
        if exposed:
            name, pid, ip, port = exposed[0]
            raise ConfigError(
                f"the local Ray cluster listens beyond loopback ({name} pid {pid} on "
                f"{f'[{ip}]' if ':' in ip else ip}:{port}); "
                f"stopped it (RAY_AUTH_MODE={state['auth_mode']})"
            )
        missing = expected - {s[3] for s in sockets}
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ConfigError(
                f"the local Ray cluster did not open ports {sorted(missing)} in time "
                f"(logs: {state['temp_dir']}/session_latest/logs)"
            )
        time.sleep(0.5)


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def listening_sockets(procs: list[Any]) -> list[tuple[str, int, str, int]]:
    """(process name, pid, ip, port) of every TCP socket ``procs`` listen on (Ray serves
    nothing over UDP)."""
    import psutil

    found: set[tuple[str, int, str, int]] = set()
    for proc in procs:
        try:
            conns = proc.net_connections(kind="tcp")
            name = proc.name()
        except psutil.Error:
            continue  # it exited meanwhile
        found |= {
            (name, proc.pid, c.laddr.ip, c.laddr.port)
            for c in conns
            if c.status == psutil.CONN_LISTEN
        }
    return sorted(found)


def _cluster_processes(state: dict[str, Any]) -> list[Any]:
    """The cluster's processes: those carrying its id in their environment (clusters
    recorded before the id was: its temp folder or, for the Ray client server, its
    ``--address``) and their children."""
    import psutil

    cluster_id, temp_dir = state.get("cluster_id"), str(state.get("temp_dir") or "")
    port = str(state["address"]).rpartition(":")[2]

    def ours(proc: Any) -> bool:
        try:
            if cluster_id:
                return bool(proc.environ().get(CLUSTER_ENV) == cluster_id)
            args = proc.cmdline()
        except psutil.Error:
            return False
        return any(
            (temp_dir and temp_dir in a) or (a.startswith("--address=") and a.endswith(f":{port}"))
            for a in args
        )

    found = {p.pid: p for p in psutil.process_iter() if p.pid != os.getpid() and ours(p)}
    for proc in list(found.values()):
        with contextlib.suppress(psutil.Error):
            found.update({c.pid: c for c in proc.children(recursive=True)})
    return list(found.values())


def _stop(procs: list[Any], timeout_s: float) -> None:
    """In ``ray stop``'s order: the raylet, then the rest, then the GCS (which otherwise
    outlasts SIGTERM waiting for the others); SIGKILL for any still there after its share
    of ``timeout_s``."""
    import psutil

    def rank(p: Any) -> int:
        with contextlib.suppress(psutil.Error):
            return {"raylet": 0, "gcs_server": 2}.get(p.name(), 1)
        return 1

    for bucket in range(3):
        group = [p for p in procs if rank(p) == bucket]
        for p in group:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(group, timeout=timeout_s / 3)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)


def down(timeout_s: float = 15.0) -> int:
    """Stop the recorded cluster's processes; returns how many were signalled.

    A local cluster keeps nothing worth waiting for: what outlasts SIGTERM is killed.
    """
    state = _read_state()
    if state is None:
        return 0
    if not (state.get("cluster_id") or state.get("temp_dir")):
        raise ConfigError(
            f"{state_file()} names no cluster id or temp folder; not stopping anything"
        )
    mine = _cluster_processes(state)
    _stop(mine, timeout_s)
    state_file().unlink(missing_ok=True)
    return len(mine)
