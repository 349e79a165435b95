"""Ray's fake autoscaling cluster on one machine, started and stopped without touching any
other Ray on it.

``ray.cluster_utils.AutoscalingCluster`` cannot be used as is here, for two reasons:

* its config template (``ray/autoscaler/_private/fake_multi_node/example.yaml``) is not in
  the Ray 2.60 wheel, so constructing one raises ``FileNotFoundError``;
* its ``start()`` and ``shutdown()`` run ``ray stop --force``, which kills every Ray
  process of this user: other test sessions' clusters on a shared machine included.

So this builds the same config (the template's fields, Ray's fake ``fake_multinode``
provider, the given worker node types) and starts the head as a
``ray.cluster_utils.Cluster`` node with ``autoscaling_config``: the head runs the real
autoscaler (monitor), which launches fake worker nodes (real raylets with fake
resources, e.g. ``{"GPU": 1}`` on a machine without one) when demand asks for them.
The provider starts those raylets from the monitor and leaves them running when the
head stops, so they are ended by process id afterwards: only processes this cluster
started.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests._multinode import _free_port, with_startup_retries

__all__ = ["autoscaling_cluster", "fake_autoscaling_config"]


def fake_autoscaling_config(
    head: dict[str, float], worker_types: dict[str, Any], gcs_address: str
) -> dict[str, Any]:
    """The fake provider's cluster config (the fields of Ray's ``example.yaml``)."""
    types = {
        **worker_types,
        "ray.head.default": {"resources": head, "node_config": {}, "max_workers": 0},
    }
    return {
        "cluster_name": "fake-autoscaling",
        "max_workers": sum(int(t.get("max_workers", 0)) for t in worker_types.values()),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        # gcs_address: the provider's default is port 6379, which another Ray may hold.
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "head_node_type": "ray.head.default",
        "available_node_types": types,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@contextmanager
def autoscaling_cluster(tmp: Path, head_cpus: int, worker_types: dict[str, Any]) -> Iterator[str]:
    """A head with ``head_cpus`` CPUs and no GPU, its autoscaler able to add ``worker_types``;
    yields the cluster address. The caller sets ``RAY_AUTH_MODE`` first (nodes inherit it).
    """
    import psutil
    import ray
    from ray.cluster_utils import Cluster

    if "RAY_AUTH_MODE" not in os.environ:
        raise RuntimeError("set RAY_AUTH_MODE explicitly before starting a test cluster")
    port = _free_port()
    address = f"{ray._private.services.get_node_ip_address()}:{port}"
    config = tmp / "autoscaling.json"
    config.write_text(
        json.dumps(fake_autoscaling_config({"CPU": head_cpus, "GPU": 0}, worker_types, address))
    )
    saved = {k: os.environ.get(k) for k in ("RAY_FAKE_CLUSTER", "AUTOSCALER_UPDATE_INTERVAL_S")}
    # The monitor inherits these: the fake provider refuses to run without the first; the
    # second makes the autoscaler look at demand every second instead of every 5 s.
    os.environ.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cluster = Cluster()
    try:
        with_startup_retries(
            lambda: cluster.add_node(
                num_cpus=head_cpus,
                num_gpus=0,
                gcs_server_port=port,
                autoscaling_config=str(config),
                include_dashboard=False,
            )
        )
        yield cluster.address
    finally:
        started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        ray.shutdown()
        cluster.shutdown()
        _end(started)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _end(processes: list[Any]) -> None:
    """Kill what is left of the processes this cluster started (the autoscaled raylets)."""
    import psutil

    for proc in processes:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(processes, timeout=10)
