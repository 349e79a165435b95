"""Encoder runtimes: the same timm model run by eager PyTorch, torch.compile, OpenVINO or ONNX
Runtime, at the same numbers.

Eager PyTorch is not the fastest way to run a ViT on a CPU: on one thread OpenVINO ran
ViT-S about 1.37× faster with embeddings within 1e-5 of eager's. :func:`prepare` turns an
encoder's pooled module into a runner for the runtime asked for:

* ``torch``: eager PyTorch (the reference).
* ``compile``: ``torch.compile`` (Inductor; needs a C compiler on CPU). Each process
  compiles (its generated code is cached, see below).
* ``openvino`` / ``onnxruntime``: the module exported once (OpenVINO IR, ONNX) with a
  dynamic batch axis, then run by that runtime with the worker's thread count.
* ``auto``: on CPU the fastest installed runtime whose float32 output matches eager within
  1e-4 (max abs on the embedding), measured once per node and model and cached
  (:mod:`._auto`); on CUDA eager PyTorch (the GPU path has not been measured against
  the others yet).

bfloat16 (``dtype="bfloat16"``) stays opt-in: torch and compile run under autocast,
OpenVINO with its bf16 inference precision; ``auto`` then needs a cosine of 0.999.

Exports are cached per (weights hash, spec, runtime and its version, dtype, input shape)
under ``~/.cache/slidebank/runtimes`` (``SLIDEBANK_RUNTIME_CACHE``; Inductor's cache in
its ``inductor`` folder), so a node pays an export once. A runtime that is not installed
(``pip install 'slidebank[runtimes]'``), fails to export the model, or disagrees with
eager is replaced by eager PyTorch with a warning, never an error; what ran is in the
encoder's provenance (``runtime``, ``runtime_requested``, ``runtime_fallback``).

The runtime is an execution choice, like the device, and not part of any config hash: the
float32 runtimes agree with eager within the tolerance above (tested per runtime in
``tests/test_encoder_runtimes.py``), as CPU and GPU rows agree within theirs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from infra.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from features.encoders.runtimes._prepare import Prepared

__all__ = ["RUNTIMES", "RuntimeName", "cache_root", "check_runtime", "prepare"]

log = logging.getLogger(__name__)

RuntimeName = Literal["auto", "torch", "compile", "openvino", "onnxruntime"]
RUNTIMES: tuple[str, ...] = get_args(RuntimeName)


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime


def cache_root() -> Path:
    """Where exports and measurements are kept (see the module docstring)."""
    from features.encoders.runtimes._cache import cache_root as root

    return root()


def prepare(
    runtime: str,
    module: nn.Module,
    spec: Any,
    *,
    device: str,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    dtype: str = "float32",
    threads: int = 1,
    batch_size: int = 64,
    weights_sha256: str | None = None,
) -> Prepared:
    """A runner for ``module`` (an encoder's pooled, eval-mode module) under ``runtime``;
    ``normalize`` is the encoder's preprocessing (uint8 tiles -> the module's input), used
    to make the fixed batch exports are checked and timed on (needed on CPU unless
    ``runtime`` is ``torch``)."""
    from features.encoders.runtimes._prepare import Context, prepare_explicit, torch_prepared

    check_runtime(runtime)
    if device != "cpu":
        return _prepare_gpu(runtime, module)
    if runtime == "torch" or normalize is None:
        if runtime != "torch":
            raise ConfigError(f"runtime {runtime!r} needs the encoder's preprocessing (normalize=)")
        return torch_prepared(Context(module, spec, "", dtype, 1, lambda t: t), runtime)
    ctx = Context(
        module, spec, weights_sha256 or _state_hash(module), dtype, max(1, threads), normalize
    )
    if runtime == "auto":
        from features.encoders.runtimes._auto import prepare_auto

        return prepare_auto(ctx, batch_size)
    return prepare_explicit(runtime, ctx)


def _prepare_gpu(runtime: str, module: nn.Module) -> Prepared:
    import torch

    from features.encoders.runtimes._prepare import Prepared

    info: dict[str, Any] = {
        "runtime": "torch",
        "runtime_requested": runtime,
        "runtime_version": torch.__version__,
    }
    if runtime == "compile":
        info["runtime"] = "compile"
        return Prepared("compile", torch.compile(module), True, info)
    if runtime in ("openvino", "onnxruntime"):
        why = f"{runtime} runs encoders on CPU only here"
        log.warning("encoder runtime %s: %s; running eager PyTorch on the GPU", runtime, why)
        info["runtime_fallback"] = why
    return Prepared("torch", module, True, info)


def _state_hash(module: nn.Module) -> str:
    """The weights' identity when no file names them (random weights): a hash of the
    tensors themselves, so a different seed or init never meets another's export."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes()
        )
    return "state-" + digest.hexdigest()
