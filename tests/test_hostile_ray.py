"""Issue 17: an embedded Ray is reachable from this machine only, authenticates explicitly,
and leaves nothing serving once its driver is gone. Issue 24: so is the local cluster of
`slidebank cluster up`, whose token later runs read from its state file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    return sorted(
        {
            (c.pid, c.laddr.ip, c.laddr.port)
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids
        }
    )


def _tree(pid: int) -> set[int]:
    return {pid} | {p.pid for p in psutil.Process(pid).children(recursive=True)}


def _ss_listening(pids: set[int]) -> list[str]:
    """``ss -ltnp`` lines of sockets owned by ``pids``: the same view from outside the
    process tree. Matched by process, not port: another Ray on the same machine (another
    user's, bound elsewhere) may listen on the same port number at another address."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [
        line
        for line in out.splitlines()
        if any(int(pid) in pids for pid in re.findall(r"pid=(\d+)", line))
    ]


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
def test_embedded_ray_with_dashboard_exposes_nothing_and_dies_with_its_driver(
    tmp_path, ray_address
) -> None:
    # A fresh home folder: the token must not be written there (nor read from there).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
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
        alive = [
            p
            for p in children
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
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
    reaper = subprocess.Popen(
        [sys.executable, str(ROOT / "infra" / "_ray_reaper.py"), fake_raylet], stdin=subprocess.PIPE
    )
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


# ---- `slidebank cluster up` (issue 24): loopback only, its own token, refusals in one line ----

_MARK = "SLIDEBANK_TEST_CLUSTER_MARK"
_CLI = [sys.executable, "-c", "from slidebank.cli import main; main()"]

_JOINER = """
import json, os, sys
import ray
from infra.local_cluster import resolve_address
from infra.ray_runtime import connect
connect(resolve_address(None))

@ray.remote
class Holder:  # a worker that stays up (with its own server) until this driver goes
    def pid(self):
        return os.getpid()

holder = Holder.remote()
print(json.dumps({"actor": ray.get(holder.pid.remote()), "node_ip": ray.util.get_node_ip_address()}),
      flush=True)
sys.stdin.read()
"""

# An outsider on this machine: plain Ray, loopback reachable (cluster mode off), no slidebank.
_PROBE = """
import os, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print("TASK-RAN as uid", ray.get(ray.remote(os.getuid).remote()), flush=True)
"""


class _Cluster:
    """Environments for one test's local cluster: a fresh home, its own state file and
    short temp folder (Ray's socket paths must stay under 108 bytes), RAY_AUTH_MODE set
    explicitly, and a mark that every process it starts inherits, for the census and
    for the cleanup that no failing assertion can skip."""

    def __init__(self, tmp_path: Path, mode: str) -> None:
        self.mark = uuid.uuid4().hex
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.state = tmp_path / "state" / "cluster.json"
        self.temp_dir = tempfile.mkdtemp(prefix="sbr-", dir="/tmp")
        self.base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            _MARK: self.mark,
        }
        self.env = {
            **self.base,
            "PYTHONPATH": str(ROOT),
            "RAY_AUTH_MODE": mode,
            "SLIDEBANK_CLUSTER_STATE": str(self.state),
            "SLIDEBANK_CLUSTER_TMP": self.temp_dir,
        }

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_CLI, *args],
            cwd=ROOT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def processes(self) -> set[int]:
        """Every live process carrying the mark, and their children (Ray's agents and
        workers rewrite their command line over their environment)."""
        pids: set[int] = set()
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(_MARK) == self.mark:
                    pids |= {proc.pid} | {c.pid for c in proc.children(recursive=True)}
            except psutil.Error:
                continue
        return {
            p
            for p in pids
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        }

    def kill_all(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def _cluster(tmp_path: Path, mode: str) -> Iterator[_Cluster]:
    cluster = _Cluster(tmp_path, mode)
    try:
        yield cluster
    finally:
        if cluster.state.exists():
            cluster.cli("cluster", "down")
        cluster.kill_all()


def _started(stack: contextlib.ExitStack, cmd: list[str], **kwargs) -> subprocess.Popen[str]:
    """A process with a text stdout pipe that ``stack`` kills, reaps and closes."""
    proc = stack.enter_context(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, **kwargs))
    stack.callback(proc.kill)  # runs first: Popen's own exit then waits and closes the pipes
    return proc


