"""Typed ingestion configuration: what is hashed into provenance and what is not.

:class:`IngestConfig` holds every scientific parameter (resolution, tile size, tissue
and stain settings, encoder and its weights checksum, embedding dtype); its hash is the
``config_hash`` of every slide row, so a slide is skipped on a rerun only when all of
them match. :class:`RunOptions` holds how the run executes (cluster, concurrency,
batching), which never changes the result and is not hashed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from infra.errors import ConfigError
from infra.provenance import stable_hash
from ingest.tiling.config import TilingConfig
from ingest.tissue.config import TissueConfig

__all__ = ["PIPELINE_VERSION", "IngestConfig", "RunOptions"]

# 2: the configuration hash moved to infra.provenance's canonical form (compact JSON,
# kind and version included). Slides ingested under version 1 hash differently, so a
# rerun re-ingests them once; their old rows stay queryable under their old hash.
PIPELINE_VERSION = 2
# Reinhard needs a user reference image; the pipeline normalizes to the published H&E
# reference with Macenko, or not at all.
StainMethod = Literal["macenko", "none"]


@dataclass(frozen=True)
class IngestConfig:
    encoder: str = "handcrafted-he-v1"
    weights: str | None = None  # local file or hf-hub:...; checksum goes into the hash
    tiling: TilingConfig = field(default_factory=TilingConfig)
    tissue: TissueConfig = field(default_factory=TissueConfig)
    stain: StainMethod = "macenko"
    embedding_dtype: Literal["float16", "float32"] = "float32"

    def __post_init__(self) -> None:
        if self.stain not in ("macenko", "none"):
            raise ConfigError(f"stain must be macenko or none, got {self.stain!r}")
        if self.embedding_dtype not in ("float16", "float32"):
            raise ConfigError(
                f"embedding_dtype must be float16 or float32, got {self.embedding_dtype!r}"
            )

    @property
    def encoder_id(self) -> str:
        """The encoder's name as the store keys it (``timm:vit_x`` → ``timm-vit_x``)."""
        return re.sub(r"[^A-Za-z0-9._-]", "-", self.encoder).lstrip("._-")[:128]

    def to_dict(self, weights_sha256: str | None = None) -> dict[str, Any]:
        return {
            "pipeline_version": PIPELINE_VERSION,
            "encoder": self.encoder,
            "weights_sha256": weights_sha256,
            "tiling": self.tiling.config_hash(),
            "tissue": self.tissue.config_hash(),
            "stain": self.stain,
            "embedding_dtype": self.embedding_dtype,
        }

    def config_hash(self, weights_sha256: str | None = None) -> str:
        """16 hex digits over every parameter that changes the stored features."""
        return stable_hash("slidebank.ingest", PIPELINE_VERSION, self.to_dict(weights_sha256))


#: the default commit group (RunOptions.commit_every None): at least this many slides...
COMMIT_EVERY = 8
#: ...and at most one commit per this many seconds (see ingest.pipeline.collector)
COMMIT_FLOOR_S = 2.0


