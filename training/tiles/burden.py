"""Per-slide tumour burden from a prediction map: area, fraction and nuclear purity.

For each slide with rows in ``predictions/<name>``:

* ``tissue_area_mm2``: the area of its predicted tiles, each weighted by the tile's
  tissue fraction (glass inside a border tile is not tissue);
* ``tumour_area_mm2``: the same over the tiles at or above ``threshold``;
  ``tumour_fraction`` is their ratio;
* ``nuclei`` / ``tumour_nuclei``: nuclei counted by the handcrafted encoder
  (``handcrafted-he-v1``: its ``nuclei_density`` is log1p of nuclei per 10⁴ tile
  pixels, so a tile holds ``expm1(density) × tile_size² / 10⁴``) over all predicted
  tiles and over the tumour tiles; ``purity`` is their ratio (tumour nuclei over all
  nuclei inside tissue, the pathologist's estimate of tumour cellularity), and
  ``purity_soft`` weights each tile's nuclei by its probability instead of the
  threshold. Both are null where the store has no handcrafted tiles for the slide.

The rows go into the derived table ``slide_features/<name>`` (one row per slide,
replaced on rewrite, removed with the slide). :func:`burden_table` reads them as a
labels table: ``slide_id`` plus columns, which ``cohort``, ``probe`` and SQL take.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from infra.errors import ConfigError

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = [
    "BURDEN_COLUMNS",
    "NUCLEI_ENCODER",
    "SLIDE_FEATURES",
    "BurdenConfig",
    "burden_table",
    "compute_burden",
    "nuclei_counts",
    "tumour_burden",
    "write_table_file",
]

log = logging.getLogger(__name__)

SLIDE_FEATURES = "slide_features"
NUCLEI_ENCODER = "handcrafted-he-v1"
_DENSITY = "nuclei_density"
_PER_PX = 1e4  # the encoder's density unit: nuclei per 10^4 pixels
BURDEN_COLUMNS = (
    "predictions",
    "threshold",
    "nuclei_encoder",
    "n_tiles",
    "n_tumour_tiles",
    "tissue_area_mm2",
    "tumour_area_mm2",
    "tumour_fraction",
    "nuclei",
    "tumour_nuclei",
    "purity",
    "purity_soft",
)


@dataclass(frozen=True)
class BurdenConfig:
    """Which map (``predictions``), where a tile counts as tumour (P ≥ ``threshold``),
    which encoder's tiles carry nuclei counts (None: no purity)."""

    predictions: str
    threshold: float = 0.5
    nuclei_encoder: str | None = NUCLEI_ENCODER

    def __post_init__(self) -> None:
        t = self.threshold
        if (
            isinstance(t, bool)
            or not isinstance(t, int | float)
            or not (math.isfinite(t) and 0 < t < 1)
        ):
            raise ConfigError(f"burden threshold must be in (0, 1), not {t!r}")


def nuclei_counts(embeddings: np.ndarray, tile_size: np.ndarray) -> np.ndarray:
    """Nuclei per tile from handcrafted-he-v1 embeddings (N, 64) and tile sides in px."""
    from features.encoders.handcrafted import FEATURE_NAMES

    # The encoder names each of its dimensions (colour, stain, nuclei, texture).
    index = FEATURE_NAMES.index(_DENSITY)
    if embeddings.ndim != 2 or embeddings.shape[1] <= index:
        raise ConfigError(
            f"nuclei counts need {NUCLEI_ENCODER} embeddings (64 values), got "
            f"shape {embeddings.shape}"
        )
    density = np.expm1(np.asarray(embeddings[:, index], np.float64))
    return np.maximum(density, 0.0) * np.asarray(tile_size, np.float64) ** 2 / _PER_PX


def _frames(store: FeatureStore, slide_ids: Sequence[str]) -> dict[str, float | None]:
    rows = store.slides(
        slide_ids=list(slide_ids), status="done", columns=["slide_id", "mpp"]
    ).to_pylist()
    return {r["slide_id"]: r["mpp"] for r in reversed(rows)}


def _geometry(
    store: FeatureStore,
    slide_ids: Sequence[str],
    mpp: dict[str, float | None],
    nuclei_encoder: str | None,
) -> pd.DataFrame:
    """(slide_id, x, y, extent, tissue, nuclei) of the slides' tiles; the nuclei
    encoder's rows first, so its geometry wins where encoders share a tile."""
    from features.annotations.stored import tile_extent
    from features.store.schema import embeddings_to_numpy

    encoders = store.encoders()
    order = sorted(encoders, key=lambda e: e != nuclei_encoder)
    parts = []
    for encoder in order:
        counting = encoder == nuclei_encoder
        cols = ["slide_id", "x", "y", "tile_size", "read_mpp", "level", "tissue_fraction"]
        t = store.tiles(
            encoder=encoder,
            slide_ids=list(slide_ids),
            columns=cols + (["embedding"] if counting else []),
        )
        if not t.num_rows:
            continue
        frame = pd.DataFrame({c: t.column(c).to_numpy(zero_copy_only=False) for c in cols})
        frame["extent"] = np.nan
        for sid, idx in frame.groupby("slide_id").indices.items():
            sub = frame.iloc[idx]
            frame.loc[frame.index[idx], "extent"] = tile_extent(
                sub["tile_size"].to_numpy(),
                sub["read_mpp"].to_numpy(np.float64),
                sub["level"].to_numpy(),
                mpp.get(sid),
                sid,
            )
        frame["tissue"] = frame["tissue_fraction"].astype(np.float64).fillna(1.0)
        frame["nuclei"] = (
            nuclei_counts(embeddings_to_numpy(t.column("embedding")), frame["tile_size"].to_numpy())
            if counting
            else np.nan
        )
        parts.append(frame[["slide_id", "x", "y", "extent", "tissue", "nuclei"]])
    if not parts:
        return pd.DataFrame(columns=["slide_id", "x", "y", "extent", "tissue", "nuclei"])
    return pd.concat(parts, ignore_index=True).drop_duplicates(["slide_id", "x", "y"])


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else None