def _joiner(stack: contextlib.ExitStack, cluster: _Cluster) -> subprocess.Popen[str]:
    """A later slidebank run on this machine: nothing in its environment but where the
    state file is (no RAY_* at all), joining through ``resolve_address``."""
    env = {**cluster.base, "PYTHONPATH": str(ROOT), "SLIDEBANK_CLUSTER_STATE": str(cluster.state)}
    return _started(
        stack, [sys.executable, "-c", _JOINER], cwd=ROOT, env=env, stdin=subprocess.PIPE
    )


def _census(pids: set[int]) -> list[tuple[int, str, int]]:
    sockets = _listening(pids)
    if shutil.which("ss"):  # the same view from outside the processes
        for line in _ss_listening(pids):
            local = line.split()[3]
            assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")), line
    return sockets


def _refused(probe: subprocess.Popen[str]) -> str:
    """What an outsider's attempt came to: ``refused`` once the GCS answers it with
    Unauthenticated (Ray would retry for 20 s more), else its whole output."""
    seen = []
    assert probe.stdout is not None
    for line in probe.stdout:
        seen.append(line)
        if "TASK-RAN" in line:
            break
        if "Unauthenticated" in line:
            return "refused"
    return "".join(seen[-5:])


@pytest.mark.timeout(420)
def test_cluster_up_listens_on_loopback_only_and_runs_tasks_only_with_its_token(tmp_path) -> None:
    with _cluster(tmp_path, "token") as cluster:
        started = cluster.cli("cluster", "up", "--num-cpus", "1")
        assert started.returncode == 0, started.stderr
        assert "token auth" in started.stdout
        state = json.loads(cluster.state.read_text())
        assert stat.S_IMODE(cluster.state.stat().st_mode) == 0o600
        assert state["auth_mode"] == "token" and re.fullmatch(r"[0-9a-f]{64}", state["token"])
        assert not (cluster.home / ".ray").exists(), "the token is never written to ~/.ray"

        with contextlib.ExitStack() as stack:
            driver = _joiner(stack, cluster)
            outsider = {**cluster.base, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
            probes = [
                _started(
                    stack,
                    [sys.executable, "-c", _PROBE, state["address"]],
                    env=env,
                    cwd=cluster.home,
                    stderr=subprocess.STDOUT,
                )
                for env in (
                    outsider,
                    {**outsider, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
                )
            ]
            outcomes = [_refused(p) for p in probes]
            assert outcomes == ["refused", "refused"], outcomes
            facts = json.loads(driver.stdout.readline())
            assert facts["node_ip"] == "127.0.0.1"
            pids = cluster.processes() | _tree(driver.pid)
            sockets = _census(pids)
            assert [s for s in sockets if s[1] not in LOOPBACK] == [], sockets
            names = {psutil.Process(pid).name() for pid, _, _ in sockets}
            assert {
                "gcs_server",
                "raylet",
                "ray::DashboardAgent",
                "ray::RuntimeEnvAgent",
            } <= names, names
            ports = {port for _, _, port in sockets}
            assert set(state["ports"].values()) <= ports, (
                "GCS, Ray Client, agents and /metrics were counted"
            )
            assert facts["actor"] in {pid for pid, _, _ in sockets}, "a worker's server was counted"

        stopped = cluster.cli("cluster", "down")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
        assert not cluster.state.exists()
        assert cluster.processes() == set(), "cluster down leaves none of its processes"


# Slow: a second cluster start (about 25 s); the token-auth cluster above, the default,
# checks the same loopback-only listening in the default suite.
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_cluster_up_without_token_auth_still_listens_on_loopback_only(tmp_path) -> None:
    with _cluster(tmp_path, "disabled") as cluster:
        started = cluster.cli("cluster", "up", "--num-cpus", "1")
        assert started.returncode == 0, started.stderr
        state = json.loads(cluster.state.read_text())
        servers = _census(cluster.processes())
        assert [s for s in servers if s[1] not in LOOPBACK] == [], servers
        with contextlib.ExitStack() as stack:  # and once a later run has a worker on it
            driver = _joiner(stack, cluster)
            facts = json.loads(driver.stdout.readline())
            sockets = _census(cluster.processes() | _tree(driver.pid))
            assert [s for s in sockets if s[1] not in LOOPBACK] == [], sockets
            assert set(state["ports"].values()) <= {port for _, _, port in sockets}
            assert facts["actor"] in {pid for pid, _, _ in sockets}
        assert state["auth_mode"] == "disabled" and "token" not in state
        assert "no token auth" in started.stdout
        assert cluster.cli("cluster", "down").returncode == 0
        assert cluster.processes() == set()


# Ray's own default, cluster mode on: what `cluster up` did before, so the census has
# something beyond loopback to find.
_EXPOSED_CLI = (
    "import infra.ray_runtime as r; r._EMBEDDED_ENV.pop('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'); "
    "from slidebank.cli import main; main()"
)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_cluster_up_refuses_to_run_without_token_auth_beyond_loopback(tmp_path) -> None:
    from ray._private.services import node_ip_address_from_perspective

    if node_ip_address_from_perspective() in LOOPBACK:
        pytest.skip("this machine has no address beyond loopback for Ray to bind")
    with _cluster(tmp_path, "disabled") as cluster:
        refused = subprocess.run(
            [sys.executable, "-c", _EXPOSED_CLI, "cluster", "up", "--num-cpus", "1"],
            cwd=ROOT,
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.startswith(
            "error: ConfigError: the local Ray cluster listens beyond loopback"
        )
        assert "RAY_AUTH_MODE=disabled" in refused.stderr
        assert not cluster.state.exists()
        assert cluster.processes() == set(), "the refused cluster was stopped"


def test_cluster_census_names_a_server_listening_beyond_loopback(tmp_path, monkeypatch) -> None:
    """The check `cluster up` runs before it records a cluster, on real sockets: one
    process of the cluster (found by the id in its environment) on 0.0.0.0 is refused by
    name and address; on 127.0.0.1 the same wait returns once the port listens."""
    from infra import local_cluster
    from infra.errors import ConfigError

    server = (
        "import socket, sys, time; s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(); "
        "print(s.getsockname()[1], flush=True); time.sleep(60)"
    )
    for host, refused in (("0.0.0.0", True), ("127.0.0.1", False)):
        cluster_id = uuid.uuid4().hex
        with contextlib.ExitStack() as stack:
            proc = _started(
                stack,
                [sys.executable, "-c", server, host],
                env={**os.environ, local_cluster.CLUSTER_ENV: cluster_id},
            )
            port = int(proc.stdout.readline())
            state = {
                "address": f"127.0.0.1:{port}",
                "cluster_id": cluster_id,
                "auth_mode": "disabled",
                "ports": {"gcs": port},
                "temp_dir": str(tmp_path),
            }
            if refused:
                with pytest.raises(
                    ConfigError,
                    match=rf"pid {proc.pid} on 0\.0\.0\.0:{port}\); stopped it "
                    r"\(RAY_AUTH_MODE=disabled\)",
                ):
                    local_cluster._wait_for_loopback_listeners(state, time.monotonic() + 30)
            else:
                local_cluster._wait_for_loopback_listeners(state, time.monotonic() + 30)


def test_cluster_up_refuses_an_unknown_auth_mode_in_one_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from slidebank.cli import app

    state = tmp_path / "cluster.json"
    env = {
        "RAY_AUTH_MODE": "none",
        "SLIDEBANK_CLUSTER_STATE": str(state),
        "RAY_ADDRESS": None,
        "SLIDEBANK_CLUSTER_TMP": tempfile.mkdtemp(prefix="sbr-", dir="/tmp"),
    }
    try:
        result = CliRunner().invoke(app, ["cluster", "up"], env=env)
    finally:  # a cluster that should not have started is not left running
        CliRunner().invoke(app, ["cluster", "down"], env=env)
        shutil.rmtree(env["SLIDEBANK_CLUSTER_TMP"], ignore_errors=True)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: ConfigError: RAY_AUTH_MODE='none' is not supported by "
        "`slidebank cluster up`; use token (the default) or disabled"
    )
    assert not state.exists()


def test_a_cluster_token_other_users_may_read_is_not_used(tmp_path, monkeypatch) -> None:
    from infra import local_cluster
    from infra.errors import ConfigError

    state = tmp_path / "cluster.json"
    state.write_text(
        json.dumps({"address": "127.0.0.1:6553", "auth_mode": "token", "token": "f" * 64})
    )
    state.chmod(0o644)
    monkeypatch.setenv("SLIDEBANK_CLUSTER_STATE", str(state))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv(
        "RAY_AUTH_MODE", "token"
    )  # restored after, whatever the code under test does
    with pytest.raises(ConfigError, match="other users may read or replace it"):
        local_cluster.take_cluster_auth("127.0.0.1:6553")
    assert "RAY_AUTH_TOKEN" not in os.environ
    assert local_cluster.take_cluster_auth("127.0.0.1:6554") is False, "another cluster: untouched"
