"""Checkpoint layouts other than timm's, and the functions that rename them onto timm.

An encoder spec names its checkpoint's layout in ``WeightsSpec.state_dict_format``;
:func:`features.encoders.weights.adapt_state_dict` looks the adapter up here. Built-in
layouts are defined in this module (not in the family modules that use them), so loading
weights never has to import the encoder registry to find an adapter; a user's own layout
registers with :func:`register_state_dict_adapter`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from infra.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["adapter_for", "hf_dinov2_to_timm", "register_state_dict_adapter"]

_Adapter = Callable[[dict[str, Any]], dict[str, Any]]


_BLOCK = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_BLOCK_RENAMES = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attention.output.dense.weight": "attn.proj.weight",  # transformers 4.x names
    "attention.output.dense.bias": "attn.proj.bias",
    "attention.o_proj.weight": "attn.proj.weight",  # transformers 5.x names
    "attention.o_proj.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_TOP_RENAMES = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# The published checkpoint (transformers 4.x) names attention.attention.{query,key,value};
# transformers 5.x saves attention.{q,k,v}_proj. Both are accepted.
_QKV = re.compile(
    r"^attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$"
)
_QKV_ROLES = {
    "query": "query", "key": "key", "value": "value",
    "q_proj": "query", "k_proj": "key", "v_proj": "value",
}  # fmt: skip
# Present in the transformers checkpoint but unused at inference (masked-image pretraining).
_DROPPED = {"embeddings.mask_token"}


def hf_dinov2_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``transformers`` Dinov2Model state dict onto timm's VisionTransformer.

    A state dict already in timm layout passes through unchanged. Keys this mapping does not
    know raise :class:`~infra.errors.WeightsError` rather than being silently dropped.
    """
    import torch

    if "cls_token" in state and "blocks.0.attn.qkv.weight" in state:
        return state
    state = {k.removeprefix("dinov2."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        if key in _DROPPED:
            continue
        if key in _TOP_RENAMES:
            out[_TOP_RENAMES[key]] = tensor
            continue
        match = _BLOCK.match(key)
        if match is None:
            unknown.append(key)
            continue
        index, rest = int(match.group(1)), match.group(2)
        if rest in _BLOCK_RENAMES:
            out[f"blocks.{index}.{_BLOCK_RENAMES[rest]}"] = tensor
            continue
        part = _QKV.match(rest)
        if part is None:
            unknown.append(key)
            continue
        role = _QKV_ROLES[part.group(1)]
        qkv.setdefault((index, part.group(2)), {})[role] = tensor
    if unknown:
        raise WeightsError(f"unrecognised keys in a Dinov2 checkpoint: {sorted(unknown)[:8]}")
    for (index, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise WeightsError(f"block {index}: incomplete query/key/value {kind}")
        # timm's fused projection is [q; k; v] stacked along the output dimension.
        out[f"blocks.{index}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0
        )
    return out


_ADAPTERS: dict[str, _Adapter] = {"hf-dinov2": hf_dinov2_to_timm}


def register_state_dict_adapter(name: str) -> Callable[[_Adapter], _Adapter]:
    """Decorator registering a function that renames a checkpoint's keys onto timm's layout."""

    def decorate(function: _Adapter) -> _Adapter:
        _ADAPTERS[name] = function
        return function

    return decorate


def adapter_for(fmt: str) -> _Adapter | None:
    """The adapter registered for a checkpoint layout, or None."""
    return _ADAPTERS.get(fmt)
