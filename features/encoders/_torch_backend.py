"""The torch side of :class:`~features.encoders.runtime.Encoder`: preprocessing and inference.

Tiles travel as uint8 (a quarter of float32's bytes) through a reusable pinned host buffer,
so the host-to-device copy is asynchronous; resizing and normalization happen on the device.
On CUDA the model runs under ``torch.autocast`` in the spec's dtype (bf16 by default) with
channels_last memory, its weights cast to that dtype once at load (:func:`weight_dtype`), so
autocast does not re-cast every fp32 weight on every forward; on CPU it runs in float32, or under bf16 autocast when asked
(``cpu_dtype="bfloat16"``: worth it on CPUs with native bf16 matrix units, AVX512-BF16 or
AMX). Everything is under ``torch.inference_mode``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from features.encoders._build import build_model, load_weights_into, pool_tokens
from features.encoders.spec import EncoderSpec
from features.encoders.weights import load_state_dict
from infra.errors import ConfigError

__all__ = ["TorchBackend", "cpu_has_native_bf16", "preprocess", "resolve_device", "weight_dtype"]

logger = logging.getLogger(__name__)


def resolve_device(choice: str) -> torch.device:
    """``auto`` -> CUDA when torch sees one (and SLIDEBANK_DISABLE_GPU is not 1), else CPU."""
    usable = torch.cuda.is_available() and os.environ.get("SLIDEBANK_DISABLE_GPU") != "1"
    if choice == "auto":
        return torch.device("cuda" if usable else "cpu")
    if choice == "cuda" and not usable:
        raise ConfigError("device='cuda' requested but torch sees no usable CUDA GPU")
    if choice not in {"cpu", "cuda"}:
        raise ConfigError(f"device must be auto, cpu or cuda, got {choice!r}")
    return torch.device(choice)


def weight_dtype(device_type: str, autocast_dtype: torch.dtype | None) -> torch.dtype | None:
    """The dtype to cast a model's weights to once at load, or None to keep float32.

    On CUDA under half-precision autocast: autocast would cast each fp32 weight to the
    autocast dtype on every forward (ViT-L: 600 MB of casts per batch); weights already in
    it are used as they are, and the ops autocast keeps in fp32 (layer norm, softmax)
    still upcast their inputs. Not on CPU: there the model may go to another runtime
    (OpenVINO, ONNX Runtime) that is exported from, and checked against, fp32 weights."""
    if device_type == "cuda" and autocast_dtype in (torch.bfloat16, torch.float16):
        return autocast_dtype
    return None


class _Pooled(nn.Module):
    """forward_features + pooling as one module, so torch.compile sees the whole graph."""

    def __init__(self, model: nn.Module, pooling: str) -> None:
        super().__init__()
        self.model, self.pooling = model, pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_tokens(self.model, self.model.forward_features(x), self.pooling)  # type: ignore[operator]


def _center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    if height < size or width < size:
        raise ConfigError(f"cannot crop {size}px from a {height}x{width} image")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    # antialias matches PIL/torchvision when downsampling; bicubic can overshoot 0..255.
    out = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)
    return out.clamp_(0.0, 255.0)


def preprocess(
    tiles: torch.Tensor, spec: EncoderSpec, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """uint8 (B, H, W, 3) on any device -> normalized float (B, 3, S, S), channels_last.

    ``scale`` = 1 / (255 std) and ``shift`` = -mean / std, shaped (1, 3, 1, 1), so
    normalization is one fused multiply-add on 0..255 values.
    """
    # A permuted NHWC tensor already has channels_last strides: no copy until the float cast.
    x = tiles.permute(0, 3, 1, 2).float()
    size = spec.input_size
    height, width = x.shape[-2:]
    if spec.resize_policy == "resize":
        x = _resize(x, (size, size), spec.interpolation)
    elif spec.resize_policy == "resize_crop":
        target = int(spec.resize_size or size)
        factor = target / min(height, width)
        resized = (max(target, round(height * factor)), max(target, round(width * factor)))
        x = _center_crop(_resize(x, resized, spec.interpolation), size)
    elif (height, width) != (size, size):
        raise ConfigError(f"{spec.name} takes {size}x{size} tiles, got {height}x{width}")
    x = torch.addcmul(shift, x, scale)
    return x.contiguous(memory_format=torch.channels_last)


def _host_tensor(tiles: np.ndarray) -> torch.Tensor:
    # torch.from_numpy shares memory and warns on read-only arrays (e.g. from Arrow): copy those.
    array = np.ascontiguousarray(tiles)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class _PinnedStager:
    """Copies NumPy batches into one reused pinned buffer, then to the GPU asynchronously."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffer: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None

    def __call__(self, tiles: np.ndarray) -> torch.Tensor:
        if (
            self._buffer is None
            or tuple(self._buffer.shape[1:]) != tiles.shape[1:]
            or len(self._buffer) < len(tiles)
        ):
            self._buffer = torch.empty(tiles.shape, dtype=torch.uint8, pin_memory=True)
        elif self._copied is not None:
            self._copied.synchronize()  # the previous async copy must finish reading it
        staged = self._buffer[: len(tiles)]
        # One host copy, straight into pinned memory (read-only or strided input is fine).
        np.copyto(staged.numpy(), tiles)
        out = staged.to(self.device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        return out


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (Linux: the cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _model_with(spec: EncoderSpec, state: dict[str, Any]) -> nn.Module:
    """The spec's model holding ``state`` (loaded strictly: every parameter and buffer).

    Built on the meta device and given uninitialised storage, so no random initialisation
    is drawn only to be overwritten (about a second of CPU for ViT-S, before the first
    tile). A model with state no checkpoint holds (non-persistent buffers such as rotary
    tables, plain tensor attributes) is built and initialised as usual."""
    model = build_model(spec, device="meta")
    if _has_unsaved_state(model):
        model = build_model(spec, device="cpu")
    else:
        model = model.to_empty(device="cpu")
    load_weights_into(model, spec, state)
    return model


def _has_unsaved_state(model: nn.Module) -> bool:
    for module in model.modules():
        if module._non_persistent_buffers_set:
            return True
        if any(isinstance(value, torch.Tensor) for value in vars(module).values()):
            return True
    return False


class TorchBackend:
    """One timm model on one device (see module docstring)."""

    def __init__(
        self,
        spec: EncoderSpec,
        weights: Path | None,
        *,
        device: str = "auto",
        compile: bool = False,
        seed: int = 0,
        num_threads: int | None = None,
        cpu_dtype: str = "float32",
        runtime: str = "torch",
        batch_size: int = 64,
        weights_sha256: str | None = None,
    ) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        if cpu_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"cpu_dtype must be float32 or bfloat16, got {cpu_dtype!r}")
        self.spec = spec
        self._device = resolve_device(device)
        cuda = self._device.type == "cuda"
        if weights is not None:
            model = _model_with(spec, load_state_dict(weights))
        else:
            # Seeded in a forked RNG: random-weight models are reproducible and the
            # caller's global RNG state is left alone.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_model(spec, device="cpu")
        self._autocast_dtype = self._choose_autocast(cuda, cpu_dtype)
        model = model.to(self._device, dtype=weight_dtype(self._device.type, self._autocast_dtype))
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        module: nn.Module = _Pooled(model, spec.pooling).eval()
        self._module = module  # what the runtime runs (and its weights' dtype)
        std = torch.tensor(spec.std, dtype=torch.float32, device=self._device).view(1, 3, 1, 1)
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=self._device).view(1, 3, 1, 1)
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std
        from features.encoders.runtimes import prepare

        # compile=True is the older spelling of runtime="compile"
        self._runtime = prepare(
            "compile" if compile else runtime,
            module,
            spec,
            device=self._device.type,
            dtype=cpu_dtype,
            normalize=lambda t: preprocess(t, spec, self._scale, self._shift),
            threads=torch.get_num_threads(),
            batch_size=batch_size,
            weights_sha256=weights_sha256,
        )
        self.compiled = self._runtime.runtime == "compile"
        self._stage = _PinnedStager(self._device) if cuda else None

    def _choose_autocast(self, cuda: bool, cpu_dtype: str) -> torch.dtype | None:
        if cuda:
            return getattr(torch, self.spec.dtype) if self.spec.dtype != "float32" else None
        dtype = torch.bfloat16 if cpu_dtype == "bfloat16" else None
        if dtype is not None and not cpu_has_native_bf16():
            logger.warning(
                "cpu_dtype=bfloat16 on a CPU without AVX512-BF16/AMX: bf16 is "
                "emulated there and usually slower than float32"
            )
        return dtype

    def compile_static(self, mode: str, backend: str = "inductor") -> bool:
        """Run the model through ``torch.compile(dynamic=False)`` from now on: the caller
        feeds one input shape (the device engine pads a slide's last step). ``mode``
        ``reduce-overhead`` uses CUDA graphs, whose output memory the next replay reuses,
        so each output is cloned. False when this runtime has no PyTorch module to compile
        (an exported OpenVINO/ONNX graph runs as it is)."""
        if not self._runtime.torch_native:
            return False
        if backend == "inductor":
            compiled = torch.compile(self._module, dynamic=False, mode=mode)
        else:  # e.g. "eager": Dynamo's capture alone (tests on a CPU); mode is Inductor's
            compiled = torch.compile(self._module, dynamic=False, backend=backend)

        def run(x: torch.Tensor) -> torch.Tensor:
            if mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()  # a new forward, not a backward
                return compiled(x).clone()
            return compiled(x)

        info = {**self._runtime.info, "runtime": "compile", "compile_mode": mode}
        self._runtime = dataclasses.replace(
            self._runtime, runtime="compile", run=run, info={**info, "static_shapes": True}
        )
        self.compiled = True
        return True

    @property
    def device(self) -> str:
        return self._device.type

    def describe(self) -> dict[str, Any]:
        import timm

        dtype = (
            str(self._autocast_dtype).removeprefix("torch.") if self._autocast_dtype else "float32"
        )
        return {
            "device": self.device,
            "dtype": dtype,
            "compiled": self.compiled,
            **self._runtime.info,
            "torch": torch.__version__,
            "timm": timm.__version__,
        }

    def run(self, tiles: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            batch = self._stage(tiles) if self._stage is not None else _host_tensor(tiles)
            return self.run_tensor(batch)

    def run_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """uint8 (B, H, W, 3) already on this backend's device (e.g. CuPy tiles through
        DLPack): no host round trip for the pixels."""
        return self.forward_tensor(batch).cpu().numpy()

    def forward_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """:meth:`run_tensor` leaving the float32 (B, D) embeddings on the device, so the
        caller decides when to copy them (once per batch, with whatever else goes)."""
        with torch.inference_mode():
            x = preprocess(
                batch.to(self._device, non_blocking=True), self.spec, self._scale, self._shift
            )
            autocast = (
                torch.autocast(device_type=self._device.type, dtype=self._autocast_dtype)
                if self._autocast_dtype is not None and self._runtime.torch_native
                else contextlib.nullcontext()  # other runtimes have their precision built in
            )
            with autocast:
                out = self._runtime.run(x)
            return out.float()
