"""Tile-level truth: exact coverage cost, tile classifiers, and context vs single tiles.

1. Coverage: per-class coverage of a G×G grid of tiles under an irregular polygon with
   a hole, computed exactly with shapely (seconds, tiles/s); checked against
   shapely's one-tile-at-a-time intersection on a sample.
2. Clean cohort (separation 6: single tiles nearly separable): linear and MLP heads,
   patient-level CV; tile AUROC with its patient-bootstrap CI and area Dice.
3. Ambiguous cohort (separation 1.35: a single tile at coverage 0 vs 1 is ~75%
   separable; tumour is contiguous with a wavy border): single-tile linear head vs the
   context head (own embedding + mean of neighbours within ``hops`` tiles) vs the
   context head with tile coordinates shuffled within each slide (the control), and the
   spatial models' tile heads (``tile_gnn``, ``region_transformer`` trained on tile
   labels, ``training.tiles.spatial``) with and without shuffling, over ≥ 3 seeds;
   Dice mean and 95% t-interval over seeds, and the paired gains over the single tile.

4. The same through pixels (``synthetic.tile_slides``): pyramidal TIFFs whose tumour
   and other tissue differ only in nuclear crowding, moved per tile by a random offset
   so single tiles are ambiguous, ingested by the real pipeline with the default
   weight-free encoder (``handcrafted-he-v1``); annotations are the planted polygons.
   Single-tile vs context vs context with shuffled coordinates, one cohort per seed;
   also the single-tile separability the encoder gives (pure tumour vs pure other
   tiles, out-of-fold).

CPU scikit-learn heads; Ray only inside the ingestion of part 4.

Usage: python -m benchmarks.tile_tasks [--quick] [--out benchmarks/results/tile_tasks.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import ROOT, machine, print_table, write_json

FULL = {
    "grid": 300, "slides": 24, "side": 32, "dim": 32, "seeds": 5, "folds": 4, "hops": 2,
    "pixel_slides": 12, "pixel_side": 20, "pixel_seeds": 5, "pixel_hops": 1,
}  # fmt: skip
QUICK = {
    "grid": 120, "slides": 12, "side": 24, "dim": 16, "seeds": 3, "folds": 3, "hops": 2,
    "pixel_slides": 8, "pixel_side": 16, "pixel_seeds": 3, "pixel_hops": 1,
}  # fmt: skip


def coverage_cost(grid: int) -> dict[str, Any]:
    import shapely

    from features.annotations.coverage import class_coverage, tile_boxes
    from synthetic.tiles import tumour_polygon

    rng = np.random.default_rng(0)
    side = 256.0
    shape = tumour_polygon(rng, grid * side)
    c = shape.centroid
    shape = shape.difference(shapely.Point(c.x, c.y).buffer(grid * side * 0.05))
    gx, gy = np.meshgrid(np.arange(grid) * side, np.arange(grid) * side)
    x, y = gx.ravel(), gy.ravel()
    t0 = time.perf_counter()
    got = class_coverage(tile_boxes(x, y, side), shape)
    seconds = time.perf_counter() - t0
    pick = rng.choice(len(x), size=min(2000, len(x)), replace=False)
    want = np.array(
        [
            shapely.box(x[i], y[i], x[i] + side, y[i] + side).intersection(shape).area / side**2
            for i in pick
        ]
    )
    return {
        "tiles": len(x),
        "seconds": seconds,
        "tiles_per_s": len(x) / seconds,
        "max_abs_error_vs_per_tile_shapely": float(np.abs(got[pick] - want).max()),
        "polygon_vertices": int(shapely.get_num_coordinates(shape)),
    }


def _t_interval(values: list[float]) -> dict[str, float]:
    from scipy import stats

    v = np.asarray(values, np.float64)
    mean = float(v.mean())
    half = (
        float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
        if len(v) > 1
        else float("nan")
    )
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": len(v)}


def _run(store: Any, folds: int, seed: int, **kw: Any) -> Any:
    from training.tiles import TileClassifierConfig, TileTask, run_tile_classifier

    config = TileClassifierConfig(TileTask("tumour"), folds=folds, seed=seed, n_boot=200, **kw)
    return run_tile_classifier(store, config, write=False)


def clean(root: Path, size: dict[str, Any]) -> list[dict[str, Any]]:
    from synthetic.tiles import make_tile_cohort

    cohort = make_tile_cohort(
        str(root / "clean"),
        n_slides=size["slides"],
        side=size["side"],
        dim=size["dim"],
        separation=6.0,
        seed=100,
    )
    rows = []
    for head in ("linear", "mlp"):
        t0 = time.perf_counter()
        r = _run(cohort.store, size["folds"], 0, head=head)
        auc = r.metrics["auroc"]
        rows.append(
            {
                "case": f"clean {head}",
                "seconds": time.perf_counter() - t0,
                "auroc": auc["value"],
                "auroc_ci": [auc["ci_low"], auc["ci_high"]],
                "dice": r.dice,
                "n_tiles": len(r.data),
            }
        )
    return rows


def ambiguous(root: Path, size: dict[str, Any]) -> dict[str, Any]:
    from synthetic.tiles import make_tile_cohort

    arms = {
        "single": {},
        "context": {"context_hops": size["hops"]},
        "context_shuffled": {"context_hops": size["hops"], "shuffle_coords": True},
        "tile_gnn": {"head": "tile_gnn"},
        "tile_gnn_shuffled": {"head": "tile_gnn", "shuffle_coords": True},
        "region_transformer": {"head": "region_transformer"},
        "region_transformer_shuffled": {"head": "region_transformer", "shuffle_coords": True},
    }
    dice: dict[str, list[float]] = {a: [] for a in arms}
    auroc: dict[str, list[float]] = {a: [] for a in arms}
    seconds: dict[str, float] = dict.fromkeys(arms, 0.0)
    for seed in range(size["seeds"]):
        cohort = make_tile_cohort(
            str(root / f"amb{seed}"),
            n_slides=size["slides"],
            side=size["side"],
            dim=size["dim"],
            separation=1.35,
            seed=seed,
        )
        for arm, kw in arms.items():
            t0 = time.perf_counter()
            r = _run(cohort.store, size["folds"], seed, **kw)
            seconds[arm] += time.perf_counter() - t0
            dice[arm].append(r.dice)
            auroc[arm].append(r.metrics["auroc"]["value"])

    def gain_over_single(arm: str) -> dict[str, float]:
        return _t_interval([c - s for c, s in zip(dice[arm], dice["single"], strict=True)])

    return {
        "separation": 1.35,
        "seconds": seconds,
        "spatial_heads": {
            head: {
                "gain": gain_over_single(head),
                "shuffled_gain": gain_over_single(f"{head}_shuffled"),
            }
            for head in ("tile_gnn", "region_transformer")
        },
        "hops": size["hops"],
        "dice": dice,
        "auroc": auroc,
        "dice_summary": {a: _t_interval(v) for a, v in dice.items()},
        "auroc_summary": {a: _t_interval(v) for a, v in auroc.items()},
        "context_gain": gain_over_single("context"),
        "shuffled_gain": gain_over_single("context_shuffled"),
    }


def _separability(data: Any, probs: np.ndarray) -> dict[str, float]:
    """Out-of-fold single-tile separability of pure tiles (coverage 0 vs 1): AUROC and the
    best balanced accuracy over thresholds."""
    from sklearn.metrics import roc_auc_score, roc_curve

    pure = (data.coverage == 0) | (data.coverage == 1)
    y, p = data.labels[pure], probs[pure]
    fpr, tpr, _ = roc_curve(y, p)
    return {
        "pure_tiles": int(pure.sum()),
        "pure_auroc": float(roc_auc_score(y, p)),
        "best_balanced_accuracy": float(((tpr + 1 - fpr) / 2).max()),
    }


def pixels(root: Path, size: dict[str, Any]) -> dict[str, Any]:
    from synthetic.tile_slides import AmbiguousSlideSpec, make_pixel_tile_cohort

    hops = size["pixel_hops"]
    arms = {
        "single": {},
        "context": {"context_hops": hops},
        "context_shuffled": {"context_hops": hops, "shuffle_coords": True},
        "tile_gnn": {"head": "tile_gnn"},
        "tile_gnn_shuffled": {"head": "tile_gnn", "shuffle_coords": True},
        "region_transformer": {"head": "region_transformer"},
        "region_transformer_shuffled": {"head": "region_transformer", "shuffle_coords": True},
    }
    spec = AmbiguousSlideSpec(side_tiles=size["pixel_side"])
    dice: dict[str, list[float]] = {a: [] for a in arms}
    auroc: dict[str, list[float]] = {a: [] for a in arms}
    separability, cohorts = [], []
    for seed in range(size["pixel_seeds"]):
        cohort = make_pixel_tile_cohort(
            root / f"pix{seed}", size["pixel_slides"], spec=spec, seed=seed, processes=1
        )
        for arm, kw in arms.items():
            r = _run(cohort.store, size["folds"], seed, **kw)
            dice[arm].append(r.dice)
            auroc[arm].append(r.metrics["auroc"]["value"])
            if arm == "single":
                separability.append(_separability(r.data, r.probs))
                n_tiles = len(r.data)
        cohorts.append({"seed": seed, "tiles": n_tiles, **cohort.seconds})

    def gain_over_single(arm: str) -> dict[str, float]:
        return _t_interval([c - s for c, s in zip(dice[arm], dice["single"], strict=True)])

    return {
        "spatial_heads": {
            head: {
                "gain": gain_over_single(head),
                "shuffled_gain": gain_over_single(f"{head}_shuffled"),
            }
            for head in ("tile_gnn", "region_transformer")
        },
        "spec": {
            "side_tiles": spec.side_tiles,
            "tumour_crowd": spec.tumour_crowd,
            "other_crowd": spec.other_crowd,
            "jitter": spec.jitter,
        },
        "encoder": "handcrafted-he-v1",
        "hops": hops,
        "cohorts": cohorts,
        "single_tile_separability": separability,
        "single_tile_best_balanced_accuracy": _t_interval(
            [s["best_balanced_accuracy"] for s in separability]
        ),
        "dice": dice,
        "auroc": auroc,
        "dice_summary": {a: _t_interval(v) for a, v in dice.items()},
        "auroc_summary": {a: _t_interval(v) for a, v in auroc.items()},
        "context_gain": gain_over_single("context"),
        "shuffled_gain": gain_over_single("context_shuffled"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tile_tasks.json"))
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    started = time.perf_counter()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cover = coverage_cost(size["grid"])
        heads = clean(Path(tmp), size)
        context = ambiguous(Path(tmp), size)
        through_pixels = pixels(Path(tmp), size)
    rows = (
        [*heads]
        + [
            {
                "case": f"ambiguous {a}",
                "dice": s["mean"],
                "dice_ci": f"{s['ci_low']:.3f}-{s['ci_high']:.3f}",
                "auroc": context["auroc_summary"][a]["mean"],
            }
            for a, s in context["dice_summary"].items()
        ]
        + [
            {
                "case": f"pixels {a}",
                "dice": s["mean"],
                "dice_ci": f"{s['ci_low']:.3f}-{s['ci_high']:.3f}",
                "auroc": through_pixels["auroc_summary"][a]["mean"],
            }
            for a, s in through_pixels["dice_summary"].items()
        ]
    )
    print_table(rows, ["case", "seconds", "auroc", "dice", "dice_ci"])
    print(
        f"coverage: {cover['tiles']} tiles in {cover['seconds']:.2f} s; context gain "
        f"{context['context_gain']['mean']:+.3f} Dice, shuffled {context['shuffled_gain']['mean']:+.3f}"
    )
    print(
        f"through pixels: context gain {through_pixels['context_gain']['mean']:+.3f} Dice, "
        f"shuffled {through_pixels['shuffled_gain']['mean']:+.3f}; single-tile balanced "
        f"accuracy {through_pixels['single_tile_best_balanced_accuracy']['mean']:.2f}"
    )
    write_json(
        args.out,
        {
            "machine": machine(),
            "quick": args.quick,
            "size": size,
            "note": "2-core machine shared with other jobs while measured",
            "load_average_1_5_15": {"start": load_start, "end": os.getloadavg()},
            "coverage": cover,
            "clean": heads,
            "ambiguous": context,
            "pixels": through_pixels,
            "total_seconds": time.perf_counter() - started,
        },
    )


if __name__ == "__main__":
    main()
