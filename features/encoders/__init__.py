"""Patch encoders: a registry of foundation models, a weight-free default, and a runner.

Usage::

    from features.encoders import Encoder, list_encoders

    encoder = Encoder()  # "handcrafted-he-v1": no weights, no GPU, no network
    vectors = encoder(tiles)  # tiles: uint8 (B, H, W, 3) -> float32 (B, 64)
    uni = Encoder("uni", weights="/models/uni.safetensors")  # or $SLIDEBANK_WEIGHTS_UNI
    digest = uni.provenance["weights"]["sha256"]  # what the store records

Importing this package does not import torch or timm; they load when a neural encoder is built.
"""

from features.encoders.registry import (
    DEFAULT_ENCODER,
    get_encoder_spec,
    list_encoders,
    register_encoder,
)
from features.encoders.runtime import Encoder
from features.encoders.spec import EncoderSpec, WeightsSpec, frozen_kwargs
from features.encoders.weights import (
    WeightsSource,
    load_state_dict,
    resolve_weights,
    sha256_file,
    weights_status,
)

__all__ = [
    "DEFAULT_ENCODER",
    "Encoder",
    "EncoderSpec",
    "WeightsSource",
    "WeightsSpec",
    "frozen_kwargs",
    "get_encoder_spec",
    "list_encoders",
    "load_state_dict",
    "register_encoder",
    "resolve_weights",
    "sha256_file",
    "weights_status",
]
