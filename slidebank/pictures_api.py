"""Pictures a pathologist reads: tile galleries, heatmaps over thumbnails, embedding maps.

* :func:`similarity_gallery`: the query tile beside its neighbours, each titled with its
  slide, position and distance (pixels read from the slides the store recorded);
* :func:`heatmap`: per-tile values (MIL attention written by
  :mod:`training.mil.attention`, or any per-tile predictions) over the slide's
  thumbnail, with a colour bar and axes in millimetres;
* :func:`embedding_map`: a PCA or UMAP map of slide (or tile) embeddings coloured by a
  label or by slide (distinct colours for up to 20 groups, a continuous map beyond).

All are matplotlib (Agg) figures written atomically. An existing file is refused
(:class:`~infra.errors.OutputExistsError`) before anything is drawn unless
``overwrite=True``; a full disk or read-only folder raises a typed
:class:`~infra.errors.StoreWriteError` naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from infra.errors import ConfigError
from infra.files import check_output
from infra.fs_errors import translate_write_errors

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = [
    "UMAP_MIN_POINTS",
    "attention_names",
    "embedding_map",
    "group_colours",
    "heatmap",
    "similarity_gallery",
]

log = logging.getLogger(__name__)


def _save(fig: Any, path: Path) -> Path:
    from training.figures import save_figure

    with translate_write_errors(path):
        return save_figure(fig, path)


def _slide_rows(store: FeatureStore, slide_ids: list[str], columns: list[str]) -> dict[str, dict]:
    rows = store.slides(slide_ids=slide_ids, status="done", columns=["slide_id", *columns])
    return {r["slide_id"]: r for r in rows.to_pylist()}


def _read_tiles(store: FeatureStore, hits: list[dict]) -> list[np.ndarray | str]:
    """RGB of each hit (or why it could not be read), each slide opened once."""
    from ingest.slides import open_slide

    uris = _slide_rows(store, sorted({h["slide_id"] for h in hits}), ["source_uri"])
    out: list[np.ndarray | str] = ["" for _ in hits]
    for sid in sorted({h["slide_id"] for h in hits}):
        mine = [i for i, h in enumerate(hits) if h["slide_id"] == sid]
        uri = (uris.get(sid) or {}).get("source_uri")
        if not uri:  # an old or partial slide row: say so in the panel instead of failing
            for i in mine:
                out[i] = "slide path not recorded"
            continue
        try:
            with open_slide(uri) as slide:
                for i in mine:
                    h = hits[i]
                    out[i] = slide.read_regions_at_mpp(
                        [(int(h["x"]), int(h["y"]))], int(h["tile_size"]), float(h["read_mpp"])
                    )[0]
        except (OSError, ValueError) as exc:
            for i in mine:
                out[i] = f"slide not readable:\n{type(exc).__name__}"
            log.warning("%s: cannot read tiles from %s: %s", sid, uri, exc)
    return out


def similarity_gallery(
    store: FeatureStore,
    hits: Any,
    path: str | Path,
    *,
    query: tuple[str | None, int | None, int | None] | None = None,
    metric: str = "L2",
    max_tiles: int = 12,
    overwrite: bool = False,
) -> Path:
    """The query tile (when given) then the hits, nearest first, with slide, x, y and distance."""
    from training.figures import pyplot

    path = check_output(path, overwrite=overwrite)
    rows = hits.to_pylist()[:max_tiles] if hasattr(hits, "to_pylist") else list(hits)[:max_tiles]
    panels = []
    sid, x, y = query or (None, None, None)
    if sid is not None and x is not None and y is not None:
        meta = store.tiles(
            slide_ids=[sid],
            columns=["x", "y", "tile_size", "read_mpp"],
            where=f"x = {int(x)} AND y = {int(y)}",
        ).to_pylist()
        if meta:
            panels.append(({"slide_id": sid, **meta[0]}, "query"))
    panels += [(r, f"d = {r['distance']:.3g}") for r in rows]
    if not panels:
        raise ConfigError("nothing to draw: the query returned no tiles")
    images = _read_tiles(store, [p[0] for p in panels])
    plt = pyplot()
    cols = min(len(panels), 6)
    n_rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(2.3 * cols, 2.6 * n_rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (row, caption), image in zip(axes.ravel(), panels, images, strict=False):
        if isinstance(image, str):
            ax.text(0.5, 0.5, image, ha="center", va="center", fontsize=7, wrap=True)
        else:
            ax.imshow(image)
        colour = "tab:red" if caption == "query" else "black"
        ax.set_title(
            f"{row['slide_id']}\n({row['x']}, {row['y']})  {caption}", fontsize=7, color=colour
        )
        if caption == "query":
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("tab:red")
                spine.set_linewidth(3)
    words = {"L2": "squared L2", "cosine": "cosine (1 − cos)", "dot": "−dot product"}
    fig.suptitle(
        f"query tile and its {len(rows)} nearest tiles, distance: {words.get(metric, metric)}",
        fontsize=9,
    )
    return _save(fig, path)


def attention_names(store: FeatureStore) -> list[str]:
    """Attention runs written into the store (its derived ``attention`` tables)."""
    return [table.name for table in store.derived_tables("attention")]


def _attention_values(store: FeatureStore, slide_id: str, name: str) -> pd.DataFrame:
    names = attention_names(store)
    if name not in names:
        raise ConfigError(
            f"no attention run {name!r} in the store; it has "
            f"{', '.join(names) or 'none (train with attention: true)'}"
        )
    table = store.derived(
        "attention", name, slide_ids=[slide_id], columns=["x", "y", "attention"]
    ).to_pandas()
    if table.empty:
        raise ConfigError(f"attention run {name!r} has no values for slide {slide_id!r}")
    return table.rename(columns={"attention": "value"})


def heatmap(
    store: FeatureStore,
    slide_id: str,
    path: str | Path,
    *,
    attention: str | None = None,
    values: pd.DataFrame | None = None,
    column: str | None = None,
    cmap: str = "inferno",
    alpha: float = 0.6,
    overwrite: bool = False,
) -> Path:
    """Per-tile values over the slide thumbnail: axes in mm, a colour bar and a title that
    state the range (a near-uniform range, max/min < 1.1, is drawn on a fixed scale and
    called so, never stretched over the colour map), and a scale bar.

    Give ``attention`` (a run name among :func:`attention_names`) or ``values`` (a DataFrame with
    ``x``, ``y`` and ``column``, optionally ``slide_id`` to filter on).
    """
    store.bag(slide_id)  # an unknown slide id is an error naming what exists
    if values is not None:
        if column is None or column not in values.columns:
            raise ConfigError(
                f"--column must name a values column; they are "
                f"{', '.join(map(str, values.columns))}"
            )
        frame = values[values["slide_id"] == slide_id] if "slide_id" in values.columns else values
        frame = frame.rename(columns={column: "value"})[["x", "y", "value"]]
        what = column
        if frame.empty:
            raise ConfigError(f"the values table has no rows for slide {slide_id!r}")
    else:
        names = attention_names(store)
        if attention is None:
            if len(names) != 1:
                raise ConfigError(
                    f"pass an attention run name ({', '.join(names) or 'none in the store'})"
                    " or a per-tile values table"
                )
            attention = names[0]
        frame = _attention_values(store, slide_id, attention)
        what = f"attention ({attention})"
    path = check_output(path, overwrite=overwrite)  # the inputs first: their errors say more
    info = _slide_rows(store, [slide_id], ["mpp", "level_dimensions"])[slide_id]
    mpp = float(info["mpp"])
    width0, height0 = info["level_dimensions"][0]
    tiles = (
        store.tiles(slide_ids=[slide_id], columns=["tile_size", "read_mpp"]).slice(0, 1).to_pylist()
    )
    extent0 = tiles[0]["tile_size"] * tiles[0]["read_mpp"] / mpp  # tile side in level-0 px
    thumb = np.asarray(store.arrays(slide_id).read_image("thumbnail"))
    from features.store.arrays import grid_from_coords
    from training.figures import draw_tile_map

    coords = frame[["x", "y"]].to_numpy(dtype=np.int64)
    rows, cols, stride, origin, shape = grid_from_coords(coords, max(1, int(round(extent0))))
    grid = np.full(shape, np.nan, np.float32)
    grid[rows, cols] = frame["value"].to_numpy(dtype=np.float32)
    with translate_write_errors(path):
        return draw_tile_map(
            thumb,
            grid,
            path,
            level0_size=(width0, height0),
            mpp=mpp,
            origin=origin,
            stride=stride,
            title=f"{slide_id}: {what}",
            label=what,
            cmap=cmap,
            alpha=alpha,
        )


def embedding_map(
    store: FeatureStore,
    path: str | Path,
    *,
    level: str = "slide",
    labels: Any = None,
    color: str | None = None,
    encoder: str | None = None,
    max_tiles: int = 20_000,
    seed: int = 0,
    method: str = "auto",
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """A 2-d map of slide (mean-pooled) or tile embeddings, coloured by ``color`` (a column
    of ``labels``, joined on slide_id or patient_id) or else by slide.

    ``method``: ``pca`` (instant), ``umap`` (umap-learn; its first call compiles with numba,
    tens of seconds) or ``auto``: PCA below :data:`UMAP_MIN_POINTS` points or when
    umap-learn is not installed, else UMAP.
    """
    path = check_output(path, overwrite=overwrite)  # before umap's slow first import
    if method not in ("auto", "pca", "umap"):
        raise ConfigError(f"method must be auto, pca or umap, not {method!r}")
    frame, x = _embedding_points(store, level, encoder, max_tiles, seed)
    if len(frame) < 4:
        raise ConfigError(f"a map needs at least 4 {level}s, the store has {len(frame)}")
    colour_by = "slide_id"
    if labels is not None:
        from training.cohorts.labels import join_labels, read_labels

        table_l = (
            labels
            if isinstance(labels, pd.DataFrame)
            else read_labels(str(labels), storage_options)
        )
        slides = (
            store.slide_embeddings(encoder=encoder).select(["slide_id", "patient_id"]).to_pandas()
        )
        joined = join_labels(table_l, slides, label_columns=[color] if color else None).table
        colour_by = color or joined.columns[-1]
        frame = frame.merge(joined[["slide_id", colour_by]], on="slide_id", how="left")
    xy, axes_names = _project(x, _pick_method(method, len(frame)), seed)
    return _draw_map(store, path, frame, xy, axes_names, colour_by, level, encoder)


#: Below this many points ``method="auto"`` draws a PCA: UMAP's neighbourhood graph says
#: little about a dozen slides, and its numba start-up took 73 s for 16 (issue 30).
UMAP_MIN_POINTS = 50


def _pick_method(method: str, n: int) -> str:
    import importlib.util

    installed = importlib.util.find_spec("umap") is not None
    if method == "umap" and not installed:
        raise ConfigError(
            "method 'umap' needs umap-learn (pip install umap-learn); or pass method 'pca'"
        )
    if method == "auto":
        return "umap" if installed and n >= UMAP_MIN_POINTS else "pca"
    return method


def _embedding_points(
    store: FeatureStore, level: str, encoder: str | None, max_tiles: int, seed: int
) -> tuple[pd.DataFrame, np.ndarray]:
    from features.store.schema import embeddings_to_numpy
    from features.store.slide_embeddings import to_numpy

    if level == "slide":
        table = store.slide_embeddings(encoder=encoder)
        return table.select(["slide_id", "patient_id"]).to_pandas(), to_numpy(table, "mean")
    if level == "tile":
        table = store.tiles(encoder=encoder, columns=["slide_id", "embedding"])
        if table.num_rows > max_tiles:  # an even sample keeps every slide represented
            pick = np.random.default_rng(seed).choice(table.num_rows, max_tiles, replace=False)
            table = table.take(np.sort(pick))
        x = embeddings_to_numpy(table.column("embedding")).astype(np.float32)
        return table.select(["slide_id"]).to_pandas(), x
    raise ConfigError(f"level must be 'slide' or 'tile', not {level!r}")


def _project(x: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, tuple[str, str]]:
    """2-d coordinates and axis names."""
    if method == "pca":
        centred = x.astype(np.float64) - x.mean(axis=0)
        _, sing, vt = np.linalg.svd(centred, full_matrices=False)
        share = sing**2 / max(float(np.sum(sing**2)), 1e-300)
        xy = centred @ vt[:2].T
        if xy.shape[1] < 2:  # one-dimensional embeddings: a flat second axis
            xy = np.c_[xy, np.zeros(len(xy))]
        names = tuple(
            f"PC {i + 1} ({share[i]:.0%} of variance)" if i < len(share) else f"PC {i + 1}"
            for i in range(2)
        )
        return xy, (names[0], names[1])
    import warnings

    with warnings.catch_warnings():
        # umap-learn warns at import that TensorFlow (for ParametricUMAP, unused) is absent.
        warnings.simplefilter("ignore", ImportWarning)
        import umap

    neighbours = max(2, min(15, len(x) - 1))
    xy = umap.UMAP(n_neighbors=neighbours, random_state=seed, n_jobs=1).fit_transform(x)
    return np.asarray(xy), ("UMAP 1", "UMAP 2")


def group_colours(n: int) -> tuple[list[Any], bool]:
    """(n distinct colours, whether a legend can show them): tab10 up to 10 groups, tab20
    up to 20, beyond that evenly spaced on a continuous map (no legend: it would be a wall
    of swatches; the title says so)."""
    from training.figures import pyplot

    plt = pyplot()
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)], True
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)], True
    return [plt.get_cmap("turbo")(v) for v in np.linspace(0.05, 0.95, n)], False


def _draw_map(
    store: FeatureStore,
    path: Path,
    frame: pd.DataFrame,
    xy: np.ndarray,
    axes_names: tuple[str, str],
    colour_by: str,
    level: str,
    encoder: str | None,
) -> Path:
    from training.figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    values = frame[colour_by]
    numeric = pd.api.types.is_numeric_dtype(values) and values.nunique() > 10
    note = ""
    if numeric:
        sc = ax.scatter(
            xy[:, 0], xy[:, 1], c=values, s=14 if level == "slide" else 3, cmap="viridis"
        )
        fig.colorbar(sc, ax=ax, label=colour_by)
    else:
        groups = values.astype("string").fillna("(no label)")
        names = sorted(groups.unique())
        colours, legend = group_colours(len(names))
        for name, colour in zip(names, colours, strict=True):
            hit = (groups == name).to_numpy()
            ax.scatter(
                xy[hit, 0],
                xy[hit, 1],
                s=24 if level == "slide" else 3,
                label=str(name),
                color=colour,
            )
        if legend:
            ax.legend(
                title=colour_by,
                fontsize=7,
                markerscale=2 if level == "tile" else 1,
                loc="best",
                ncol=1 if len(names) <= 12 else 2,
            )
        else:
            note = f"\none colour per {colour_by} ({len(names)}, continuous map; no legend)"
    ax.set(xlabel=axes_names[0], ylabel=axes_names[1])
    kind = axes_names[0].split()[0].replace("PC", "PCA")
    ax.set_title(
        f"{kind} of {len(frame)} {level} embeddings ({store._encoder(encoder)}), "
        f"coloured by {colour_by}{note}",
        fontsize=9,
    )
    return _save(fig, path)
