"""One slide's tissue report on disk: overlay PNG, GeoJSON outlines, tile plan, summary.

What ``slidebank tissue`` writes, as a library call. Files go to ``out_dir/<slide_id>/``,
each written atomically, the summary last: a directory with ``summary.json`` is
complete. Files there already are refused before the slide is opened, and never
replaced, unless ``overwrite``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from infra.arrays import Device
from infra.files import atomic_write, atomic_write_text, check_output
from infra.ids import slide_id_from_uri, validate_slide_id
from ingest.slides import Strategy, open_slide
from ingest.tiling.config import TilingConfig
from ingest.tiling.plan import plan_slide
from ingest.tissue.config import TissueConfig
from ingest.tissue.contours import mask_to_geojson, write_geojson
from ingest.tissue.overlay import render_overlay, write_png

__all__ = ["REPORT_FILES", "tissue_report"]

#: what a report folder holds, summary.json last (written last: the folder is complete)
REPORT_FILES = ("overlay.png", "tissue.geojson", "tiles.parquet", "summary.json")

log = logging.getLogger(__name__)


def tissue_report(
    uri: str,
    out_dir: str | os.PathLike,
    *,
    tissue_config: TissueConfig | None = None,
    tiling_config: TilingConfig | None = None,
    mpp: float | None = None,
    reader: str | None = None,
    strategy: Strategy = "auto",
    storage_options: Mapping[str, Any] | None = None,
    device: Device = "auto",
    slide_id: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Detect tissue, plan tiles, write the report files and return the summary.

    An all-glass slide or one smaller than a tile is a result (``status``), not an
    error; a slide without MPP and no ``mpp`` override raises MissingMPPError. An existing
    report file raises :class:`~infra.errors.OutputExistsError` unless ``overwrite``.
    """
    tissue_config = tissue_config or TissueConfig()
    tiling_config = tiling_config or TilingConfig()
    sid = validate_slide_id(slide_id) if slide_id else slide_id_from_uri(uri)
    target = Path(out_dir) / sid
    for name in REPORT_FILES:
        check_output(target / name, overwrite=overwrite)
    started = time.perf_counter()
    with open_slide(
        uri, storage_options=storage_options, reader=reader, mpp=mpp, strategy=strategy
    ) as slide:
        opened = time.perf_counter()
        tissue, plan = plan_slide(slide, tissue_config, tiling_config, device)
        planned = time.perf_counter()
        meta = slide.metadata
        size = slide.dimensions
    target.mkdir(parents=True, exist_ok=True)
    files = {
        "overlay": str(
            write_png(
                target / "overlay.png", render_overlay(tissue, plan, size), overwrite=overwrite
            )
        ),
        "geojson": str(
            write_geojson(
                target / "tissue.geojson",
                mask_to_geojson(tissue.mask, tissue.mpp, size, properties={"slide_id": sid}),
                overwrite=overwrite,
            )
        ),
        "tiles": str(_write_parquet(plan.table, target / "tiles.parquet", overwrite)),
    }
    summary = {
        "slide_id": sid,
        "uri": meta.uri,
        "status": plan.status,
        "tissue_fraction": tissue.summary()["tissue_fraction"],
        "tile_count": plan.tile_count,
        "slide": {
            "dimensions": list(size),
            "mpp": meta.mpp,
            "mpp_source": meta.mpp_source,
            "levels": meta.level_count,
            "reader": meta.reader,
        },
        "tissue": tissue.summary(),
        "plan": plan.summary(),
        "config": {"tissue": tissue_config.to_dict(), "tiling": tiling_config.to_dict()},
        "timings_s": {
            "open": round(opened - started, 4),
            "plan": round(planned - opened, 4),
            "write": round(time.perf_counter() - planned, 4),
        },
        "files": files,
    }
    _write_json(target / "summary.json", summary, overwrite)
    log.info(
        "%s: %s, tissue %.1f%%, %d tiles",
        sid,
        plan.status,
        100 * tissue.tissue_fraction,
        plan.tile_count,
    )
    return summary


def _write_parquet(table: Any, path: Path, overwrite: bool) -> Path:
    with atomic_write(path, overwrite=overwrite) as handle:
        pq.write_table(table, handle)
    return path


def _write_json(path: Path, payload: dict[str, Any], overwrite: bool) -> Path:
    return atomic_write_text(
        path, json.dumps(payload, indent=2, sort_keys=False), overwrite=overwrite
    )
