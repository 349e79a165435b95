"""Masking diagnostics — the image-side analogue of gene masking (Smedley et al. 2021).

* :func:`module_masking`: drop all tiles of one tissue module and record how each
  prediction moves (per module, per target).
* :func:`edge_masking`: cut the grid contacts between two modules (the tiles stay) and
  record the change; needs a graph model (one that takes ``edges=``).
* :func:`coordinate_shuffle`: permute coordinates within a slide, features kept. A model
  that uses space loses its spatial signal; one that does not is unchanged (the
  spatial-blindness test, arXiv 2605.17449).

:func:`masking_table` runs module masking over a set of bags and summarises it: mean
|Δ| per module and target, mean signed Δ per class, and the AUROC with each module
masked; :func:`write_masking_png` draws the summary as a bar chart.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from infra.errors import ConfigError
from training.spatial.graphs import GraphSpec, tile_graph

__all__ = [
    "coordinate_shuffle",
    "edge_masking",
    "masking_table",
    "module_masking",
    "predict_bag",
    "tile_prediction_map",
    "write_masking_png",
]


def _as_tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    return (
        value.to(dtype)
        if isinstance(value, torch.Tensor)
        else torch.as_tensor(np.asarray(value), dtype=dtype)
    )


@torch.no_grad()
def predict_bag(
    model: nn.Module, head: Any, x: Any, coords: Any, *, edges: Any = None
) -> np.ndarray:
    """The head's prediction for one bag (P(class 1) for binary, raw scale for regression)."""
    model.eval()
    xt, ct = _as_tensor(x, torch.float32), _as_tensor(coords, torch.long)
    if getattr(model, "uses_coords", False):
        kwargs: dict[str, Any] = {"coords": ct}
        if edges is not None:
            kwargs["edges"] = edges
        out = model(xt, None, **kwargs)
    else:
        if edges is not None:
            raise ConfigError(f"{type(model).__name__} does not take edges")
        out = model(xt)
    return np.asarray(head.predict(out.logits), dtype=float).reshape(-1)


def module_masking(
    model: nn.Module, head: Any, x: Any, coords: Any, modules: np.ndarray, module_ids: Sequence[int]
) -> dict[int, np.ndarray]:
    """{module: prediction without that module's tiles − full prediction} (NaN when the
    module is absent, or is every tile of the slide)."""
    modules = np.asarray(modules)
    full = predict_bag(model, head, x, coords)
    x_np, c_np = np.asarray(x, np.float32), np.asarray(coords, np.int64)
    out = {}
    for m in module_ids:
        keep = modules != m
        if keep.all() or not keep.any():
            out[int(m)] = np.full_like(full, np.nan)
            continue
        out[int(m)] = predict_bag(model, head, x_np[keep], c_np[keep]) - full
    return out


def _takes_edges(model: nn.Module) -> bool:
    return "edges" in inspect.signature(model.forward).parameters and getattr(
        model, "uses_coords", False
    )


def edge_masking(
    model: nn.Module,
    head: Any,
    x: Any,
    coords: Any,
    modules: np.ndarray,
    a: int,
    b: int,
    *,
    spec: GraphSpec | None = None,
) -> np.ndarray:
    """Prediction with every grid edge between modules ``a`` and ``b`` removed, minus the
    full prediction. The region transformer has no edges to cut: a ConfigError."""
    if not _takes_edges(model) or type(model).__name__ == "RegionTransformer":
        raise ConfigError(
            f"{type(model).__name__} has no tile graph; edge masking needs tile_gnn or module_graph"
        )
    modules = np.asarray(modules)
    src, dst = tile_graph(np.asarray(coords, np.int64), spec or GraphSpec())
    ms, md = modules[src], modules[dst]
    cut = ((ms == a) & (md == b)) | ((ms == b) & (md == a))
    full = predict_bag(model, head, x, coords, edges=(src, dst))
    return predict_bag(model, head, x, coords, edges=(src[~cut], dst[~cut])) - full


