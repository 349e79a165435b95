"""H-optimus-0 and H-optimus-1 (Bioptimus): ViT-g/14 with four registers, class token, 1536-d.

timm's ``vit_giant_patch14_reg4_dinov2`` is the architecture named in the public configs
(https://huggingface.co/bioptimus/H-optimus-0); normalization statistics are Bioptimus' own,
computed on their H&E training data, not ImageNet's. Both repositories are gated.
"""

from __future__ import annotations

from features.encoders.registry import register_encoder
from features.encoders.spec import EncoderSpec, WeightsSpec, frozen_kwargs

__all__: list[str] = []

_MEAN = (0.707223, 0.578729, 0.703617)
_STD = (0.211883, 0.230117, 0.177517)


def _spec(version: int, tiles: str) -> EncoderSpec:
    return EncoderSpec(
        name=f"h-optimus-{version}",
        family="h-optimus",
        architecture="vit_giant_patch14_reg4_dinov2",
        timm_kwargs=frozen_kwargs(img_size=224, init_values=1e-5),
        input_size=224,
        interpolation="bicubic",
        mean=_MEAN,
        std=_STD,
        embed_dim=1536,
        pooling="cls",
        weights=WeightsSpec(
            hub_repo=f"bioptimus/H-optimus-{version}",
            filenames=("model.safetensors", "pytorch_model.bin"),
            gated=True,
            license="Apache-2.0" if version == 0 else "CC-BY-NC-ND-4.0",
        ),
        description=f"H-optimus-{version}, ViT-g/14 with 4 registers ({tiles}); CLS, 1536-d.",
        reference=f"https://huggingface.co/bioptimus/H-optimus-{version}",
    )


@register_encoder
def _h_optimus_0() -> EncoderSpec:
    return _spec(0, "500k+ slides")


@register_encoder
def _h_optimus_1() -> EncoderSpec:
    return _spec(1, "over 1M slides")
