"""Tile-level tasks from the store: embeddings joined with annotation coverage.

A tile's label is ``coverage(positive class) >= threshold`` of an annotation set;
slides without coverage rows for that set are left out (unlabelled, not negative).
Patient ids come from the slides table (a slide without one is its own patient).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.annotations import COVERAGE, DEFAULT_SET, RegionFilter
from features.annotations.stored import slide_frame, tile_extent
from features.store.schema import embeddings_to_numpy
from infra.errors import ConfigError

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["TileData", "TileTask", "load_tiles"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileTask:
    """Which tiles, which label: ``positive`` class coverage ≥ ``threshold`` in the
    annotation set ``annotations``; ``region`` optionally restricts the tiles first."""

    positive: str
    threshold: float = 0.5
    annotations: str = DEFAULT_SET
    encoder: str | None = None
    region: RegionFilter | None = None

    def __post_init__(self) -> None:
        t = self.threshold
        if (
            isinstance(t, bool)
            or not isinstance(t, int | float)
            or not (math.isfinite(t) and 0 < t <= 1)
        ):
            raise ConfigError(f"TileTask.threshold must be in (0, 1], not {t!r}")

    def config(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TileData:
    """One row per labelled tile, ordered by slide then (y, x)."""

    slide_id: np.ndarray
    patient_id: np.ndarray
    coords: np.ndarray  # (N, 2) level-0 x, y
    extent: np.ndarray  # (N,) level-0 side
    embeddings: np.ndarray  # (N, D) float32
    coverage: np.ndarray  # (N,) of the positive class
    labels: np.ndarray  # (N,) int 0/1
    mpp: dict[str, float | None]

    def __len__(self) -> int:
        return len(self.labels)

    def slides(self) -> list[str]:
        return list(dict.fromkeys(self.slide_id.tolist()))


def _slide_tiles(
    store: FeatureStore, task: TileTask, sid: str, encoder: str | None
) -> pd.DataFrame:
    cols = ["x", "y", "tile_size", "read_mpp", "level", "embedding"]
    tiles = (
        task.region.tiles(store, encoder=encoder, slide_ids=[sid], columns=cols)
        if task.region
        else store.tiles(encoder=encoder, slide_ids=[sid], columns=cols)
    )
    frame = slide_frame(store, sid)
    read = np.asarray(tiles.column("read_mpp").to_numpy(zero_copy_only=False), np.float64)
    out = pd.DataFrame({"x": tiles.column("x").to_numpy(), "y": tiles.column("y").to_numpy()})
    out["extent"] = tile_extent(
        tiles.column("tile_size").to_numpy(), read, tiles.column("level").to_numpy(), frame.mpp, sid
    )
    out["row"] = np.arange(len(out))
    out.attrs["embeddings"] = embeddings_to_numpy(tiles.column("embedding")).astype(np.float32)
    out.attrs["mpp"] = frame.mpp
    return out


def load_tiles(
    store: FeatureStore, task: TileTask, slide_ids: Sequence[str] | None = None
) -> TileData:
    """The labelled tiles of ``slide_ids`` (default: every slide with coverage rows)."""
    cover = store.derived(
        COVERAGE,
        task.annotations,
        slide_ids=slide_ids,
        columns=["slide_id", "x", "y", "extent", "class", "coverage"],
    ).to_pandas()
    cover = cover[cover["class"] == task.positive].drop(columns="class")
    if cover.empty:
        raise ConfigError(
            f"no coverage rows of class {task.positive!r} in annotation set "
            f"{task.annotations!r}; import annotations first"
        )
    wanted = list(slide_ids) if slide_ids is not None else sorted(cover["slide_id"].unique())
    patients = store.slides(
        slide_ids=wanted, status="done", columns=["slide_id", "patient_id"]
    ).to_pandas()
    patient_of = dict(zip(patients["slide_id"], patients["patient_id"], strict=True))
    parts, embeddings, mpp = [], [], {}
    for sid in wanted:
        tiles = _slide_tiles(store, task, sid, task.encoder)
        joined = tiles.merge(cover[cover["slide_id"] == sid], on=["x", "y", "extent"])
        if joined.empty:
            log.info("slide %s: no annotated tiles of %r, left out", sid, task.positive)
            continue
        joined = joined.sort_values(["y", "x"], kind="stable")
        joined["patient_id"] = patient_of.get(sid) or sid
        parts.append(joined)
        embeddings.append(tiles.attrs["embeddings"][joined["row"].to_numpy()])
        mpp[sid] = tiles.attrs["mpp"]
    if not parts:
        raise ConfigError(
            f"no tiles carry coverage of {task.positive!r} (set {task.annotations!r})"
        )
    df = pd.concat(parts, ignore_index=True)
    cov = df["coverage"].to_numpy(np.float64)
    return TileData(
        df["slide_id"].to_numpy(str),
        df["patient_id"].astype(str).to_numpy(),
        df[["x", "y"]].to_numpy(np.int64),
        df["extent"].to_numpy(np.float64),
        np.concatenate(embeddings),
        cov,
        (cov >= task.threshold).astype(np.int64),
        mpp,
    )
