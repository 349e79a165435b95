"""Phikon-v2 (Owkin): a DINOv2 ViT-L/16 trained on 460M public pathology tiles, CLS 1024-d.

The published checkpoint (https://huggingface.co/owkin/phikon-v2) is a Hugging Face
``transformers`` ``Dinov2Model``. slidebank never runs that package's code: the weights are
read as plain tensors and renamed onto timm's ViT-L/16 by the ``hf-dinov2`` checkpoint
format (:func:`features.encoders.checkpoint_formats.hf_dinov2_to_timm`), which fuses the
separate query/key/value projections into timm's single ``qkv`` projection. The
repository is public (not gated).
"""

from __future__ import annotations

from features.encoders._common import IMAGENET_MEAN, IMAGENET_STD
from features.encoders.registry import register_encoder
from features.encoders.spec import EncoderSpec, WeightsSpec, frozen_kwargs

__all__: list[str] = []


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
