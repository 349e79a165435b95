"""Issue 17: an embedded Ray is reachable from this machine only, authenticates explicitly,
and leaves nothing serving once its driver is gone."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    return sorted({(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
                   if c.status == psutil.CONN_LISTEN and c.pid in pids})


def _tree(pid: int) -> set[int]:
    return {pid} | {p.pid for p in psutil.Process(pid).children(recursive=True)}


def _ss_listening(pids: set[int]) -> list[str]:
    """``ss -ltnp`` lines of sockets owned by ``pids``: the same view from outside the
    process tree. Matched by process, not port: another Ray on the same machine (another
    user's, bound elsewhere) may listen on the same port number at another address."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()
            if any(int(pid) in pids for pid in re.findall(r"pid=(\d+)", line))]


def test_ray_local_listens_on_loopback_only(ray_local) -> None:
    import ray

    @ray.remote
    def touch() -> int:
        return os.getpid()

    ray.get(touch.remote())  # a worker exists, with its own server
    sockets = _listening(_tree(os.getpid()))
    assert len(sockets) >= 4, f"GCS, raylet, agents and a worker should listen: {sockets}"
    exposed = [s for s in sockets if s[1] not in LOOPBACK]
    assert not exposed, f"listening beyond loopback: {exposed}"
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    if shutil.which("ss"):
        lines = _ss_listening(_tree(os.getpid()))
        assert lines, "ss shows the tree's listening sockets"
        for line in lines:
            local = line.split()[3]
            assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")), line


def test_ray_local_runs_with_explicit_token_auth(ray_local) -> None:
    assert os.environ.get("RAY_AUTH_MODE") == "token"
    assert os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")


_DRIVER = """
import json, os, sys, time
import psutil, ray
from infra.ray_runtime import connect
connect(num_cpus=1, dashboard=True)
ray.get(ray.remote(lambda: 1).remote())
me = psutil.Process()
print(json.dumps({"children": [p.pid for p in me.children(recursive=True)],
                  "mode": os.environ.get("RAY_AUTH_MODE"),
                  "token_in_env": bool(os.environ.get("RAY_AUTH_TOKEN"))}), flush=True)
time.sleep(600)
"""


def test_ray_address_local_is_the_embedded_ray(monkeypatch) -> None:
    """RAY_ADDRESS=local asks for a new Ray: it must get the embedded one's loopback
    binding, token and quiet start-up, not a bare ray.init on every interface."""
    import ray

    from infra import ray_runtime

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray_runtime, "_start_reaper", lambda: None)
    monkeypatch.setenv("RAY_ADDRESS", "local")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert ray_runtime.connect() is True
    (kwargs,) = calls
    assert kwargs["address"] == "local" and kwargs["_node_ip_address"] == "127.0.0.1"
    assert kwargs["include_dashboard"] is False and kwargs["configure_logging"] is False
    assert os.environ.get("RAY_AUTH_TOKEN")  # the embedded Ray's token was set up


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("ray_address", [None, "local"])
def test_embedded_ray_with_dashboard_exposes_nothing_and_dies_with_its_driver(tmp_path, ray_address) -> None:
    # A fresh home folder: the token must not be written there (nor read from there).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        facts = json.loads(driver.stdout.readline())
        children = set(facts["children"])
        sockets = _listening(children | {driver.pid})
        assert len(sockets) >= 5, sockets  # GCS, raylet, agents, dashboard, a worker
        assert [s for s in sockets if s[1] not in LOOPBACK] == [], sockets
        assert facts["mode"] == "token" and facts["token_in_env"]
        assert not (tmp_path / ".ray" / "auth_token").exists()
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    # Bounded wait for Ray's own teardown and the reaper (not a speed measurement): before
    # the reaper, two agents served /metrics for 60-90 s after the driver was killed.
    alive = sorted(children)
    for _ in range(60):
        alive = [p for p in children if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            break
        time.sleep(0.5)
    assert not alive, [psutil.Process(p).name() for p in alive if psutil.pid_exists(p)]


def test_reaper_ends_the_processes_of_its_raylet_when_the_driver_pipe_closes(tmp_path) -> None:
    """The watchdog alone, without Ray: a stand-in "agent" carrying ``RAY_RAYLET_PID`` ends
    when the pipe from its driver closes; a bystander without it is left alone."""
    fake_raylet = "999999999"  # no such process: only the environment marker matters here
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    agent = subprocess.Popen(sleeper, env={**os.environ, "RAY_RAYLET_PID": fake_raylet})
    bystander = subprocess.Popen(sleeper, env={**os.environ, "RAY_RAYLET_PID": "1"})
    reaper = subprocess.Popen([sys.executable, str(ROOT / "infra" / "_ray_reaper.py"), fake_raylet],
                              stdin=subprocess.PIPE)
    try:
        assert agent.poll() is None
        reaper.stdin.close()  # what the kernel does when the driver dies
        assert reaper.wait(timeout=60) == 0
        assert agent.wait(timeout=30) == -signal.SIGKILL
        assert bystander.poll() is None
    finally:
        for proc in (agent, bystander, reaper):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
