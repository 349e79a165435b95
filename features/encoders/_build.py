"""Building a spec's timm model, loading weights into it, and pooling its tokens (torch only)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from features.encoders.spec import EncoderSpec
from features.encoders.weights import adapt_state_dict
from infra.errors import ConfigError, WeightsError

__all__ = ["build_model", "flops_per_tile", "load_weights_into", "measure_embed_dim", "pool_tokens"]

logger = logging.getLogger(__name__)


def _resolve_layers(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Specs name layer classes by string (they stay torch-free); resolve them here."""
    from timm.layers import GluMlp, Mlp, SwiGLU, SwiGLUPacked

    layers: dict[str, Any] = {
        "swiglu_packed": SwiGLUPacked,
        "mlp": Mlp,
        "glu_mlp": GluMlp,
        "swiglu": SwiGLU,
    }
    out = dict(kwargs)
    if "mlp_layer" in out:
        out["mlp_layer"] = layers[out["mlp_layer"]]
    return out


def build_model(spec: EncoderSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The spec's timm model with random weights, classifier removed, in eval mode.

    ``device="meta"`` allocates nothing: used to check shapes and count FLOPs of giant models.
    """
    import timm

    if spec.architecture is None:
        raise ConfigError(f"{spec.name} is not a neural encoder")
    kwargs = _resolve_layers(spec.kwargs)
    with torch.device(device):
        model = timm.create_model(spec.architecture, pretrained=False, num_classes=0, **kwargs)
    return model.eval().requires_grad_(False)


def pool_tokens(model: nn.Module, features: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per image from ``model.forward_features`` output (see ``spec.Pooling``)."""
    if pooling == "head":
        return model.forward_head(features, pre_logits=True)  # type: ignore[operator]
    if features.ndim != 3:
        raise ConfigError(
            f"pooling {pooling!r} needs a token sequence, got {tuple(features.shape)}"
        )
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    if pooling == "cls":
        return features[:, 0]
    patches = features[:, prefix:]  # register tokens sit between the class token and patches
    if pooling == "mean":
        return patches.mean(dim=1)
    if pooling == "cls+mean":
        return torch.cat([features[:, 0], patches.mean(dim=1)], dim=-1)
    raise ConfigError(f"unknown pooling {pooling!r}")


def measure_embed_dim(spec: EncoderSpec) -> int:
    """The pooled output width, computed on the meta device (no weights allocated)."""
    model = build_model(spec, device="meta")
    with torch.device("meta"):
        x = torch.empty(1, 3, spec.input_size, spec.input_size)
        out = pool_tokens(model, model.forward_features(x), spec.pooling)  # type: ignore[operator]
    return int(out.shape[-1])


def flops_per_tile(spec: EncoderSpec) -> float:
    """Forward FLOPs for one tile at the spec's input size, counted by torch on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(spec, device="meta")
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        model.forward_features(torch.empty(1, 3, spec.input_size, spec.input_size))  # type: ignore[operator]
    return float(counter.get_total_flops())


def _match_pos_embed(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Resample a checkpoint's position embedding when it was saved for another grid size."""
    current = getattr(model, "pos_embed", None)
    saved = state.get("pos_embed")
    if not isinstance(current, torch.Tensor) or saved is None or saved.shape == current.shape:
        return
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else int(model.num_prefix_tokens)  # type: ignore[arg-type]
    grid: Any = model.patch_embed.grid_size  # type: ignore[union-attr]
    logger.warning("resampling pos_embed %s -> %s", tuple(saved.shape), tuple(current.shape))
    state["pos_embed"] = resample_abs_pos_embed(
        saved, new_size=list(grid), num_prefix_tokens=prefix
    )


def load_weights_into(model: nn.Module, spec: EncoderSpec, state: dict[str, Any]) -> None:
    """Load ``state`` strictly; any missing, unexpected or mis-shaped key is a WeightsError."""
    state = adapt_state_dict(spec, state)
    own = model.state_dict()
    # Classifier heads of classification checkpoints are not part of an encoder.
    state = {k: v for k, v in state.items() if not (k.startswith("head.") and k not in own)}
    _match_pos_embed(model, state)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"weights do not match encoder {spec.name!r} ({spec.architecture}): "
            f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
            f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}, "
            f"shape mismatches {shapes[:4]}"
        )
    model.load_state_dict(state, strict=True)
