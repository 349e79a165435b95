"""Prov-GigaPath tile encoder (Providence / Microsoft): a DINOv2 ViT-g with 16-pixel patches.

The published config builds timm's ``vit_giant_patch14_dinov2`` but overrides ``patch_size=16``
and ``mlp_ratio=5.33334`` (https://huggingface.co/prov-gigapath/prov-gigapath). Its transform
resizes to 256 (bicubic) then center-crops 224, with ImageNet statistics. Only the tile encoder
lives here; the LongNet slide encoder is a slide-level model. The repository is gated.
"""

from __future__ import annotations

from features.encoders._common import IMAGENET_MEAN, IMAGENET_STD
from features.encoders.registry import register_encoder
from features.encoders.spec import EncoderSpec, WeightsSpec, frozen_kwargs

__all__: list[str] = []


@register_encoder
def _prov_gigapath() -> EncoderSpec:
    return EncoderSpec(
        name="prov-gigapath",
        family="gigapath",
        architecture="vit_giant_patch14_dinov2",
        timm_kwargs=frozen_kwargs(
            img_size=224,
            patch_size=16,
            embed_dim=1536,
            depth=40,
            num_heads=24,
            init_values=1e-5,
            mlp_ratio=5.33334,
        ),
        input_size=224,
        resize_policy="resize_crop",
        resize_size=256,
        interpolation="bicubic",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embed_dim=1536,
        pooling="cls",
        weights=WeightsSpec(
            hub_repo="prov-gigapath/prov-gigapath",
            filenames=("model.safetensors", "pytorch_model.bin"),
            gated=True,
            license="Apache-2.0 (gated, research use)",
        ),
        description="Prov-GigaPath tile encoder, ViT-g/16 (1.3B tiles from 171k slides); "
        "CLS, 1536-d.",
        reference="https://huggingface.co/prov-gigapath/prov-gigapath",
    )
