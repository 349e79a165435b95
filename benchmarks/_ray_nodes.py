"""Several Ray nodes on this machine, each its own ``ray start`` raylet (issue 27 item 4).

The way a user builds a small cluster by hand: ``ray start --head`` once, then
``ray start --address HEAD`` per worker, here all on 127.0.0.1. Each node gets its own
temp folder and its own ports (node manager, object manager, metrics export, agents), so
nothing collides with the others or with another Ray on the machine. Every process runs
with the embedded Ray's environment (:func:`infra.ray_runtime.ray_process_env`: cluster
mode off, so all servers bind loopback; token auth explicit) plus a cluster id, by which
:func:`stop` ends exactly these processes (never ``ray stop``, which ends every Ray of
this user on the machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.local_cluster import CLUSTER_ENV
from infra.ray_runtime import LOOPBACK, ray_process_env

__all__ = ["Node", "RayNodes", "exposed_sockets", "parse_metrics", "start_nodes", "stop"]

#: ports chosen here for every node (Ray's defaults are fixed numbers: two nodes on one
#: machine would fight over them)
_NODE_FLAGS = {
    "node_manager": "--node-manager-port",
    "object_manager": "--object-manager-port",
    "metrics": "--metrics-export-port",
    "agent_http": "--dashboard-agent-listen-port",
    "agent_grpc": "--dashboard-agent-grpc-port",
    "runtime_env_agent": "--runtime-env-agent-port",
}
_HEAD_FLAGS = {"gcs": "--port", "client": "--ray-client-server-port"}


@dataclass
class Node:
    name: str
    temp_dir: Path
    ports: dict[str, int]

    def scrape(self, timeout: float = 5.0) -> str:
        """This node's Prometheus text (its metrics agent exports the processes on it)."""
        url = f"http://{LOOPBACK}:{self.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())


@dataclass
class RayNodes:
    cluster_id: str
    address: str
    token: str | None
    nodes: list[Node] = field(default_factory=list)

    def driver_env(self) -> dict[str, str]:
        """Environment for a driver joining these nodes: their auth mode and token, and no
        slidebank local-cluster state file to take another token from."""
        env = ray_process_env("token" if self.token else "disabled", self.token)
        env["SLIDEBANK_CLUSTER_STATE"] = str(self.nodes[0].temp_dir / "no-local-cluster.json")
        return env


def _free_ports(n: int) -> list[int]:
    from infra.local_cluster import _free_ports

    return _free_ports(n)


def start_nodes(
    root: Path,
    n_nodes: int,
    *,
    num_cpus: int,
    object_store_mb: int,
    token: str | None,
    system_config: dict[str, Any] | None = None,
    timeout_s: float = 300.0,
) -> RayNodes:
    """A head plus ``n_nodes - 1`` worker raylets, ``num_cpus`` each; stops what it started
    if any node fails to start."""
    cluster_id = uuid.uuid4().hex
    names = [*_HEAD_FLAGS, *_NODE_FLAGS]
    head_ports = dict(zip(names, _free_ports(len(names)), strict=True))
    address = f"{LOOPBACK}:{head_ports['gcs']}"
    cluster = RayNodes(cluster_id, address, token)
    env = ray_process_env("token" if token else "disabled", token)
    env.update(
        {
            CLUSTER_ENV: cluster_id,  # how stop() finds exactly these processes
            # a raylet waits this long for its agent (default 30 s: too short on a loaded box)
            "RAY_agent_register_timeout_ms": "120000",
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),  # the driver's project root
        }
    )
    try:
        for i in range(n_nodes):
            name = "head" if i == 0 else f"worker-{i}"
            ports = (
                head_ports
                if i == 0
                else dict(zip(_NODE_FLAGS, _free_ports(len(_NODE_FLAGS)), strict=True))
            )
            node = Node(name, root / f"n{i}", ports)
            node.temp_dir.mkdir(parents=True, exist_ok=True)
            # the head: Ray's own `ray start`; workers: the same command with its loopback
            # guard passed (benchmarks/_ray_start.py)
            launcher = ["ray.scripts.scripts", "start"] if i == 0 else ["benchmarks._ray_start"]
            cmd = [
                sys.executable,
                "-m",
                *launcher,
                f"--node-ip-address={LOOPBACK}",
                f"--temp-dir={node.temp_dir}",
                f"--num-cpus={num_cpus}",
                "--num-gpus=0",
                f"--object-store-memory={object_store_mb * 2**20}",
                "--disable-usage-stats",
            ]
            if i == 0:
                cmd += ["--head", "--include-dashboard=false"]
                cmd += [f"{flag}={ports[key]}" for key, flag in _HEAD_FLAGS.items()]
                if system_config:
                    cmd.append(f"--system-config={json.dumps(system_config)}")
            else:
                cmd.append(f"--address={address}")
            cmd += [f"{flag}={ports[key]}" for key, flag in _NODE_FLAGS.items()]
            proc = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout)[-1500:]
                raise RuntimeError(f"`ray start` of {name} failed ({proc.returncode}): {tail}")
            cluster.nodes.append(node)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def exposed_sockets(cluster: RayNodes) -> tuple[int, list[tuple[str, int, str, int]]]:
    """(listening sockets of the cluster's processes, those not on loopback)."""
    from infra.local_cluster import _cluster_processes, _is_loopback, listening_sockets

    procs = _cluster_processes({"cluster_id": cluster.cluster_id, "address": cluster.address})
    sockets = listening_sockets(procs)
    return len(sockets), [s for s in sockets if not _is_loopback(s[2])]


def stop(cluster: RayNodes, timeout_s: float = 20.0) -> int:
    """End exactly this cluster's processes (found by its id); returns how many."""
    from infra.local_cluster import _cluster_processes, _stop

    procs = _cluster_processes({"cluster_id": cluster.cluster_id, "address": cluster.address})
    _stop(procs, timeout_s)
    return len(procs)


def parse_metrics(text: str, prefix: str = "ray_slidebank_") -> dict[str, float]:
    """Sum of every series per metric name (all tags together), for names with ``prefix``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        out[name] = out.get(name, 0.0) + value
    return out
