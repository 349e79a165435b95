"""The training loop over one or more folds, in one Ray Train trainer or in-process.

Starting a ``TorchTrainer`` costs about 20 s on a small machine (worker group, process
group, the controller's polling), which dominated a 4-fold CV of small MIL models
(334 s for seconds of compute). So every fold of a cross-validation runs inside one
trainer, one after the other, in the same worker processes: the fixed cost is paid once,
and the bag cache is shared by the folds (each bag is read from the store once per
worker).

Each fold is saved the moment it ends (:mod:`training.mil.fold_records`: weights, history,
predictions of its evaluation sets, by rank 0), and a fold already saved with the same
config hash is skipped. So when Ray restarts the workers after a failure
(``FailureConfig``), or the user reruns the same run id, training resumes at the first
unfinished fold. Rank 0 decides what is finished and tells the others, so every worker
takes the same folds and none waits in a collective the others skipped.

Progress (per epoch and per fold) goes to ``emit`` as small dicts on rank 0;
:func:`progress_line` turns one into the line the CLI prints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

__all__ = ["folds_loop_per_worker", "progress_line", "run_folds"]

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]

_SCORE = {
    "binary": "AUROC",
    "multiclass": "AUROC",
    "multisignature": "mean AUROC",
    "regression": "mean Pearson r",
}


def progress_line(event: dict[str, Any]) -> str:
    """One line for a progress event (``epoch``, ``fold_done`` or ``reused``)."""
    where = f"fold {event['index']}/{event['total']} (test fold {event['fold']})"
    score = _SCORE.get(event.get("task", ""), "score")
    if event["kind"] == "epoch":
        return (
            f"{where} epoch {event['epoch'] + 1}/{event['epochs']}: train loss "
            f"{event['train_loss']:.4f}, val loss {event['val_loss']:.4f}, val {score} {event['val_score']:.3f}"
        )
    if event["kind"] == "fold_done":
        line = (
            f"{where} done: best val {score} {event['best_score']:.3f} at epoch {event['best_epoch'] + 1} "
            f"({event['fit_s']:.1f} s), saved in {event['uri']}"
        )
        if event.get("memorised"):
            from training.mil.train import MEMORISED_HINT

            line += (
                f"\n  warning: fold {event['fold']} memorised its training slides (training loss "
                f"{event['min_train_loss']:.3f}, kept val {score} {event['best_score']:.3f}); "
                f"{MEMORISED_HINT}"
            )
        return line
    return f"{where}: finished earlier with the same config, reused from {event['uri']}"


def _agree(flag: bool, rank: int, world: int) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if world == 1:
        return flag
    import torch.distributed as dist

    box = [flag if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _event(kind: str, spec: dict[str, Any], **values: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "fold": str(spec["fold"]),
        "index": spec["index"],
        "total": spec["total"],
        "task": spec["head"].task,
        **values,
    }


def _predict_sets(spec: dict[str, Any], state: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The fold's evaluation sets predicted with its best weights (on the CPU, as the
    driver did before folds were saved as they finished)."""
    from training.mil.models import build_model
    from training.mil.train import predict

    model = build_model(spec["train"].model)
    model.load_state_dict(state)
    return {name: predict(model, data, spec["head"]) for name, data in spec["eval_data"].items()}


def run_folds(
    config: dict[str, Any],
    *,
    rank: int = 0,
    world: int = 1,
    wrap: Callable[[Any], Any] | None = None,
    device: Any = None,
    emit: Emit | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Train every fold of ``config["folds"]`` not yet saved under ``config["fold_root"]``.

    A fold spec has ``fold`` (key), ``index``/``total`` (its place in the run), ``hash``,
    ``train`` (TrainConfig), ``head``, ``train_data``, ``val_data`` and ``eval_data``
    (set name -> BagDataset). ``config["faults"]`` is a test-only
    :class:`training.mil._faults.FaultPlan`.
    """
    from training.mil.fold_records import read_fold, write_fold
    from training.mil.train import fit

    root, options, faults = config["fold_root"], config.get("storage_options"), config.get("faults")
    cache: dict[str, Any] = {}
    for spec in config["folds"]:
        key = str(spec["fold"])
        saved = read_fold(root, key, spec["hash"], options) if rank == 0 else None
        if _agree(saved is not None, rank, world):
            if emit is not None and saved is not None:
                emit(_event("reused", spec, uri=saved.uri))
            continue
        started = time.perf_counter()
        train_data, val_data = spec["train_data"], spec["val_data"]
        if train_data.cache:
            for data in (train_data, val_data, *spec["eval_data"].values()):
                data.share_cache(cache)

        def on_epoch(metrics: dict[str, float], state: Any, spec: dict[str, Any] = spec) -> None:
            if rank != 0:
                return
            if emit is not None:
                emit(_event("epoch", spec, epochs=spec["train"].epochs, **metrics))
            if faults is not None:
                faults.after_epoch(str(spec["fold"]), int(metrics["epoch"]))

        result = fit(
            spec["train"],
            train_data,
            val_data,
            spec["head"],
            reporter=on_epoch,
            rank=rank,
            world=world,
            wrap=wrap,
            device=device,
        )
        metrics = {
            "fold": key,
            "best_score": float(result.best_score),
            "best_epoch": int(result.best_epoch),
            "history": result.history,
            "fit_s": round(time.perf_counter() - started, 3),
            "memorised": result.memorised,
            "min_train_loss": min((h["train_loss"] for h in result.history), default=math.nan),
        }
        if rank == 0:
            uri = write_fold(
                root,
                key,
                spec["hash"],
                result.best_state,
                metrics,
                _predict_sets(spec, result.best_state),
                options,
            )
            if emit is not None:
                emit(
                    _event(
                        "fold_done",
                        spec,
                        uri=uri,
                        **{k: v for k, v in metrics.items() if k != "history"},
                    )
                )
        if report is not None:
            report({k: v for k, v in metrics.items() if k != "history"})


def folds_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: :func:`run_folds` with DDP; progress travels to the driver
    through ``config["progress"]`` (a ``ray.util.queue.Queue``), since the workers'
    output is not forwarded to the driver's console."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    queue = config.get("progress")

    def wrap(model: Any) -> Any:
        # CLAM's instance classifiers for other classes get no gradient on a bag.
        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": True}
        )

    run_folds(
        config,
        rank=context.get_world_rank(),
        world=context.get_world_size(),
        wrap=wrap,
        device=ray.train.torch.get_device(),
        emit=None if queue is None else queue.put,
        report=ray.train.report,
    )
