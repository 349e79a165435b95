"""Atomic PNG writes (temp file then rename), so a reader never sees half an image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def save_png(image: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
