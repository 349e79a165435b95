"""GPUs on an autoscaling Ray cluster whose GPU workers start at zero (KubeRay, ``ray up``).

A cluster's resources right after connecting say nothing about what it can have: a RayJob
starts with a head that has no GPU and a GPU worker group at ``minReplicas: 0``. Sizing
the run from ``ray.cluster_resources()`` then picks the CPU engine and never asks for a
GPU. :func:`gpu_request` asks the autoscaler for GPUs for the length of a run (the request
is sticky in Ray, so it is withdrawn at the end, or the GPU nodes would never scale
down), and :func:`wait_for_gpus` waits, bounded, until the first one has joined.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping

from infra.errors import GPUUnavailableError

__all__ = ["GPUUnavailableError", "cluster_gpus", "gpu_request", "wait_for_gpus"]

log = logging.getLogger(__name__)


def cluster_gpus(resources: Mapping[str, float] | None = None) -> int:
    """Whole GPUs the cluster has now (``resources``: a ``ray.cluster_resources()`` result)."""
    if resources is None:
        import ray

        resources = ray.cluster_resources()
    return int(resources.get("GPU", 0))


@contextlib.contextmanager
def gpu_request(n_gpus: int) -> Iterator[None]:
    """Ask the autoscaler for ``n_gpus`` one-GPU bundles for the block; nothing when 0.

    On a cluster without an autoscaler (an embedded Ray) the request is recorded and
    ignored. The request is withdrawn however the block ends.
    """
    if n_gpus <= 0:
        yield
        return
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"GPU": 1}] * n_gpus)
    log.info("asked the autoscaler for %d GPU(s)", n_gpus)
    try:
        yield
    finally:
        request_resources(bundles=[])


def wait_for_gpus(
    timeout_s: float,
    *,
    poll_s: float = 2.0,
    resources: Callable[[], Mapping[str, float]] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] | None = None,
) -> int:
    """Wait until the cluster has at least one GPU; returns how many it has then.

    Raises :class:`GPUUnavailableError` after ``timeout_s`` without one (spot capacity
    that never came, a NodePool at its GPU limit, a worker group that cannot schedule).
    """

    def read() -> int:
        return cluster_gpus(resources() if resources is not None else None)

    deadline = clock() + timeout_s
    gpus = read()
    while gpus < 1:
        if clock() >= deadline:
            raise GPUUnavailableError(
                f"no GPU joined the Ray cluster within {timeout_s:g} s of asking the autoscaler "
                "(spot shortage, GPU node pool at its limit, or a GPU worker group that cannot "
                "schedule); raise --gpu-wait, or pass --gpu-fallback-cpu to run on CPUs instead"
            )
        (sleep or time.sleep)(min(poll_s, max(deadline - clock(), 0.0)))
        gpus = read()
    return gpus