def _slide_row(tiles: pd.DataFrame, mpp: float | None, config: BurdenConfig) -> dict[str, Any]:
    tumour = tiles["value"].to_numpy() >= config.threshold
    mm2 = (tiles["extent"] * (mpp or math.nan) / 1000.0) ** 2 * tiles["tissue"]
    tissue_area, tumour_area = float(mm2.sum()), float(mm2[tumour].sum())
    counted = tiles["nuclei"].notna().to_numpy()
    nuclei = tiles["nuclei"].to_numpy(np.float64)
    total = float(nuclei[counted].sum()) if counted.any() else math.nan
    in_tumour = float(nuclei[counted & tumour].sum()) if counted.any() else math.nan
    soft = (
        float((nuclei[counted] * tiles["value"].to_numpy()[counted]).sum())
        if counted.any()
        else math.nan
    )
    return {
        "predictions": config.predictions,
        "threshold": float(config.threshold),
        "nuclei_encoder": config.nuclei_encoder if counted.any() else None,
        "n_tiles": len(tiles),
        "n_tumour_tiles": int(tumour.sum()),
        "tissue_area_mm2": tissue_area if mpp else None,
        "tumour_area_mm2": tumour_area if mpp else None,
        "tumour_fraction": _ratio(tumour_area, tissue_area),
        "nuclei": None if math.isnan(total) else total,
        "tumour_nuclei": None if math.isnan(in_tumour) else in_tumour,
        "purity": _ratio(in_tumour, total),
        "purity_soft": _ratio(soft, total),
    }


_SCHEMA = pa.schema(
    [
        pa.field("predictions", pa.string()),
        pa.field("threshold", pa.float64()),
        pa.field("nuclei_encoder", pa.string()),
        pa.field("n_tiles", pa.int64()),
        pa.field("n_tumour_tiles", pa.int64()),
        *(pa.field(c, pa.float64()) for c in BURDEN_COLUMNS[5:]),
    ]
)


def compute_burden(
    store: FeatureStore, config: BurdenConfig, slide_ids: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per slide with predictions (module docstring); nothing is written."""
    preds = store.derived(
        "predictions",
        config.predictions,
        slide_ids=slide_ids,
        columns=["slide_id", "x", "y", "value"],
    ).to_pandas()
    if preds.empty:
        raise ConfigError(
            f"predictions/{config.predictions} has no rows"
            + (f" for slides {', '.join(slide_ids)}" if slide_ids else "")
        )
    sids = sorted(preds["slide_id"].unique())
    mpp = _frames(store, sids)
    geometry = _geometry(store, sids, mpp, config.nuclei_encoder)
    joined = preds.merge(geometry, on=["slide_id", "x", "y"], how="left")
    lost = joined[joined["extent"].isna()]
    if len(lost):
        raise ConfigError(
            f"predictions/{config.predictions} names {len(lost)} tile(s) of slide "
            f"{lost['slide_id'].iloc[0]!r} the store no longer has (re-ingested "
            "since?)"
        )
    rows = [
        {"slide_id": sid, **_slide_row(tiles, mpp.get(sid), config)}
        for sid, tiles in joined.groupby("slide_id", sort=True)
    ]
    return pd.DataFrame(rows, columns=["slide_id", *BURDEN_COLUMNS])


def tumour_burden(
    store: FeatureStore,
    config: BurdenConfig,
    *,
    slide_ids: Sequence[str] | None = None,
    name: str | None = None,
    write: bool = True,
) -> pd.DataFrame:
    """:func:`compute_burden`, stored as ``slide_features/<name>`` (default: the
    predictions' name) unless ``write`` is False."""
    frame = compute_burden(store, config, slide_ids)
    if write:
        rows = {
            sid: pa.Table.from_pandas(
                part.drop(columns="slide_id"), schema=_SCHEMA, preserve_index=False
            )
            for sid, part in frame.groupby("slide_id", sort=True)
        }
        store.write_derived(SLIDE_FEATURES, name or config.predictions, rows)
        log.info(
            "tumour burden of %d slides into %s/%s",
            len(rows),
            SLIDE_FEATURES,
            name or config.predictions,
        )
    return frame


def burden_table(
    store: FeatureStore, name: str, slide_ids: Sequence[str] | None = None
) -> pd.DataFrame:
    """The stored burden rows as a labels table (``slide_id`` first), for ``cohort``,
    ``probe`` or ``store.sql(..., tables={"burden": ...})``."""
    table = store.derived(SLIDE_FEATURES, name, slide_ids=slide_ids)
    return table.to_pandas().sort_values("slide_id", kind="stable").reset_index(drop=True)


def write_table_file(frame: pd.DataFrame, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a burden table where ``cohort build --labels``, ``probe`` and ``query sql
    --table`` read it: Parquet, TSV or CSV by suffix (atomically; refuses to overwrite)."""
    from infra.files import atomic_path, check_output

    target = check_output(path, overwrite=overwrite)
    suffix = target.suffix.lower()
    if suffix not in (".parquet", ".tsv", ".csv"):
        raise ConfigError(f"{target}: a burden table is written as .parquet, .tsv or .csv")
    with atomic_path(target, overwrite=overwrite) as tmp:
        if suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, sep="\t" if suffix == ".tsv" else ",", index=False)
    return target