def coordinate_shuffle(coords: Any, rng: np.random.Generator) -> np.ndarray:
    """The same coordinates, randomly reassigned to the tiles."""
    coords = np.asarray(coords)
    return coords[rng.permutation(len(coords))]


def masking_table(
    model: nn.Module,
    head: Any,
    bags: Iterable[tuple[str, Any, Any, np.ndarray, float]],
    module_ids: Sequence[int],
    *,
    target_names: Sequence[str] = ("prediction",),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Module masking over ``bags`` of (slide_id, x, coords, modules, label).

    Returns (per-slide rows: slide, label, module, target, full, delta) and the summary
    per (module, target): mean |Δ|, mean Δ per class, AUROC with the module masked
    (binary labels only), ranked by mean |Δ|.
    """
    from sklearn.metrics import roc_auc_score

    rows = []
    for slide_id, x, coords, modules, label in bags:
        full = predict_bag(model, head, x, coords)
        for m, delta in module_masking(model, head, x, coords, modules, module_ids).items():
            for j, name in enumerate(target_names):
                rows.append(
                    {
                        "slide_id": slide_id,
                        "label": label,
                        "module": m,
                        "target": name,
                        "full": full[j],
                        "delta": delta[j],
                    }
                )
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise ConfigError("masking_table got no bags")
    summary = []
    for (m, name), part in frame.groupby(["module", "target"]):
        part = part.dropna(subset=["delta"])
        entry = {
            "module": int(m),
            "target": name,
            "mean_abs_delta": float(part["delta"].abs().mean()),
            "n_slides": len(part),
        }
        for cls, sub in part.groupby("label"):
            entry[f"mean_delta_label{cls}"] = float(sub["delta"].mean())
        masked = part["full"] + part["delta"]
        if part["label"].nunique() == 2:
            entry["auroc_masked"] = float(roc_auc_score(part["label"].astype(int), masked))
            entry["auroc_full"] = float(roc_auc_score(part["label"].astype(int), part["full"]))
        summary.append(entry)
    table = (
        pd.DataFrame(summary).sort_values("mean_abs_delta", ascending=False).reset_index(drop=True)
    )
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return frame, table


def write_masking_png(
    summary: pd.DataFrame,
    path: str | Path,
    *,
    labels: dict[int, str] | None = None,
    title: str = "module masking: mean |delta prediction|",
) -> Path:
    """A horizontal bar chart of mean |Δ| per module (first target), atomically written."""
    from PIL import Image, ImageDraw

    from training.figures import save_png

    part = summary[summary["target"] == summary["target"].iloc[0]].sort_values(
        "mean_abs_delta", ascending=False
    )
    width, bar_h, left = 560, 26, 150
    image = Image.new("RGB", (width, 50 + bar_h * len(part) + 20), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), title, fill="black")
    top = max(float(part["mean_abs_delta"].max()), 1e-12)
    for i, row in enumerate(part.itertuples()):
        y = 40 + i * bar_h
        name = (labels or {}).get(int(row.module), f"module {int(row.module)}")
        draw.text((10, y + 6), name, fill="black")
        length = int((width - left - 80) * float(row.mean_abs_delta) / top)
        draw.rectangle([left, y + 4, left + length, y + bar_h - 4], fill=(70, 110, 180))
        draw.text((left + length + 6, y + 6), f"{row.mean_abs_delta:.3f}", fill="black")
    return save_png(image, path)


@torch.no_grad()
def tile_prediction_map(model: nn.Module, head: Any, x: Any, coords: Any) -> np.ndarray:
    """Per-tile predictions (N, n_outputs) on the head's scale — ABRS-P's ``patch_pred``
    idea: the slide head applied to each tile's (or its module's) state. For heatmaps
    beside the MIL attention; write them with ``store_io.write_tile_values``."""
    tile_logits = getattr(model, "tile_logits", None)
    if tile_logits is None:
        raise ConfigError(f"{type(model).__name__} has no per-tile read-out (tile_logits)")
    model.eval()
    logits = tile_logits(_as_tensor(x, torch.float32), _as_tensor(coords, torch.long))
    return np.stack([np.asarray(head.predict(row), dtype=float).reshape(-1) for row in logits])
