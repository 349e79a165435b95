"""Virchow and Virchow2 (Paige): ViT-H/14 encoders whose embedding is the class token
concatenated with the mean of the patch tokens (register tokens excluded), 2 x 1280 = 2560-d.

Configurations follow the public cards (https://huggingface.co/paige-ai/Virchow2,
https://huggingface.co/paige-ai/Virchow): SwiGLU MLPs with SiLU, LayerScale, Virchow2 adds four
register tokens. Both repositories are gated.
"""

from __future__ import annotations

from features.encoders._common import IMAGENET_MEAN, IMAGENET_STD
from features.encoders.registry import register_encoder
from features.encoders.spec import EncoderSpec, WeightsSpec, frozen_kwargs

__all__: list[str] = []

# The cards' mlp_ratio: SwiGLUPacked fc1 width 6832 = 1280 * 5.3375.
_VIRCHOW_MLP_RATIO = 5.3375


@register_encoder
def _virchow2() -> EncoderSpec:
    return EncoderSpec(
        name="virchow2",
        family="virchow",
        architecture="vit_huge_patch14_224",
        timm_kwargs=frozen_kwargs(
            img_size=224,
            init_values=1e-5,
            mlp_ratio=_VIRCHOW_MLP_RATIO,
            mlp_layer="swiglu_packed",
            act_layer="silu",
            reg_tokens=4,
        ),
        input_size=224,
        interpolation="bicubic",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embed_dim=2560,
        pooling="cls+mean",
        weights=WeightsSpec(
            hub_repo="paige-ai/Virchow2",
            filenames=("model.safetensors", "pytorch_model.bin"),
            gated=True,
            license="CC-BY-NC-ND-4.0",
        ),
        description="Virchow2, ViT-H/14 with 4 registers (3.1M slides, mixed magnification); "
        "CLS + mean patch tokens, 2560-d.",
        reference="https://huggingface.co/paige-ai/Virchow2",
    )


@register_encoder
def _virchow() -> EncoderSpec:
    return EncoderSpec(
        name="virchow",
        family="virchow",
        architecture="vit_huge_patch14_224",
        timm_kwargs=frozen_kwargs(
            img_size=224,
            init_values=1e-5,
            mlp_ratio=_VIRCHOW_MLP_RATIO,
            mlp_layer="swiglu_packed",
            act_layer="silu",
        ),
        input_size=224,
        interpolation="bicubic",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embed_dim=2560,
        pooling="cls+mean",
        weights=WeightsSpec(
            hub_repo="paige-ai/Virchow",
            filenames=("model.safetensors", "pytorch_model.bin"),
            gated=True,
            license="Apache-2.0 (gated, additional terms)",
        ),
        description="Virchow (v1), ViT-H/14 (1.5M slides); CLS + mean patch tokens, 2560-d.",
        reference="https://huggingface.co/paige-ai/Virchow",
    )
