"""Phikon-v2 (Owkin): a DINOv2 ViT-L/16 trained on 460M public pathology tiles, CLS 1024-d.

The published checkpoint (https://huggingface.co/owkin/phikon-v2) is a Hugging Face
``transformers`` ``Dinov2Model``. slidebank never runs that package's code: the weights are
read as plain tensors and renamed onto timm's ViT-L/16 by :func:`hf_dinov2_to_timm`, which
fuses the separate query/key/value projections into timm's single ``qkv`` projection. The
repository is public (not gated).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from features.encoders._common import IMAGENET_MEAN, IMAGENET_STD
from features.encoders.registry import register_encoder
from features.encoders.spec import EncoderSpec, WeightsSpec, frozen_kwargs
from features.encoders.weights import register_state_dict_adapter
from infra.errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["hf_dinov2_to_timm"]


@register_encoder
def _phikon_v2() -> EncoderSpec:
    return EncoderSpec(
        name="phikon-v2",
        family="phikon",
        architecture="vit_large_patch16_224",
        timm_kwargs=frozen_kwargs(img_size=224, patch_size=16, init_values=1e-5),
        input_size=224,
        interpolation="bicubic",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embed_dim=1024,
        pooling="cls",
        weights=WeightsSpec(
            hub_repo="owkin/phikon-v2",
            filenames=("model.safetensors",),
            gated=False,
            license="Owkin non-commercial",
            state_dict_format="hf-dinov2",
        ),
        description="Phikon-v2, ViT-L/16 (DINOv2 on 460M tiles from public cohorts); CLS, 1024-d.",
        reference="https://huggingface.co/owkin/phikon-v2",
    )


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


@register_state_dict_adapter("hf-dinov2")
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