@dataclass(frozen=True)
class RunOptions:
    """Execution only (not hashed). ``None`` means: derive from the cluster's resources."""

    address: str | None = None
    tiles_per_batch: int = 64
    read_concurrency: int | None = None
    slides_per_task: int | None = None
    encoder_actors: int | None = None
    gpus_per_encoder: float | None = None
    #: slides per atomic store commit. ``None`` (the default): at least
    #: :data:`COMMIT_EVERY` slides and at most one commit per :data:`COMMIT_FLOOR_S`
    #: seconds, so many small slides share a commit; a number: exactly that many.
    commit_every: int | None = None
    force: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True
    run_tag: str | None = None
    #: compact the store after the run when the encoder's tiles table has more data
    #: fragments than this (each written batch is one; 0 disables). Many small fragments
    #: make every later scan and bag read slower; compaction merges them.
    compact_fragments: int = 256
    #: ``fused``: one read→encode→write actor per core (fewest processes; the default on
    #: CPU-only clusters); ``device``: CPU tasks plan, one actor per GPU reads, QCs,
    #: normalizes and encodes on the device (the default with GPUs; without one it runs
    #: the same code on NumPy); ``dataset``: Ray Data actor pools, on request;
    #: ``inprocess``: no Ray, the driver runs the fused stage itself (``auto`` picks it
    #: for small local jobs with no cluster: :mod:`ingest.pipeline.engines.inprocess`).
    engine: Literal["auto", "fused", "device", "dataset", "inprocess"] = "auto"
    #: ``bfloat16``: timm encoders on CPU run under bf16 autocast, as on CUDA (an execution
    #: choice like ``device``, not hashed: embeddings agree with float32 within the stated
    #: tolerance, see docs). Worth it on CPUs with AVX512-BF16 or AMX.
    cpu_dtype: Literal["float32", "bfloat16"] = "float32"
    #: how timm encoders run on CPU (:mod:`features.encoders.runtimes`): ``auto`` the
    #: fastest whose float32 output matches eager PyTorch within 1e-4 (measured once per
    #: node and model); ``torch`` eager; ``compile``, ``openvino``, ``onnxruntime``. An
    #: execution choice like ``device``, not hashed; the run record names what ran.
    runtime: Literal["auto", "torch", "compile", "openvino", "onnxruntime"] = "auto"
    #: per-slide bounds (issue 17): a slide still reading after this many seconds, or whose
    #: reader process holds more than this much resident memory, becomes a ``failed`` row.
    #: ``None`` memory: half the machine's memory divided among the readers of one node.
    #: The device engine applies both to its planning tasks and, again, to its device
    #: actor, where the ceiling is what the slide adds to the actor's memory at its start
    #: (the actor holds the model and the CUDA context).
    slide_time_budget_s: float | None = 1800.0
    reader_memory_gb: float | None = None
    #: GPUs to ask the autoscaler for (``device`` or ``auto`` engine, device not ``cpu``):
    #: on a cluster whose GPU workers start at zero, the run waits up to ``gpu_wait_s``
    #: for the first GPU instead of choosing the CPU engine, starts one device actor per
    #: GPU up to this many, and each starts work as its GPU joins. ``None``: only the
    #: GPUs present when the run starts.
    max_gpus: int | None = None
    gpu_wait_s: float = 900.0
    #: when no GPU joined within ``gpu_wait_s``: run on CPUs (``True``) or fail (default)
    gpu_fallback_cpu: bool = False
    #: tiles per encoder forward in the ``device`` engine, apart from ``tiles_per_batch``
    #: (the stored fragment size); ``None``: the device's default (256 on a GPU, 64 on a
    #: CPU: :func:`features.encoders.runtime.default_batch_size`). A batch that runs out
    #: of GPU memory is halved and retried, so too large costs speed, not slides.
    encode_batch: int | None = None
    #: the share of each GPU's memory CuPy's pool may hold in the ``device`` engine (the
    #: rest is PyTorch's: model and activations); see :mod:`infra.device_streams`
    device_pool_fraction: float = 0.25
    #: tiles per stored fragment in the ``device`` engine: its writer thread gathers a
    #: slide's encoded steps and writes one Lance fragment per this many tiles (and the
    #: slide's tail), so a large slide is a few fragments, not one per ``tiles_per_batch``
    device_fragment_tiles: int = 2048
    #: ``device`` engine: ``torch.compile`` the encoder with static shapes (every step
    #: padded to ``encode_batch``), with CUDA graphs (``reduce-overhead``) on CUDA only
    device_compile: bool = False
    #: CPUs each device actor asks Ray for, which its reader uses as decode threads;
    #: ``None``: min(4, CPUs per GPU on the GPU nodes) (1 without GPUs)
    cpus_per_device_actor: int | None = None

    def __post_init__(self) -> None:
        if self.tiles_per_batch < 1 or (self.commit_every is not None and self.commit_every < 1):
            raise ConfigError("tiles_per_batch and commit_every must be >= 1")
        for name in ("slide_time_budget_s", "reader_memory_gb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be a positive number or None, got {value!r}")
        if self.slides_per_task is not None and self.slides_per_task < 1:
            raise ConfigError(f"slides_per_task must be >= 1, got {self.slides_per_task}")
        if self.cpu_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"cpu_dtype must be float32 or bfloat16, got {self.cpu_dtype!r}")
        if self.encode_batch is not None and self.encode_batch < 1:
            raise ConfigError(f"encode_batch must be >= 1 or None, got {self.encode_batch}")
        if not 0 < self.device_pool_fraction <= 1:
            raise ConfigError(
                f"device_pool_fraction must be in (0, 1], got {self.device_pool_fraction!r}"
            )
        if self.device_fragment_tiles < 1:
            raise ConfigError(
                f"device_fragment_tiles must be >= 1, got {self.device_fragment_tiles}"
            )
        if self.cpus_per_device_actor is not None and self.cpus_per_device_actor < 1:
            raise ConfigError(
                f"cpus_per_device_actor must be >= 1 or None, got {self.cpus_per_device_actor}"
            )
        if self.max_gpus is not None and self.max_gpus < 1:
            raise ConfigError(f"max_gpus must be >= 1 or None, got {self.max_gpus}")
        if not self.gpu_wait_s > 0:
            raise ConfigError(
                f"gpu_wait_s must be a positive number of seconds, got {self.gpu_wait_s!r}"
            )
        if self.engine not in ("auto", "fused", "device", "dataset", "inprocess"):
            raise ConfigError(
                f"engine must be auto, fused, device, dataset or inprocess, got {self.engine!r}"
            )
        if self.runtime not in ("auto", "torch", "compile", "openvino", "onnxruntime"):
            raise ConfigError(
                f"runtime must be auto, torch, compile, openvino or onnxruntime, "
                f"got {self.runtime!r}"
            )

    def replace(self, **changes: Any) -> RunOptions:
        return dataclasses.replace(self, **changes)
