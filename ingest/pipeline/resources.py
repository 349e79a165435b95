"""Concurrency defaults derived from the cluster's resources (Ray start/connect: infra.ray_runtime)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ingest.pipeline.config import RunOptions

__all__ = [
    "DevicePlan",
    "FusedPlan",
    "Plan",
    "choose_engine",
    "gpus_to_request",
    "plan_device",
    "plan_fused",
    "plan_resources",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    readers: int
    encoder_actors: int
    gpus_per_encoder: float
    cpus_per_encoder: float
    cpus_per_reader: float
    cpus_per_writer: float
    writers: int = 1


_WRITER_CPU = 0.2


def plan_resources(options: RunOptions) -> Plan:
    """One encoder per GPU when there are GPUs; otherwise share the CPUs with readers.

    The CPU shares always add up to at most the cluster's CPUs: encoder actors hold theirs
    for the whole run, and a reader paused by backpressure still holds its share, so an
    over-committed plan (e.g. a 1-CPU machine) would deadlock instead of running slowly.
    Readers take fractional CPUs so Ray keeps them a separate operator from the encoders.
    """
    import ray

    resources = ray.cluster_resources()
    cpus = max(float(resources.get("CPU", 1)), 1.0)
    gpus = int(resources.get("GPU", 0))
    reader_cpu = 0.5 if cpus >= 2 else 0.3
    if gpus and options.device != "cpu":
        actors = options.encoder_actors or gpus
        reads = options.read_concurrency or max(int(cpus) - actors, 1)
        writers = _writers(actors)
        encoder_cpu = min(
            1.0, max((cpus - writers * _WRITER_CPU - reads * reader_cpu) / actors, 0.1)
        )
        return Plan(
            reads,
            actors,
            options.gpus_per_encoder or 1.0,
            encoder_cpu,
            reader_cpu,
            _WRITER_CPU,
            writers,
        )
    # Small machines: one single-threaded encoder per core (encoding is the heavy stage and
    # readers idle under backpressure; measured +30% tiles/s on 2 cores over one encoder).
    # From 4 CPUs up, half the cores, so that big models are not copied into every core.
    actors = options.encoder_actors or (int(cpus) // 2 if cpus >= 4 else int(cpus))
    # At least two readers from 2 CPUs up: with small slides the reader, not the encoder,
    # is the busy stage, and one reader per slide leaves a core idle between slides.
    reads = options.read_concurrency or max(int(cpus) - actors, 2 if cpus >= 2 else 1)
    writers = _writers(actors)
    encoder_cpu = min(1.0, (cpus - writers * _WRITER_CPU - reads * reader_cpu) / actors)
    if encoder_cpu < 0.1:
        from infra.errors import ConfigError

        raise ConfigError(
            f"{actors} encoder actors and {reads} readers do not fit in {cpus:g} CPUs"
        )
    return Plan(reads, actors, 0.0, encoder_cpu, reader_cpu, _WRITER_CPU, writers)


def _writers(encoder_actors: int) -> int:
    """One writer per four encoders: a fragment write is a few ms of CPU and one PUT."""
    return max(1, -(-encoder_actors // 4))


@dataclass(frozen=True)
class FusedPlan:
    actors: int
    cpus_per_actor: float
    threads_per_actor: int


def choose_engine(options: RunOptions) -> str:
    """``options.engine`` unless ``auto``: the GPU-resident engine when the cluster has GPUs
    (decoding, QC and stain on the device; pixels never cross the object store), the
    fused engine on CPU-only clusters, one node or many (fewest processes, and no tile
    crosses the network between a reader and an encoder). Both survive the loss of a node
    exactly (0 lost, 0 duplicated tiles: tests/test_multinode_ingest.py); Ray Data's pools
    (``dataset``) stay available on request.

    With ``max_gpus`` the GPUs need not be there yet: the choice waits for the first one
    the autoscaler brings: they are requested while the choice waits, and the device
    engine's actors beyond the first GPU are the demand that brings the rest.
    """
    if options.engine not in ("auto", "device"):
        return options.engine
    gpus = _gpus_for_run(options)
    if options.engine == "device" or gpus:
        return "device"
    return "fused"


def gpus_to_request(options: RunOptions) -> int:
    """How many GPUs this run asks the autoscaler for (0: it uses what is there)."""
    if (
        options.max_gpus is None
        or options.device == "cpu"
        or options.engine not in ("auto", "device")
    ):
        return 0
    return options.max_gpus


def _gpus_for_run(options: RunOptions) -> int:
    """GPUs present now; with ``max_gpus`` and none present, wait for the first to join."""
    from infra.autoscale import cluster_gpus, gpu_request, wait_for_gpus
    from infra.errors import GPUUnavailableError

    if options.device == "cpu":
        return 0
    gpus = cluster_gpus()
    wanted = gpus_to_request(options)
    if gpus or not wanted:
        return gpus
    try:
        with gpu_request(wanted):
            return wait_for_gpus(options.gpu_wait_s)
    except GPUUnavailableError:
        if not options.gpu_fallback_cpu:
            raise
        log.warning(
            "no GPU joined within %g s; running on CPUs as asked (--gpu-fallback-cpu)",
            options.gpu_wait_s,
        )
        return 0


@dataclass(frozen=True)
class DevicePlan:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    device: str  # what DeviceStage gets: "cpu" (NumPy) without GPUs
    planners_ahead: int  # planning tasks started ahead of the device actors


def plan_device(options: RunOptions, n_slides: int) -> DevicePlan:
    """One device actor per GPU (never more than slides); planning tasks run ahead on the
    CPUs, about one per core plus two per actor, so plans are ready when a device asks
    and finished plans (coordinates, a few MB for a large slide) do not pile up."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if options.device != "cpu" else 0
    cpus = max(int(resources.get("CPU", 1)), 1)
    # With GPUs on request, one actor per GPU asked for: those beyond the GPUs present
    # wait for theirs (the pool hands them slides once they answer).
    wanted = max(gpus, gpus_to_request(options)) if gpus else 0
    actors = max(1, min(options.encoder_actors or wanted or 1, n_slides))
    if gpus:
        return DevicePlan(
            actors, 1.0, options.gpus_per_encoder or 1.0, options.device, cpus + 2 * actors
        )
    # No GPU (tests, or engine="device" asked for on a CPU machine): the NumPy stand-in,
    # one actor holding one core; planning tasks get the rest.
    return DevicePlan(
        actors, 1.0 if cpus > actors else 0.5, 0.0, "cpu", max(cpus - actors, 1) + 2 * actors
    )


def plan_fused(options: RunOptions, n_slides: int) -> FusedPlan:
    """One single-threaded actor per core, never more actors than slides; with fewer
    slides than cores each actor's encoder gets the spare cores as threads (one slide
    on 2 cores: one actor, 2 torch threads, 8.4 vs 5 tiles/s for ViT-S here)."""
    import ray

    cpus = max(int(ray.cluster_resources().get("CPU", 1)), 1)
    actors = max(1, min(options.encoder_actors or cpus, n_slides))
    threads = max(1, cpus // actors)
    return FusedPlan(actors, min(float(threads), cpus / actors), threads)
