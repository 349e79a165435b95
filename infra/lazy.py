"""Lazy package exports: names resolved on first use, so importing a package stays cheap
(no torch, Ray or Lance until a name that needs them is touched), yet ``dir()``, ``help()``
and tab completion list every name."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], eager: Mapping[str, Any] | None = None
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``; ``exports`` maps name -> module.

    ``eager`` holds names the package already defines (e.g. ``__version__``); they are
    listed in ``__all__`` and ``__dir__`` too.
    """
    table = dict(exports)
    names = sorted({*table, *(eager or {})})

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted({*names, *importlib.import_module(package).__dict__})

    return names, __getattr__, __dir__
