"""The encoder registry: family modules register specs with :func:`register_encoder`.

Built-in families are imported on the first lookup, not when ``features.encoders`` is
imported, so importing the package stays cheap and free of side effects. ``timm:<arch>``
resolves any timm architecture by name; that path imports timm (it reads the architecture's
default preprocessing and measures its output width on the meta device).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import threading
from collections.abc import Callable

from features.encoders.spec import EncoderSpec, WeightsSpec, frozen_kwargs
from infra.errors import ConfigError

__all__ = ["DEFAULT_ENCODER", "get_encoder_spec", "list_encoders", "register_encoder"]

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "handcrafted-he-v1"
"""The encoder used when none is named: weight-free, so it runs on a fresh machine."""

_BUILTIN_FAMILIES = (
    "features.encoders.handcrafted",
    "features.encoders.uni",
    "features.encoders.virchow",
    "features.encoders.hoptimus",
    "features.encoders.gigapath",
    "features.encoders.phikon",
)

_SPECS: dict[str, EncoderSpec] = {}
_LOCK = threading.Lock()
_loaded = False


def register_encoder(factory: Callable[[], EncoderSpec]) -> Callable[[], EncoderSpec]:
    """Decorator: call ``factory`` once and register the spec it returns under its name."""
    spec = factory()
    if not isinstance(spec, EncoderSpec):
        raise ConfigError(f"{factory.__qualname__} must return an EncoderSpec")
    with _LOCK:
        existing = _SPECS.get(spec.name)
        if existing is not None and existing != spec:
            raise ConfigError(f"encoder {spec.name!r} is already registered differently")
        _SPECS[spec.name] = spec
    return factory


def _ensure_builtins() -> None:
    global _loaded
    if _loaded:
        return
    for module in _BUILTIN_FAMILIES:
        importlib.import_module(module)
    _loaded = True


def list_encoders() -> list[EncoderSpec]:
    """Every registered encoder, default first then by name."""
    _ensure_builtins()
    with _LOCK:
        specs = list(_SPECS.values())
    return sorted(specs, key=lambda s: (s.name != DEFAULT_ENCODER, s.name))


def get_encoder_spec(name: str | None = None) -> EncoderSpec:
    """The spec registered as ``name`` (the default encoder when ``None``).

    ``timm:<arch>`` builds a spec for any timm architecture, e.g. ``timm:resnet50``.
    Raises :class:`~infra.errors.ConfigError` naming the known encoders when not found.
    """
    name = name or DEFAULT_ENCODER
    if name.startswith("timm:"):
        return _timm_spec(name.removeprefix("timm:"))
    _ensure_builtins()
    with _LOCK:
        spec = _SPECS.get(name)
    if spec is None:
        known = ", ".join(s.name for s in list_encoders())
        raise ConfigError(f"unknown encoder {name!r}; known: {known}, or timm:<architecture>")
    return spec


@functools.lru_cache(maxsize=64)
def _timm_spec(arch: str) -> EncoderSpec:
    import timm

    from features.encoders._build import measure_embed_dim

    if not timm.is_model(arch):
        raise ConfigError(f"timm has no architecture {arch!r} (see timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(arch)
    size = int(cfg.input_size[-1]) if cfg is not None else 224
    mean = tuple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)
    interpolation = cfg.interpolation if cfg is not None else "bicubic"
    hub = cfg.hf_hub_id if cfg is not None else None
    draft = EncoderSpec(
        name=f"timm:{arch}",
        family="timm",
        architecture=arch,
        timm_kwargs=frozen_kwargs(),
        embed_dim=1,  # measured below without allocating weights
        pooling="head",
        input_size=size,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        interpolation="bilinear" if interpolation == "bilinear" else "bicubic",
        weights=WeightsSpec(
            hub_repo=hub, gated=False, license=getattr(cfg, "license", None) or "see timm"
        ),
        description=f"timm architecture {arch} with timm's own pooling head.",
        reference=f"https://huggingface.co/{hub}"
        if hub
        else "https://github.com/huggingface/pytorch-image-models",
    )
    return dataclasses.replace(draft, embed_dim=measure_embed_dim(draft))
