"""A real multi-node Ray cluster on one machine, for the multi-node tests.

``ray.cluster_utils.Cluster`` starts a head node and separate raylets (each its own
process tree, object store and metrics endpoint), so a node can be killed as a whole,
which a single ``ray.init`` cannot show. Shaped like the cloud deployment in
``infra/deploy``: the head takes no work (``num_cpus=0``, the driver and its commits
live there), workers have 1 CPU each, and token authentication is on, with one token
shared by every node and the driver, as KubeRay injects ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``.

Each worker node gets its own ``SLIDEBANK_SCRATCH`` (as a cloud node points it at its local
NVMe) so the slides its readers stage from S3 land in that node's own scratch folder: a
per-node disk, as on separate machines, and a way to see which node is reading.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.environ import patched_environ

__all__ = ["MultiNodeCluster", "auth_env", "multinode_cluster", "with_startup_retries"]

log = logging.getLogger(__name__)

# Metrics reach each node's Prometheus endpoint every second instead of every 10 s.
_SYSTEM_CONFIG = {"metrics_report_interval_ms": 1000}


@contextmanager
def auth_env(mode: str = "token") -> Iterator[None]:
    """Set ``RAY_AUTH_MODE`` (and a fresh random token for ``token``) for this process and
    every node started under it; restore the environment afterwards.

    Explicit on purpose: Ray >= 2.59 turns token auth on for a new local cluster when the
    variable is unset and writes ``~/.ray/auth_token``; tests must not depend on that
    default nor leave a token in the home folder. Ray reads the mode once, when
    ``ray._raylet`` is imported (test collection already did): the refresh below is the
    one Ray's own ``_enable_token_auth`` does, plus dropping a cached token.
    """
    token = secrets.token_hex(32) if mode == "token" else None
    try:
        with patched_environ({"RAY_AUTH_MODE": mode, "RAY_AUTH_TOKEN": token}):
            _refresh_ray_auth()
            yield
    finally:
        _refresh_ray_auth()  # Ray's cached view of the restored environment


def _refresh_ray_auth() -> None:
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@dataclass
class MultiNodeCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    scratch_root: Path
    workers: dict[str, Any] = field(default_factory=dict)  # node id -> ray._private.node.Node
    scratch: dict[str, Path] = field(default_factory=dict)  # node id -> its scratch root
    metrics_ports: dict[str, int] = field(default_factory=dict)  # node id -> Prometheus port

    def add_worker(self, name: str, num_cpus: int = 1) -> str:
        """Start one more worker raylet; returns its node id."""
        tmp = self.scratch_root / name
        tmp.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        node = self.cluster.add_node(
            num_cpus=num_cpus, env_vars={"SLIDEBANK_SCRATCH": str(tmp)}, metrics_export_port=port
        )
        self.cluster.wait_for_nodes()
        self.workers[node.node_id] = node
        self.scratch[node.node_id] = tmp
        self.metrics_ports[node.node_id] = port
        return node.node_id

    def kill_worker(self, node_id: str) -> None:
        """Kill the node's raylet and every process on it at once (no graceful drain)."""
        node = self.workers.pop(node_id)
        self.cluster.remove_node(node, allow_graceful=False)

    def staging_processes(self, node_id: str) -> list[Path]:
        """One ``p<pid>`` folder per process that staged a slide on this node (the staged
        files themselves are deleted once read; the folders stay)."""
        return sorted(p for p in self.scratch[node_id].glob("p*") if p.is_dir())

    def staged_files(self, node_id: str) -> list[Path]:
        """Slides being read on this node right now."""
        return [p for p in self.scratch[node_id].glob("p*/*") if p.is_file()]

    def scrape(self, node_id: str) -> str:
        """The node's Prometheus text (``"head"`` for the head node, where the driver's
        own metrics, e.g. finished slides, are exported)."""
        url = f"http://127.0.0.1:{self.metrics_ports[node_id]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()


@contextmanager
def multinode_cluster(scratch_root: Path, n_workers: int = 2) -> Iterator[MultiNodeCluster]:
    """Head (0 CPUs) plus ``n_workers`` 1-CPU worker raylets, the driver connected.

    The caller sets ``RAY_AUTH_MODE`` first (see :func:`auth_env`): nodes inherit it.
    """
    import ray
    from ray.cluster_utils import Cluster

    if "RAY_AUTH_MODE" not in os.environ:
        raise RuntimeError("set RAY_AUTH_MODE explicitly before starting a test cluster")
    head_port = _free_port()
    cluster = Cluster()
    handle = MultiNodeCluster(cluster, scratch_root)
    handle.metrics_ports["head"] = head_port
    try:
        with_startup_retries(
            lambda: cluster.add_node(
                num_cpus=0,
                include_dashboard=False,
                _system_config=_SYSTEM_CONFIG,
                metrics_export_port=head_port,
            )
        )
        for i in range(n_workers):
            with_startup_retries(lambda i=i: handle.add_worker(f"worker-{i}"))
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        yield handle
    finally:
        ray.shutdown()
        cluster.shutdown()


def with_startup_retries(start: Any, attempts: int = 3) -> Any:
    """Run ``start`` (a Ray node start) again when Ray gives up waiting for the raylet.

    Ray waits a fixed 30 s for a new raylet to register; on a loaded shared machine that
    is sometimes too short, and the node start fails although nothing is wrong. Any other
    error is raised at once.
    """
    # The raylet's own wait for its metrics agent (default 30 s) is as tight.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except Exception as exc:
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            log.warning("Ray node start timed out (attempt %d of %d); retrying", attempt, attempts)
            time.sleep(5)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float, step: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass (no assertion on time:
    callers assert on the result)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
