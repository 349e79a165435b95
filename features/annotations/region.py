"""Tiles restricted to an annotated region: coverage of ``region`` ≥ ``min_coverage``.

A :class:`RegionFilter` is configuration (frozen, hashable into a run's config): the
annotation set, the class and the threshold. Slides without that annotation set keep
no tiles: a region filter never silently passes unannotated slides through.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from features.annotations.stored import (
    COVERAGE,
    DEFAULT_SET,
    SlideFrame,
    slide_frame,
    sql_string,
    tile_extent,
)
from infra.errors import ConfigError

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["RegionFilter"]


@dataclass(frozen=True)
class RegionFilter:
    region: str
    min_coverage: float = 0.5
    annotations: str = DEFAULT_SET

    def __post_init__(self) -> None:
        if not isinstance(self.region, str) or not self.region:
            raise ConfigError(f"region must be a class name, not {self.region!r}")
        c = self.min_coverage
        if (
            isinstance(c, bool)
            or not isinstance(c, int | float)
            or not (math.isfinite(c) and 0 < c <= 1)
        ):
            raise ConfigError(f"min_coverage must be in (0, 1], not {c!r}")

    def config(self) -> dict[str, Any]:
        """What a run's config hash includes."""
        return asdict(self)

    def allowed(self, store: FeatureStore, slide_ids: Iterable[str] | None = None) -> pa.Table:
        """(slide_id, x, y, extent, coverage) of the tiles the filter keeps."""
        where = f"class = {sql_string(self.region)} AND coverage >= {float(self.min_coverage)!r}"
        return store.derived(
            COVERAGE,
            self.annotations,
            slide_ids=slide_ids,
            where=where,
            columns=["slide_id", "x", "y", "extent", "coverage"],
        )

    def keep(self, store: FeatureStore, slide_id: str, coords: Any) -> np.ndarray:
        """Which of a slide's tiles (``coords`` (N, 2) level-0 x, y) the filter keeps."""
        rows = self.allowed(store, [slide_id])
        kept = set(zip(rows.column("x").to_pylist(), rows.column("y").to_pylist(), strict=True))
        xy = np.asarray(coords, np.int64).reshape(-1, 2)
        return np.fromiter(((int(x), int(y)) in kept for x, y in xy), bool, len(xy))

    def tiles(
        self,
        store: FeatureStore,
        *,
        encoder: str | None = None,
        slide_ids: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """The store's visible tiles (as ``store.tiles``) inside the region."""
        import pyarrow.compute as pc

        need = ["slide_id", "x", "y", "tile_size", "read_mpp", "level"]
        wanted = list(columns) if columns else None
        read = None if wanted is None else list(dict.fromkeys([*wanted, *need]))
        table = store.tiles(encoder=encoder, slide_ids=slide_ids, columns=read)
        allowed = self.allowed(store, slide_ids)
        keys = {
            (s, x, y, e)
            for s, x, y, e in zip(
                *(allowed.column(c).to_pylist() for c in ("slide_id", "x", "y", "extent")),
                strict=True,
            )
        }
        frames: dict[str, SlideFrame] = {}
        sids = table.column("slide_id").to_pylist()
        for sid in set(sids):
            frames[sid] = slide_frame(store, sid)
        extent = np.empty(table.num_rows)
        for sid, frame in frames.items():
            mine = np.asarray([s == sid for s in sids])
            extent[mine] = tile_extent(
                pc.filter(table.column("tile_size"), mine).to_numpy(),
                np.asarray(
                    pc.filter(table.column("read_mpp"), mine).to_numpy(zero_copy_only=False),
                    np.float64,
                ),
                pc.filter(table.column("level"), mine).to_numpy(),
                frame.mpp,
                sid,
            )
        xs, ys = table.column("x").to_pylist(), table.column("y").to_pylist()
        mask = np.fromiter(
            ((s, x, y, float(e)) in keys for s, x, y, e in zip(sids, xs, ys, extent, strict=True)),
            bool,
            table.num_rows,
        )
        out = table.filter(pa.array(mask))
        return out if wanted is None else out.select(wanted)
