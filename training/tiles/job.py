"""Tile tasks under ``slidebank train`` (``kind: tiles`` in the YAML), folds on Ray Train.

The driver loads the labelled tiles once (:func:`training.tiles.data.load_tiles`) and
puts them in Ray's object store. One ``TorchTrainer`` (as for the MIL jobs) starts
``workers`` Ray Train workers; worker ``r`` fits the patient-level folds ``k`` with ``k % workers == r``
(one fold per worker at a time: scikit-learn heads, or a small spatial model per fold) and saves each
fold's out-of-fold probabilities as ``<run>/folds/fold-<k>.npz``. The driver reads
the folds back, so a fold finished before Ray failed is never lost, and computes the
metrics, maps and outputs exactly as ``slidebank annotations classify`` does
(:mod:`training.tiles.run`). The run folder must be reachable from every worker: on a
cluster, a shared file system (as for the MIL jobs' fold folder).

    kind: tiles
    store: ./store
    class: tumour            # the positive class of the annotation set
    annotations: default     # the annotation set
    min_coverage: 0.5        # tile label: coverage of the class >= this
    encoder: handcrafted-he-v1
    region: {class: tissue, min_coverage: 0.5}   # optional: restrict the tiles first
    head: linear             # mlp, or the spatial models tile_gnn, region_transformer
    context_hops: 1          # the mean of neighbours within 1 tile (0: the tile alone)
    folds: 5
    seed: 0
    map_threshold: 0.5
    workers: 2
    out: runs/tiles          # each run writes to out/<run_id>/
    address: auto            # optional, as for the MIL jobs
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infra.errors import ConfigError
from infra.validate import integer, positive

__all__ = [
    "TileTrainConfig",
    "is_tile_config",
    "load_tile_config",
    "parse_tile_config",
    "run_tile_train",
    "tile_summary_lines",
]

log = logging.getLogger(__name__)

KIND = "tiles"
_PATH_KEYS = ("store", "out")


@dataclass(frozen=True)
class TileTrainConfig:
    store: str
    positive: str
    out: str = "runs/tiles"
    annotations: str = "default"
    min_coverage: float = 0.5
    encoder: str | None = None
    region: tuple[str, float] | None = None  # (class, min coverage)
    head: str = "linear"
    context_hops: int = 0
    folds: int = 5
    seed: int = 0
    n_boot: int = 200
    map_threshold: float = 0.5
    workers: int = 1
    address: str | None = None
    name: str | None = None
    write: bool = True
    max_pngs: int = 8

    def __post_init__(self) -> None:
        integer("workers", self.workers)
        positive("workers", self.workers)
        self.classifier()  # every classifier option is checked before Ray starts

    def classifier(self) -> Any:
        from features.annotations import RegionFilter
        from training.tiles.data import TileTask
        from training.tiles.run import TileClassifierConfig

        region = RegionFilter(self.region[0], min_coverage=self.region[1]) if self.region else None
        task = TileTask(self.positive, self.min_coverage, self.annotations, self.encoder, region)
        return TileClassifierConfig(
            task,
            head=self.head,
            folds=self.folds,
            seed=self.seed,
            n_boot=self.n_boot,
            map_threshold=self.map_threshold,
            context_hops=self.context_hops,
        )


def is_tile_config(raw: Mapping[str, Any]) -> bool:
    """True for a YAML mapping that asks for a tile task (``kind: tiles``)."""
    return isinstance(raw, Mapping) and raw.get("kind") == KIND


def parse_tile_config(raw: Mapping[str, Any], base: Path | None = None) -> TileTrainConfig:
    """The ``kind: tiles`` YAML (overrides applied) as a typed config; unknown keys and
    bad values are errors naming them."""
    values = {k: v for k, v in raw.items() if k != "kind"}
    if "class" not in values:
        raise ConfigError("a tile task needs `class:` (the positive annotation class)")
    values["positive"] = values.pop("class")
    known = {f.name for f in dataclasses.fields(TileTrainConfig)} - {"positive"}
    unknown = sorted(set(values) - known - {"positive"})
    if unknown:
        raise ConfigError(
            f"unknown tile-task key(s) {', '.join(unknown)}; known: class, "
            f"{', '.join(sorted(known))}"
        )
    if "store" not in values:
        raise ConfigError("a tile task needs `store:`")
    region = values.get("region")
    if region is not None:
        if not isinstance(region, Mapping) or "class" not in region:
            raise ConfigError("region must be a mapping {class: NAME, min_coverage: F}")
        extra = sorted(set(region) - {"class", "min_coverage"})
        if extra:
            raise ConfigError(f"unknown region key(s) {', '.join(extra)}")
        values["region"] = (str(region["class"]), float(region.get("min_coverage", 0.5)))
    if base is not None:
        from infra.storage import is_local

        for key in _PATH_KEYS:
            value = values.get(key)
            if isinstance(value, str) and is_local(value) and not Path(value).is_absolute():
                values[key] = str((base / value).resolve())
    try:
        return TileTrainConfig(**values)
    except TypeError as exc:  # a wrong type the dataclass itself refuses
        raise ConfigError(f"tile task: {exc}") from exc


def load_tile_config(path: str | Path, overrides: list[str]) -> TileTrainConfig | None:
    """The config at ``path`` with ``key=value`` overrides when it is ``kind: tiles``;
    None for any other config (a MIL run)."""
    from infra.yaml_safe import load_yaml_file
    from training.mil.run_config import apply_overrides

    path = Path(path)
    raw = load_yaml_file(path) or {}
    if not is_tile_config(raw):
        return None
    return parse_tile_config(apply_overrides(dict(raw), overrides), base=path.resolve().parent)


def tile_summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """What ``slidebank train`` prints after a tile task."""
    lines = [
        f"tile task {summary['run_id']}: {summary['n_tiles']} tiles "
        f"({summary['n_positive']} {summary['config']['task']['positive']}), "
        f"{summary['n_slides']} slides, {summary['workers']} Ray Train worker(s)"
    ]
    for metric, v in summary["metrics"].items():
        lines.append(f"  tile {metric}: {v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]")
    lines.append(f"  map Dice {summary['dice_mean']:.3f}, IoU {summary['iou_mean']:.3f}")
    if "predictions" in summary["outputs"]:
        lines.append(f"  predictions: {summary['outputs']['predictions']}")
    return lines


def _fold_file(folder: str, k: int) -> str:
    return f"{folder}/fold-{k:03d}.npz"


def _worker(loop: dict[str, Any]) -> None:
    """One Ray Train worker: fit its share of the folds and save each one."""
    import ray
    import ray.train

    from infra.files import atomic_write
    from training.tiles.run import fold_probs

    ctx = ray.train.get_context()
    rank, size = ctx.get_world_rank(), ctx.get_world_size()
    x, coords, slide_id, y = (ray.get(loop[k]) for k in ("x", "coords", "slide_id", "y"))
    folds = ray.get(loop["folds"])
    done = []
    for k, (train, test) in enumerate(folds):
        if k % size != rank:
            continue
        probs = fold_probs(loop["config"], x, coords, slide_id, y, train, test)
        with atomic_write(Path(_fold_file(loop["fold_dir"], k)), "wb") as handle:
            np.savez(handle, test=test, probs=probs)
        done.append(k)
    ray.train.report({"rank": rank, "folds": done})


def _fit_on_ray(
    data: Any, folds: list[Any], config: Any, job: TileTrainConfig, fold_dir: str
) -> None:
    import ray
    import ray.exceptions
    import ray.train
    from ray.train.torch import TorchTrainer

    from infra.local_cluster import resolve_address
    from infra.ray_runtime import connect

    connect(resolve_address(job.address))
    from training.tiles.run import _coords, _features

    loop = {
        "x": ray.put(_features(data, config)),
        "coords": ray.put(_coords(data, config)),
        "slide_id": ray.put(data.slide_id),
        "y": ray.put(data.labels),
        "folds": ray.put(folds),
        "config": config,
        "fold_dir": fold_dir,
    }
    trainer = TorchTrainer(
        _worker,
        train_loop_config=loop,
        scaling_config=ray.train.ScalingConfig(num_workers=job.workers),
        run_config=ray.train.RunConfig(
            name=Path(fold_dir).parent.name, storage_path=str(Path(fold_dir).parent / "ray")
        ),
    )
    try:
        trainer.fit()
    except (ray.train.TrainingFailedError, ray.exceptions.RayError) as exc:
        from infra.errors import TrainingFailedError

        raise TrainingFailedError(f"tile task on Ray Train failed: {exc}") from exc


def run_tile_train(
    job: TileTrainConfig, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run a tile task (module docstring); returns the summary also written to
    ``<out>/<run_id>/summary.json``."""
    from features.store import FeatureStore
    from infra.files import atomic_write_json
    from training.mil.runner import new_run_id
    from training.tiles.data import load_tiles
    from training.tiles.run import _folds, finish_tile_classifier

    config = job.classifier()
    store = FeatureStore.open(job.store)
    data = load_tiles(store, config.task)
    if len(np.unique(data.labels)) < 2:
        raise ConfigError(
            f"every tile has the same label for {job.positive!r} at coverage >= {job.min_coverage}"
        )
    run_id = new_run_id(job.name or f"tiles-{job.positive}")
    out = Path(job.out) / run_id
    fold_dir = out / "folds"
    fold_dir.mkdir(parents=True, exist_ok=True)
    folds = _folds(data, config)
    if progress:
        progress(
            f"tile task {run_id}: {len(data)} tiles, {len(data.slides())} slides, "
            f"{len(folds)} folds on {job.workers} Ray Train worker(s)"
        )
    _fit_on_ray(data, folds, config, job, str(fold_dir))
    probs = np.full(len(data), np.nan)
    for k in range(len(folds)):
        path = Path(_fold_file(str(fold_dir), k))
        if not path.exists():
            raise ConfigError(f"fold {k} of run {run_id} saved nothing at {path}")
        with np.load(path) as saved:
            probs[saved["test"]] = saved["probs"]
    result = finish_tile_classifier(
        store,
        config,
        data,
        probs,
        out_dir=out,
        name=job.name,
        write=job.write,
        max_pngs=job.max_pngs,
    )
    summary = {
        "run_id": run_id,
        "kind": KIND,
        "out": str(out),
        "workers": job.workers,
        **result.summary(),
    }
    atomic_write_json(out / "summary.json", _jsonable(summary))
    return summary


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))
