"""The Ray Train worker loop for one or more folds in one trainer.

Starting a ``TorchTrainer`` costs about 20 s on a small machine (worker group, process
group, the controller's polling), which dominated a 4-fold CV of small MIL models
(334 s for seconds of compute). So every fold of a cross-validation runs inside one
trainer, one after the other, in the same worker processes: the fixed cost is paid once,
and the bag cache is shared by the folds (each bag is read from the store once per
worker). Each fold reports once, when it ends, with its whole history and a checkpoint of
its best weights (rank 0); Ray Train keeps every fold's checkpoint, and the driver matches
them to folds by the ``fold`` key in the metrics.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["folds_loop_per_worker"]


class _FoldReporter:
    """Collects a fold's epochs; the best weights are kept, not reported per epoch."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def __call__(self, metrics: dict[str, float], state: dict[str, Any] | None) -> None:
        self.history.append(dict(metrics))


def folds_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config["folds"]`` is a list of dicts with ``fold`` (a key),
    ``train`` (TrainConfig), ``head``, ``train_data`` and ``val_data`` (BagDatasets)."""
    import ray.train
    import ray.train.torch
    import torch

    from training.mil.train import fit

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        # CLAM's instance classifiers for other classes get no gradient on a bag.
        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})

    cache: dict[str, Any] = {}
    for spec in config["folds"]:
        started = time.perf_counter()
        train_data, val_data = spec["train_data"], spec["val_data"]
        if train_data.cache:
            train_data.share_cache(cache)
            val_data.share_cache(cache)
        reporter = _FoldReporter()
        result = fit(spec["train"], train_data, val_data, spec["head"], reporter=reporter,
                     rank=rank, world=world, wrap=wrap, device=device)
        metrics = {"fold": str(spec["fold"]), "best_score": float(result.best_score),
                   "best_epoch": int(result.best_epoch), "history": reporter.history,
                   "fit_s": round(time.perf_counter() - started, 3)}
        if rank != 0:
            ray.train.report(metrics)  # a collective: every rank reports, rank 0 checkpoints
            continue
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"state_dict": result.best_state, "metrics": metrics}, Path(tmp) / "model.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
