"""Which backend opens which file: by extension and priority, with an explicit override."""

from __future__ import annotations

import os

from infra.errors import BackendUnavailableError, ConfigError
from ingest.slides.backends.cucim_reader import CucimReader
from ingest.slides.backends.openslide_reader import OpenSlideReader
from ingest.slides.backends.tiffslide_reader import TiffSlideReader
from ingest.slides.base import SlideReader

__all__ = ["available_readers", "candidate_readers", "get_reader_class", "register_reader"]

_READERS: dict[str, type[SlideReader]] = {}


def register_reader(cls: type[SlideReader]) -> type[SlideReader]:
    """Add a backend (usable as a class decorator by third-party backends)."""
    if cls.name in _READERS and _READERS[cls.name] is not cls:
        raise ConfigError(f"a reader named {cls.name!r} is already registered")
    _READERS[cls.name] = cls
    return cls


for _cls in (CucimReader, OpenSlideReader, TiffSlideReader):
    register_reader(_cls)


def get_reader_class(name: str) -> type[SlideReader]:
    try:
        cls = _READERS[name]
    except KeyError:
        raise ConfigError(f"unknown reader {name!r}; known: {sorted(_READERS)}") from None
    if not cls.is_available():
        raise BackendUnavailableError(f"reader {name!r} is not installed or cannot run here")
    return cls


def available_readers() -> dict[str, bool]:
    return {name: cls.is_available() for name, cls in sorted(_READERS.items())}


def extension_of(uri: str) -> str:
    name = uri.rstrip("/").rsplit("/", 1)[-1].lower()
    return os.path.splitext(name)[1]


def candidate_readers(uri: str, *, remote: bool) -> list[type[SlideReader]]:
    """Available backends that claim ``uri``'s extension, best first.

    ``remote=True`` keeps only backends that read through fsspec byte ranges. An unknown
    extension falls back to every available backend, so content decides, not the name.
    """
    ext = extension_of(uri)
    ranked = [(cls.extensions.get(ext, -1), name, cls) for name, cls in _READERS.items()]
    claimed = [r for r in ranked if r[0] >= 0] or [(0, n, c) for _, n, c in ranked]
    out = [cls for _, _, cls in sorted(claimed, key=lambda r: (-r[0], r[1]))]
    out = [cls for cls in out if cls.is_available()]
    if remote:
        out = [cls for cls in out if cls.supports_remote]
    return out
