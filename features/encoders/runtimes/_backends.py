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
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"x": _host(x)})[0])

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


def openvino_runner(folder: Path, threads: int, dtype: str) -> Runner:
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
    compiled = core.compile_model(core.read_model(str(folder / "model.xml")), "CPU", config)
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
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
