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

from typing import Any

__all__ = ["BACKEND", "compile_mode", "compile_static"]

#: torch.compile's backend (tests on a CPU use ``"eager"``: Dynamo's capture with static
#: shapes, without Inductor's code generation, tens of seconds there)
BACKEND = "inductor"


def compile_mode(device: str) -> str:
    """``reduce-overhead`` (CUDA graphs) on CUDA, ``default`` elsewhere."""
    return "reduce-overhead" if device == "cuda" else "default"


def compile_static(encoder: Any, device: str) -> str:
    """Run ``encoder``'s model through ``torch.compile(dynamic=False)`` from now on; the
    mode it runs in, or ``"eager"`` for an encoder with no PyTorch model."""
    return str(encoder.compile_static(compile_mode(device), BACKEND))
