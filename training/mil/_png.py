"""Atomic PNG writes (temp file then rename), so a reader never sees half an image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infra.files import atomic_write


def save_png(image: Any, path: str | Path) -> Path:
    with atomic_write(path) as handle:
        image.save(handle, format="PNG")
    return Path(path)
