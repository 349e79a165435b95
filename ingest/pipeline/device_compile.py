"""The device engine's ``--compile``: ``torch.compile`` with static shapes.

:class:`~ingest.pipeline.device_stage.DeviceStage` pads every step to ``encode_batch``
(a slide's last, short step included), so one input shape reaches the model: the graph
is compiled once (at the stage's warm-up on a GPU), never again for a slide's tail.
With one shape, CUDA graphs are safe to use, and on CUDA the model runs in
``reduce-overhead`` mode (CUDA graphs: one launch per forward instead of one per
kernel). Elsewhere (a CPU) the default mode: CUDA graphs need CUDA.

A CUDA graph writes each replay's output into the same memory, so a forward's output is
cloned before the next replay can overwrite it (after an out-of-memory halving, a step is
two forwards whose outputs are concatenated afterwards). Only a PyTorch encoder
compiles; the built-in weight-free encoder runs as it is (``"eager"``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

__all__ = ["BACKEND", "compile_mode", "compile_static"]

log = logging.getLogger(__name__)

#: torch.compile's backend (tests on a CPU use ``"eager"``: Dynamo's capture with static
#: shapes, without Inductor's code generation, tens of seconds there)
BACKEND = "inductor"


def compile_mode(device: str) -> str:
    """``reduce-overhead`` (CUDA graphs) on CUDA, ``default`` elsewhere."""
    return "reduce-overhead" if device == "cuda" else "default"


def compile_static(encoder: Any, device: str) -> str:
    """Run ``encoder``'s model through ``torch.compile(dynamic=False)`` from now on; the
    mode it runs in, or ``"eager"`` for an encoder with no PyTorch model."""
    backend = getattr(encoder, "_backend", None)
    module, prepared = getattr(backend, "_module", None), getattr(backend, "_runtime", None)
    if module is None or prepared is None or not prepared.torch_native:
        # the built-in weight-free encoder has nothing to compile; a PyTorch one should
        say = log.warning if hasattr(backend, "forward_tensor") else log.info
        say("encoder %s: no PyTorch model to compile here; it runs eager", encoder.name)
        return "eager"
    import torch

    mode = compile_mode(device)
    if BACKEND == "inductor":
        compiled = torch.compile(module, dynamic=False, mode=mode)
    else:  # mode is Inductor's
        compiled = torch.compile(module, dynamic=False, backend=BACKEND)

    def run(x: torch.Tensor) -> torch.Tensor:
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new forward, not a backward
            return compiled(x).clone()  # the graph's output memory is reused next replay
        return compiled(x)

    info = {**prepared.info, "runtime": "compile", "compile_mode": mode, "static_shapes": True}
    # the backend's runtime is what forward_tensor runs (under its autocast)
    backend._runtime = dataclasses.replace(prepared, runtime="compile", run=run, info=info)  # type: ignore[union-attr]
    backend.compiled = True  # type: ignore[union-attr]
    log.info("encoder %s compiled (mode %s, static shapes)", encoder.name, mode)
    return mode
