"""The frozen description of one patch encoder.

An :class:`EncoderSpec` is pure data: no torch, no timm. It says which timm architecture to
build and with which keyword arguments, how a tile is resized and normalized before the
model sees it, how the token sequence is pooled into one vector, and where the weights come
from. Specs are hashable and picklable so they travel to Ray workers unchanged, and their
:meth:`~EncoderSpec.fingerprint` goes into provenance so a store row can always be traced
back to the exact preprocessing and pooling that produced it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from infra.errors import ConfigError
from infra.provenance import stable_hash

__all__ = [
    "DType",
    "EncoderSpec",
    "Interpolation",
    "Pooling",
    "ResizePolicy",
    "WeightsSpec",
    "frozen_kwargs",
]

Pooling = Literal["cls", "cls+mean", "mean", "head", "handcrafted"]
"""How tokens become one vector.

``cls``: the class token after the final norm. ``cls+mean``: the class token concatenated
with the mean of the patch tokens (register tokens excluded), as Virchow does. ``mean``: the
mean of the patch tokens. ``head``: whatever timm's own pooling head produces with
``num_classes=0`` (used for arbitrary ``timm:<arch>`` models, CNNs included).
``handcrafted``: not a neural network.
"""

ResizePolicy = Literal["resize", "resize_crop", "none"]
"""``resize``: resize the tile to ``input_size`` (a no-op when it already is).
``resize_crop``: resize the shorter side to ``resize_size`` then center-crop ``input_size``
(Prov-GigaPath's published transform). ``none``: the encoder takes tiles as they come."""

Interpolation = Literal["bilinear", "bicubic"]
DType = Literal["bfloat16", "float16", "float32"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$|^timm:[A-Za-z0-9_.-]{1,128}$")
_TIMM_LAYER_NAMES = {"swiglu_packed", "mlp", "glu_mlp", "swiglu"}


def frozen_kwargs(**kwargs: Any) -> tuple[tuple[str, Any], ...]:
    """Keyword arguments as a sorted tuple of pairs: hashable, picklable, JSON-able.

    Values must be JSON scalars; layer classes are named by string (``mlp_layer="swiglu_packed"``,
    ``act_layer="silu"``) and resolved when the model is built, so specs never import torch.
    """
    for key, value in kwargs.items():
        if not isinstance(value, (str, int, float, bool, type(None))):
            raise ConfigError(f"timm kwarg {key}={value!r} must be a JSON scalar")
    return tuple(sorted(kwargs.items()))


@dataclass(frozen=True)
class WeightsSpec:
    """Where an encoder's weights come from when no local file is given.

    ``filenames`` are tried in order inside ``hub_repo`` (safetensors first: it cannot carry
    code). ``state_dict_format`` names the adapter that maps the checkpoint's keys onto the
    timm model (``timm`` for checkpoints already in timm layout).
    """

    hub_repo: str | None
    filenames: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    gated: bool = False
    license: str = "unknown"
    state_dict_format: str = "timm"

    @property
    def hub_url(self) -> str | None:
        return f"https://huggingface.co/{self.hub_repo}" if self.hub_repo else None


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to build, feed and pool one encoder (see module docstring)."""

    name: str
    family: str
    embed_dim: int
    pooling: Pooling
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    architecture: str | None = None
    timm_kwargs: tuple[tuple[str, Any], ...] = ()
    resize_policy: ResizePolicy = "resize"
    resize_size: int | None = None
    interpolation: Interpolation = "bicubic"
    dtype: DType = "bfloat16"
    weights: WeightsSpec | None = None
    description: str = ""
    reference: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"encoder name {self.name!r} is not a valid registry name")
        if self.pooling not in get_args(Pooling):
            raise ConfigError(f"{self.name}: pooling {self.pooling!r} not in {get_args(Pooling)}")
        if self.resize_policy not in get_args(ResizePolicy):
            raise ConfigError(f"{self.name}: resize_policy {self.resize_policy!r} is unknown")
        if self.interpolation not in get_args(Interpolation):
            raise ConfigError(f"{self.name}: interpolation {self.interpolation!r} is unknown")
        if self.dtype not in get_args(DType):
            raise ConfigError(f"{self.name}: dtype {self.dtype!r} not in {get_args(DType)}")
        if self.embed_dim <= 0 or self.input_size <= 0:
            raise ConfigError(f"{self.name}: embed_dim and input_size must be positive")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"{self.name}: mean/std must be 3 values with std > 0")
        if self.resize_policy == "resize_crop" and (self.resize_size or 0) < self.input_size:
            raise ConfigError(f"{self.name}: resize_crop needs resize_size >= input_size")
        if self.pooling != "handcrafted" and not self.architecture:
            raise ConfigError(f"{self.name}: a neural encoder needs a timm architecture")
        if not isinstance(self.timm_kwargs, tuple):
            raise ConfigError(f"{self.name}: timm_kwargs must come from frozen_kwargs(...)")
        layer = self.kwargs.get("mlp_layer")
        if layer is not None and layer not in _TIMM_LAYER_NAMES:
            raise ConfigError(f"{self.name}: mlp_layer {layer!r} not in {_TIMM_LAYER_NAMES}")

    @property
    def kwargs(self) -> dict[str, Any]:
        """The timm keyword arguments as a fresh dict."""
        return dict(self.timm_kwargs)

    @property
    def is_builtin(self) -> bool:
        """True when the encoder needs no weight file at all."""
        return self.weights is None

    @property
    def pool_factor(self) -> int:
        """How many model-width vectors the pooled embedding is made of."""
        return 2 if self.pooling == "cls+mean" else 1

    @property
    def env_var(self) -> str:
        """The environment variable naming a local weight file for this encoder."""
        return "SLIDEBANK_WEIGHTS_" + re.sub(r"[^A-Z0-9]", "_", self.name.upper())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (what provenance records)."""
        out = dataclasses.asdict(self)
        out["timm_kwargs"] = self.kwargs
        return out

    def fingerprint(self) -> str:
        """A short stable hash of what turns pixels into this embedding, given the weights.

        Architecture, preprocessing, pooling and dtype count; prose, links and where weights
        are downloaded from do not (the weight file's own sha256 is recorded separately).
        """
        payload = self.to_dict()
        for key in ("description", "reference", "weights"):
            payload.pop(key)
        return stable_hash("slidebank.encoder", 1, payload)

    def with_timm_overrides(self, name: str, **overrides: Any) -> EncoderSpec:
        """The same family with some timm kwargs changed (e.g. a reduced-depth test variant).

        ``embed_dim`` in ``overrides`` is the model width; the pooled dimension follows.
        """
        merged: Mapping[str, Any] = {**self.kwargs, **overrides}
        embed_dim = self.embed_dim
        if "embed_dim" in overrides:
            embed_dim = int(overrides["embed_dim"]) * self.pool_factor
        return dataclasses.replace(
            self, name=name, timm_kwargs=frozen_kwargs(**merged), embed_dim=embed_dim
        )
