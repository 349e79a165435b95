"""The facade's slide-level operations (what the CLI calls)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from infra.files import atomic_write
from infra.ids import slide_id_from_uri, validate_slide_id
from ingest.slides import Strategy, open_slide

__all__ = ["describe_slide"]


def describe_slide(
    uri: str,
    *,
    out_dir: str | Path | None = None,
    mpp: float | None = None,
    reader: str | None = None,
    strategy: Strategy = "auto",
    thumbnail_mpp: float = 8.0,
    storage_options: dict[str, Any] | None = None,
    slide_id: str | None = None,
) -> dict[str, Any]:
    """Open a slide and return its allowlisted metadata; with ``out_dir``, also write its
    thumbnail PNG to ``<out_dir>/<slide_id>/thumbnail.png`` (nothing is written without)."""
    sid = validate_slide_id(slide_id) if slide_id else slide_id_from_uri(uri)
    with open_slide(
        uri, storage_options=storage_options, reader=reader, mpp=mpp, strategy=strategy
    ) as slide:
        meta = slide.metadata
        thumb, actual = slide.thumbnail(thumbnail_mpp)
    target = Path(out_dir) / sid / "thumbnail.png" if out_dir is not None else None
    if target is not None:
        with atomic_write(target) as handle:
            Image.fromarray(np.ascontiguousarray(thumb)).save(handle, format="PNG")
    report = {"slide_id": sid, **meta.to_dict()}
    report["levels"] = [
        {"level": i, "width": w, "height": h, "downsample": d, "mpp": meta.level_mpp(i)}
        for i, ((w, h), d) in enumerate(
            zip(meta.level_dimensions, meta.level_downsamples, strict=True)
        )
    ]
    report["thumbnail"] = str(target) if target is not None else None
    report["thumbnail_mpp"] = actual
    return report
