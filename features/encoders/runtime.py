"""Running an encoder: one model per worker, batches of uint8 tiles in, float32 vectors out.

:class:`Encoder` is shaped to be a Ray actor: the constructor takes plain picklable arguments
and loads the model once; ``__call__`` takes a batch. It accepts a NumPy array
(B, H, W, 3) and returns (B, D), or a Ray Data batch (a mapping with an image column) and
returns it with an embedding column added, so it can be passed straight to
``Dataset.map_batches(Encoder, fn_constructor_kwargs={...}, concurrency=..., num_gpus=...)``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, overload

import numpy as np

from features.encoders.registry import get_encoder_spec
from features.encoders.spec import EncoderSpec
from features.encoders.weights import WeightsSource, resolve_weights, sha256_file
from infra import metrics
from infra.errors import ConfigError, WeightsError

__all__ = ["DEFAULT_BATCH_SIZE", "Encoder", "default_batch_size", "describe_encoder"]

logger = logging.getLogger(__name__)

DeviceChoice = Literal["auto", "cpu", "cuda"]

#: tiles per forward pass where the caller does not choose, by device: a GPU needs large
#: batches to approach its peak (ViT-L/16 bf16 on an 80 GB card: 256, about 1 GB of
#: activations), a CPU gains nothing from more than 64. Independent of how many tiles
#: go into one stored fragment.
DEFAULT_BATCH_SIZE = {"cpu": 64, "cuda": 256}


def default_batch_size(device: str) -> int:
    """The forward batch for ``device`` (``cpu``/``cuda``; anything else: the CPU's)."""
    return DEFAULT_BATCH_SIZE.get(device, DEFAULT_BATCH_SIZE["cpu"])


def _check_tiles(tiles: Any) -> np.ndarray:
    if isinstance(tiles, np.ndarray) and tiles.dtype == object:
        tiles = np.stack(list(tiles))  # Ray Data hands ragged image columns as object arrays
    array = np.asarray(tiles)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ConfigError(
            f"tiles must be uint8 RGB (B, H, W, 3), got {array.dtype} {tuple(array.shape)}"
        )
    return array


def describe_encoder(
    encoder: str | EncoderSpec | None, weights: str | os.PathLike[str] | None = None
) -> tuple[EncoderSpec, str | None]:
    """The spec and the weight file's sha256 (None for built-in or random weights) without
    building the model: what a run's configuration hash needs, in milliseconds rather
    than the seconds a model build takes, so planning can start while the model loads."""
    spec = encoder if isinstance(encoder, EncoderSpec) else get_encoder_spec(encoder)
    if spec.is_builtin:
        if weights is not None and weights != "random":
            raise WeightsError(f"encoder {spec.name!r} is built in and takes no weights")
        return spec, None
    if weights == "random":
        return spec, None
    return spec, sha256_file(resolve_weights(spec, weights).path)


class Encoder:
    """A ready-to-run encoder (see module docstring).

    Args:
        encoder: a registry name (``"uni"``, ``"timm:resnet50"``...) or an :class:`EncoderSpec`;
            the weight-free default when ``None``.
        weights: a local weight file, or ``"hf-hub:owner/repo[/file]"``; ``None`` to resolve
            it (env, weights dir, hub cache, hub); ``"random"`` for random weights
            (benchmarks and tests only: logged).
        device: ``"auto"`` (CUDA when torch sees a GPU), ``"cpu"`` or ``"cuda"``.
        batch_size: tiles per forward pass; larger batches are split, smaller ones run as is.
        compile: wrap the model in ``torch.compile`` (worth it for long runs on a GPU).
        expected_sha256: refuse a weight file whose checksum differs.
        num_threads: torch CPU threads for this worker (avoid oversubscribing a node that
            runs several CPU actors).
        image_key / output_key: column names when called with a Ray Data batch.
        seed: initialisation seed for ``weights="random"``.
        cpu_dtype: ``bfloat16`` runs a timm model on CPU under bf16 autocast (as CUDA runs
            by default); embeddings then agree with float32 to a cosine of about 0.999.
        runtime: how a timm model runs (:mod:`features.encoders.runtimes`): ``torch``
            (eager), ``compile``, ``openvino``, ``onnxruntime``, or ``auto`` (on CPU the
            fastest that agrees with eager within 1e-4, measured once per node and cached).
            A missing or failing runtime falls back to eager with a warning;
            ``provenance["runtime"]`` says what ran.
    """

    def __init__(
        self,
        encoder: str | EncoderSpec | None = None,
        *,
        weights: str | os.PathLike[str] | None = None,
        device: DeviceChoice = "auto",
        batch_size: int = 64,
        compile: bool = False,
        expected_sha256: str | None = None,
        num_threads: int | None = None,
        image_key: str = "image",
        output_key: str = "embedding",
        seed: int = 0,
        cpu_dtype: str = "float32",
        runtime: str = "torch",
    ) -> None:
        from features.encoders.runtimes import check_runtime

        check_runtime(runtime)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = encoder if isinstance(encoder, EncoderSpec) else get_encoder_spec(encoder)
        self.batch_size = batch_size
        self.image_key, self.output_key = image_key, output_key
        self._sha256: str | None = None
        source = self._weights(weights, expected_sha256)
        self._backend: _Backend
        if self.spec.pooling == "handcrafted":
            self._backend = _HandcraftedBackend()
        else:
            from features.encoders._torch_backend import TorchBackend

            self._backend = TorchBackend(
                self.spec,
                source.path if source else None,
                device=device,
                compile=compile,
                seed=seed,
                num_threads=num_threads,
                cpu_dtype=cpu_dtype,
                runtime=runtime,
                batch_size=batch_size,
                weights_sha256=self._sha256,
            )
        self.provenance = self._provenance(source)
        logger.info("encoder %s ready on %s", self.spec.name, self.device)

    def _weights(self, weights: Any, expected_sha256: str | None) -> WeightsSource | None:
        if self.spec.is_builtin:
            if weights is not None and weights != "random":
                raise WeightsError(f"encoder {self.spec.name!r} is built in and takes no weights")
            return None
        if weights == "random":
            logger.warning(
                "encoder %s uses RANDOM weights: embeddings carry no meaning", self.spec.name
            )
            return None
        source = resolve_weights(self.spec, weights)
        self._sha256 = sha256_file(source.path)
        if expected_sha256 is not None and self._sha256 != expected_sha256.lower():
            raise WeightsError(
                f"{source.path.name}: sha256 {self._sha256} differs from expected {expected_sha256}"
            )
        return source

    def _provenance(self, source: WeightsSource | None) -> dict[str, Any]:
        weights_info: dict[str, Any]
        if self.spec.is_builtin:
            weights_info = {"origin": "built-in", "file": None, "sha256": None}
        elif source is None:
            weights_info = {"origin": "random", "file": None, "sha256": None}
        else:
            weights_info = {
                "origin": source.origin,
                "file": Path(source.path).name,  # never the full path: it may name a user
                "sha256": self._sha256,
                "hub_repo": source.hub_repo,
            }
        return {
            "encoder": self.spec.name,
            "family": self.spec.family,
            "embed_dim": self.spec.embed_dim,
            "spec_fingerprint": self.spec.fingerprint(),
            "pooling": self.spec.pooling,
            "input_size": self.spec.input_size,
            "weights": weights_info,
            **self._backend.describe(),
        }

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    @property
    def device(self) -> str:
        return self._backend.device

    def __repr__(self) -> str:
        return f"Encoder({self.spec.name!r}, dim={self.embed_dim}, device={self.device!r})"

    def compile_static(self, mode: str, backend: str = "inductor") -> str:
        """Compile the model for one input shape from now on (see the device engine's
        ``--compile``); the mode it runs in, or ``"eager"`` when there is no PyTorch model
        to compile (the weight-free encoder, an exported runtime)."""
        compile_static = getattr(self._backend, "compile_static", None)
        if compile_static is None:  # the weight-free encoder: nothing to compile
            logger.info("encoder %s: no PyTorch model to compile here; it runs eager", self.name)
            return "eager"
        if not compile_static(mode, backend):  # a PyTorch encoder on an exported runtime
            logger.warning("encoder %s: its runtime is not PyTorch; it runs eager", self.name)
            return "eager"
        logger.info("encoder %s compiled (mode %s, static shapes)", self.name, mode)
        return mode

    def encode(self, tiles: np.ndarray) -> np.ndarray:
        """Embeddings (B, D) float32 for uint8 RGB tiles (B, H, W, 3)."""
        array = _check_tiles(tiles)
        if len(array) == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        out = self._in_batches(self._backend.run, array, np.concatenate)
        out = out.astype(np.float32, copy=False)
        if out.shape != (len(array), self.embed_dim):
            raise ConfigError(
                f"encoder {self.name} produced {out.shape}, spec declares dim {self.embed_dim}"
            )
        return out

    def encode_device(self, tiles: Any) -> np.ndarray:
        """:meth:`embed_device`, copied to the host."""
        if not hasattr(self._backend, "forward_tensor"):  # a host encoder
            from infra.arrays import asnumpy

            return self.encode(asnumpy(tiles))
        out = self.embed_device(tiles)
        if hasattr(out, "detach"):  # torch in, torch out
            return out.detach().cpu().numpy()
        from infra.arrays import asnumpy

        return asnumpy(out, what="embeddings")

    def embed_device(self, tiles: Any) -> Any:
        """Embeddings (B, D) float32 of uint8 tiles (B, H, W, 3) that live on a device, left
        there: a CuPy array (or any DLPack producer, NumPy and the strict stand-in
        included) becomes a torch tensor without a copy, goes straight to the model (bf16,
        channels-last on CUDA) in forwards of ``batch_size`` tiles (halved for a batch that runs out of device memory: see
        :meth:`_in_batches`), and the embeddings come
        back into the tiles' array module the same way. The caller copies them to the host
        when it wants, once (the device engine: with the batch's QC flags).

        The weight-free encoder computes on the host, so its tiles are copied there."""
        from infra.arrays import array_module, asnumpy, to_device

        xp = array_module(tiles)
        forward = getattr(self._backend, "forward_tensor", None)
        if forward is None:
            return to_device(xp, self.encode(asnumpy(tiles, what="pixels")), what="embeddings")
        import torch

        tensor = tiles if isinstance(tiles, torch.Tensor) else torch.from_dlpack(tiles)
        if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3:
            raise ConfigError(
                f"tiles must be uint8 RGB (B, H, W, 3), got {tensor.dtype} {tuple(tensor.shape)}"
            )
        if len(tensor) == 0:
            out = torch.zeros((0, self.embed_dim), dtype=torch.float32, device=tensor.device)
        else:
            out = self._in_batches(forward, tensor, torch.cat)
        if tuple(out.shape) != (len(tensor), self.embed_dim):
            raise ConfigError(
                f"encoder {self.name} produced {tuple(out.shape)}, spec declares "
                f"dim {self.embed_dim}"
            )
        return out if isinstance(tiles, torch.Tensor) else xp.from_dlpack(out)

    def _in_batches(
        self, forward: Callable[[Any], Any], tiles: Any, concat: Callable[[list[Any]], Any]
    ) -> Any:
        """``forward`` over ``tiles`` in slices of ``batch_size``, concatenated. A slice that
        runs out of device memory frees the caches and is run again at half the batch size
        (down to 1, which re-raises); the smaller size is kept for later batches, since what
        did not fit once will not fit next time. Inference is per tile, so the embeddings
        are the unsplit batch's: a batch too large for the card costs speed, not the slide."""
        parts, start = [], 0
        while start < len(tiles):
            chunk = tiles[start : start + self.batch_size]
            try:
                parts.append(forward(chunk))
                start += len(chunk)
                continue
            except Exception as exc:
                if not _is_device_oom(exc) or len(chunk) == 1:
                    raise
                reason = str(exc).split("\n", 1)[0]
            # Out of the except block: the exception's frames, which hold the failed
            # forward's activations, are gone, so freeing the caches frees them too.
            self._halve_batch(len(chunk), reason)
        return parts[0] if len(parts) == 1 else concat(parts)

    def _halve_batch(self, failed: int, reason: str) -> None:
        _free_device_caches()
        metrics.record_encode_oom_retry()
        self.batch_size = (failed + 1) // 2
        logger.warning(
            "encoder %s ran out of device memory on %d tiles (%s); retrying at %d",
            self.spec.name,
            failed,
            reason,
            self.batch_size,
        )

    @overload
    def __call__(self, batch: np.ndarray) -> np.ndarray: ...
    @overload
    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]: ...

    def __call__(self, batch: np.ndarray | Mapping[str, Any]) -> np.ndarray | dict[str, Any]:
        if isinstance(batch, Mapping):
            if self.image_key not in batch:
                raise ConfigError(f"batch has no {self.image_key!r} column: {sorted(batch)}")
            out = {k: v for k, v in batch.items() if k != self.image_key}  # pixels stop here
            out[self.output_key] = self.encode(batch[self.image_key])
            return out
        return self.encode(batch)


def _is_device_oom(exc: BaseException) -> bool:
    # torch is imported by every encoder that can run out of device memory; the
    # weight-free one never imports it, and need not for this check.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


def _free_device_caches() -> None:
    """Hand the blocks torch and CuPy cache back, so the retried half can allocate them.
    CuPy only when something already imported it (importing it here costs seconds)."""
    import torch

    from infra.arrays import cuda_present

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    cupy = sys.modules.get("cupy")
    if cupy is not None and cuda_present():  # an installed CuPy without a device raises
        cupy.get_default_memory_pool().free_all_blocks()


class _Backend(Protocol):
    """What Encoder needs from a backend: a device name, one batch in, vectors out."""

    @property
    def device(self) -> str: ...

    def run(self, tiles: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


class _HandcraftedBackend:
    device = "cpu"

    def run(self, tiles: np.ndarray) -> np.ndarray:
        from features.encoders.handcrafted import handcrafted_features

        return handcrafted_features(tiles)

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"device": "cpu", "dtype": "float32", "scikit-image": version("scikit-image")}
