"""The runtimes themselves: export a pooled timm module once, run it on normalized batches.

Every runner takes what the eager module takes, a float32 (B, 3, S, S) tensor already
resized and normalized by :func:`features.encoders._torch_backend.preprocess`, and
returns (B, D). ONNX and OpenVINO graphs are exported with a dynamic batch axis, so one
artifact serves the small first batch, full batches and a slide's last partial one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import warnings
import weakref
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from features.encoders.runtimes import _cache

__all__ = [
    "PACKAGES",
    "Runner",
    "compile_runner",
    "export_onnx",
    "export_openvino",
    "onnxruntime_runner",
    "openvino_runner",
    "runtime_version",
]

log = logging.getLogger(__name__)

Runner = Callable[[torch.Tensor], torch.Tensor]

#: the distribution each runtime needs (the ``runtimes`` extra in pyproject.toml)
PACKAGES = {
    "torch": "torch",
    "compile": "torch",
    "openvino": "openvino",
    "onnxruntime": "onnxruntime",
}


def runtime_version(runtime: str) -> str | None:
    """The installed version of what ``runtime`` needs, None when it is missing."""
    package = PACKAGES[runtime]
    if importlib.util.find_spec(package) is None:
        return None
    if runtime == "onnxruntime" and importlib.util.find_spec("onnx") is None:
        return None  # torch's ONNX exporter writes the graph through the onnx package
    try:
        return version(package)
    except PackageNotFoundError:
        return None


class _Held:
    """A runtime's native objects (session, compiled model, infer request), alive as long
    as the runner that closes over this holder."""

    __slots__ = ("__weakref__", "objects")

    def __init__(self, *objects: Any) -> None:
        self.objects = objects


#: every live runner's native objects; pinned while a fork is under way (see _pin_for_fork)
_LIVE: weakref.WeakSet[_Held] = weakref.WeakSet()
_PINNED: list[_Held] = []


def _held(*objects: Any) -> _Held:
    held = _Held(*objects)
    _LIVE.add(held)
    return held


def _pin_for_fork() -> None:
    """Keep every runtime's native objects referenced from a global across a fork.

    A child forked to run Python before its exec (``subprocess`` with ``preexec_fn``, as
    Ray starts its processes from the thread booting it) clears the other threads' states;
    an exception in flight on one of them (Ctrl-C during the head start) can hold the last
    reference to an encoder. Its OpenVINO or ONNX Runtime objects would then be destroyed
    in the child, where their destructors wait on worker threads that were not forked: the
    child never reaches its exec and the parent waits for it forever."""
    _PINNED[:] = list(_LIVE)


def _unpin() -> None:
    _PINNED.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_pin_for_fork, after_in_parent=_unpin)


def _host(x: torch.Tensor) -> np.ndarray:
    # The preprocessed batch is channels-last; the exported graphs take dense NCHW.
    return np.ascontiguousarray(x.detach().float().cpu().numpy())


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Exporters warn about tracing and their own deprecations; none of it is the user's
    to act on, and the tolerance check decides whether the result is usable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---- ONNX Runtime ---------------------------------------------------------------------------
def export_onnx(module: nn.Module, example: torch.Tensor, folder: Path) -> dict[str, Any]:
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(folder / "model.onnx"),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return {"file": "model.onnx"}


def onnxruntime_runner(folder: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle worker threads would otherwise spin between batches, taking CPU from the reads.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )

    held = _held(session)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(held.objects[0].run(None, {"x": _host(x)})[0])

    return run


# ---- OpenVINO -------------------------------------------------------------------------------
def export_openvino(module: nn.Module, example: torch.Tensor, folder: Path) -> dict[str, Any]:
    import openvino as ov

    size = list(example.shape[1:])
    with _quiet_export(), torch.no_grad():
        model = ov.convert_model(
            module, example_input=example, input=[ov.PartialShape([-1, *size])]
        )
    # compress_to_fp16 defaults to True: float16 weights would cost the float32 numerics.
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
    return {"file": "model.xml"}


def openvino_runner(folder: Path, threads: int, dtype: str, cache: bool = True) -> Runner:
    """``cache``: compile through OpenVINO's blob cache in ``folder/compiled`` (keyed by the
    IR's path, the device and the config): the first process on a node compiles and
    writes it, later ones import it, about a second sooner before their first tile, with
    the same graph and numbers. The blob holds the weights again (disk: twice the IR)."""
    import openvino as ov

    core = ov.Core()
    config = {
        # f32 unless bf16 is asked for: on CPUs with AMX/AVX512-BF16 OpenVINO's default
        # inference precision is bf16, which would change the numbers behind our back.
        "INFERENCE_PRECISION_HINT": "bf16" if dtype == "bfloat16" else "f32",
        "INFERENCE_NUM_THREADS": str(threads),
        "NUM_STREAMS": "1",
        "PERFORMANCE_HINT": "LATENCY",
        # Pinned threads on a machine shared by several actors (and other jobs) would
        # stack on the same cores.
        "ENABLE_CPU_PINNING": "NO",
    }
    if not cache:
        compiled = core.compile_model(str(folder / "model.xml"), "CPU", config)
    else:
        core.set_property({"CACHE_DIR": str(folder / "compiled")})
        with _cache.locked(f"{folder.name}-compiled"):  # one writer per blob on this node
            compiled = core.compile_model(str(folder / "model.xml"), "CPU", config)
    held = _held(compiled.create_infer_request(), compiled, core)

    def run(x: torch.Tensor) -> torch.Tensor:
        request = held.objects[0]
        request.infer({0: _host(x)})
        return torch.from_numpy(np.array(request.get_output_tensor(0).data, copy=True))

    return run


# ---- torch.compile --------------------------------------------------------------------------
def compile_runner(module: nn.Module, cache_root: Path) -> Runner:
    """Inductor's generated code is cached under the runtime cache (unless the user points
    ``TORCHINDUCTOR_CACHE_DIR`` elsewhere): a later process recompiles from it in a
    fraction of the time. The batch axis is dynamic, so batch sizes do not recompile."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root / "inductor"))
    compiled = torch.compile(module, dynamic=True)

    def run(x: torch.Tensor) -> torch.Tensor:
        return compiled(x)

    return run
