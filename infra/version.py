"""The code version recorded in provenance, from the installed package's metadata."""

from __future__ import annotations

from importlib import metadata

__all__ = ["CODE_VERSION"]


def _version() -> str:
    try:
        return metadata.version("slidebank")
    except metadata.PackageNotFoundError:
        # A source tree that was never installed (e.g. PYTHONPATH=.): say so rather than guess.
        return "0+unknown"


CODE_VERSION: str = _version()
