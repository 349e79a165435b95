"""Shared pieces of the encoder-runtime tests (the ``runtime_cache`` fixture is in
tests/conftest.py): a one-block ViT that exports and compiles in seconds."""

from __future__ import annotations

from features.encoders import EncoderSpec, get_encoder_spec


def tiny_vit() -> EncoderSpec:
    """UNI's spec cut to one block of width 96."""
    return get_encoder_spec("uni").with_timm_overrides(
        "uni-tiny", depth=1, embed_dim=96, num_heads=2
    )
