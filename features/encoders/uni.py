"""UNI and UNI2-h (Mahmood Lab): ViT encoders pretrained with DINOv2 on H&E and IHC tiles.

Configurations follow the public model cards (https://huggingface.co/MahmoodLab/UNI and
https://huggingface.co/MahmoodLab/UNI2-h): both embed the class token; UNI2-h adds eight
register tokens and SwiGLU MLPs. Both repositories are gated (access on request, CC-BY-NC-ND).
"""

from __future__ import annotations

from features.encoders._common import IMAGENET_MEAN, IMAGENET_STD, SWIGLU_RATIO_G
from features.encoders.registry import register_encoder
from features.encoders.spec import EncoderSpec, WeightsSpec, frozen_kwargs

__all__: list[str] = []


@register_encoder
def _uni() -> EncoderSpec:
    return EncoderSpec(
        name="uni",
        family="uni",
        architecture="vit_large_patch16_224",
        timm_kwargs=frozen_kwargs(img_size=224, patch_size=16, init_values=1e-5),
        input_size=224,
        # The card's transform is torchvision Resize(224), whose default is bilinear.
        interpolation="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embed_dim=1024,
        pooling="cls",
        weights=WeightsSpec(
            hub_repo="MahmoodLab/UNI",
            filenames=("model.safetensors", "pytorch_model.bin"),
            gated=True,
            license="CC-BY-NC-ND-4.0",
        ),
        description="UNI, ViT-L/16 (DINOv2 on 100M tiles from 100k slides); CLS token, 1024-d.",
        reference="https://huggingface.co/MahmoodLab/UNI",
    )


@register_encoder
def _uni2_h() -> EncoderSpec:
    return EncoderSpec(
        name="uni2-h",
        family="uni",
        architecture="vit_giant_patch14_224",
        timm_kwargs=frozen_kwargs(
            img_size=224,
            patch_size=14,
            depth=24,
            num_heads=24,
            embed_dim=1536,
            init_values=1e-5,
            mlp_ratio=SWIGLU_RATIO_G,
            mlp_layer="swiglu_packed",
            act_layer="silu",
            reg_tokens=8,
            no_embed_class=True,
        ),
        input_size=224,
        interpolation="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embed_dim=1536,
        pooling="cls",
        weights=WeightsSpec(
            hub_repo="MahmoodLab/UNI2-h",
            filenames=("model.safetensors", "pytorch_model.bin"),
            gated=True,
            license="CC-BY-NC-ND-4.0",
        ),
        description="UNI2-h, ViT-H/14 with 8 registers and SwiGLU (200M+ tiles); CLS, 1536-d.",
        reference="https://huggingface.co/MahmoodLab/UNI2-h",
    )
