"""Ray runtime start/connect and concurrency defaults derived from the cluster."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ingest.pipeline.config import RunOptions

__all__ = ["Plan", "connect", "plan_resources"]

log = logging.getLogger(__name__)


def connect(options: RunOptions, *, dashboard: bool = True) -> bool:
    """Start an embedded Ray (dashboard on localhost only) or join ``address``/RAY_ADDRESS.

    Returns True when this call started Ray (and so should shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    address = options.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        log.info("connected to Ray cluster at %s", address)
        return True
    ray.init(include_dashboard=dashboard, dashboard_host="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    return True


@dataclass(frozen=True)
class Plan:
    read_tasks: int
    encoder_actors: int
    gpus_per_encoder: float
    cpus_per_encoder: float


def plan_resources(options: RunOptions) -> Plan:
    """One encoder per GPU when there are GPUs; otherwise share the CPUs with readers."""
    import ray

    resources = ray.cluster_resources()
    cpus = max(int(resources.get("CPU", 1)), 1)
    gpus = int(resources.get("GPU", 0))
    if gpus and options.device != "cpu":
        actors = options.encoder_actors or gpus
        gpu_share = options.gpus_per_encoder or 1.0
        reads = options.read_concurrency or max(cpus - actors, 1)
        return Plan(reads, actors, gpu_share, 1.0)
    actors = options.encoder_actors or max(cpus // 2, 1)
    reads = options.read_concurrency or max(cpus - actors, 1)
    # Readers take half a CPU so Ray keeps them a separate operator from the encoders.
    return Plan(reads, actors, 0.0, 1.0)
