"""The training loop: one function used in-process and inside Ray Train workers.

Bags differ in size, so a step is a *global* group of ``bags_per_step`` bags: with W
workers each worker takes every W-th bag of the group and accumulates gradients over
its share, and DDP averages across workers. The bag order is drawn from the same seed
on every worker, so 1 worker and 2 workers take the same optimizer steps over the same
bags (up to float summation order and dropout draws).

Validation predictions are gathered from all workers, so every worker computes the
same score and takes the same early-stopping decision (none can leave the collective
early and hang the others).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from infra.errors import ConfigError
from infra.validate import at_least, fail, fraction, positive
from training.mil.data import BagDataset
from training.mil.heads import Head
from training.mil.models import MILConfig, build_model

__all__ = [
    "MEMORISED_AUROC",
    "MEMORISED_HINT",
    "MEMORISED_LOSS",
    "FitResult",
    "TrainConfig",
    "fit",
    "load_checkpoint_state",
    "memorised",
    "predict",
    "score_predictions",
]

log = logging.getLogger(__name__)

Reporter = Callable[[dict[str, float], "dict[str, Any] | None"], None]


@dataclass(frozen=True)
class TrainConfig:
    model: MILConfig = field(default_factory=MILConfig)
    task: str = "binary"
    epochs: int = 20
    lr: float = 2e-4
    weight_decay: float = 1e-4
    bags_per_step: int = 1
    patience: int = 5
    # Early stopping never stops before this many epochs, and the kept weights are the
    # best from epoch ``min_epochs - 1`` on: on a small validation fold an undertrained
    # model can tie or beat the later ones by chance (one spatial fold kept epoch 0).
    # 1: every epoch counts, as before the option existed.
    min_epochs: int = 1
    bag_weight: float = 0.7  # CLAM: weight of the slide loss; the rest is the instance loss
    max_patches: int | None = 4096
    seed: int = 0
    weighted_loss: bool = True
    # Intra-op threads for this process (None: leave torch's default). Bags of small
    # embeddings gain nothing from threading, and on a busy host it costs 10-100x.
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "bags_per_step", "patience", "min_epochs"):
            at_least(f"TrainConfig.{name}", getattr(self, name), 1)
        if self.min_epochs > self.epochs:
            raise fail("TrainConfig.min_epochs", f"<= epochs ({self.epochs})", self.min_epochs)
        fraction("TrainConfig.bag_weight", self.bag_weight, open_low=True)
        positive("TrainConfig.lr", self.lr)


@dataclass
class FitResult:
    best_state: dict[str, Any]
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    # True when the fold memorised its training slides (:func:`memorised`)
    memorised: bool = False


# A fold "memorised" when its training loss fell below MEMORISED_LOSS while the
# validation AUROC of the epoch it kept stayed below MEMORISED_AUROC: it fitted the
# training slides (per-tile noise is enough to tell 50 slides apart) and learned nothing
# that carries to others. The noise sweep (docs/spatial.md) found exactly this for
# ``tile_gnn`` on raw realistic embeddings; the same rule counts folds there.
MEMORISED_LOSS = 0.05
MEMORISED_AUROC = 0.6
MEMORISED_HINT = (
    "for realistic embeddings use the options centre: true, whiten: signal "
    "(and for tile_gnn nodes: modules); see docs/spatial.md"
)


def memorised(history: list[dict[str, float]], best_epoch: int, task: str) -> bool:
    """Whether a fold memorised (training loss < 0.05 while the kept validation AUROC < 0.6).

    Only AUROC tasks (binary, multiclass, multisignature): a regression's score is a
    Pearson r, for which 0.6 is no line between learning and not. An undefined AUROC (one
    class in validation) is not called memorisation."""
    if task == "regression" or not history or not 0 <= best_epoch < len(history):
        return False
    kept = history[best_epoch]["val_score"]
    lowest = min(h["train_loss"] for h in history)
    return bool(lowest < MEMORISED_LOSS and not math.isnan(kept) and kept < MEMORISED_AUROC)


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", None)  # DDP keeps the user's model here
    return inner if isinstance(inner, nn.Module) else model


def _call(model: nn.Module, x: torch.Tensor, coords: torch.Tensor, label: int | None = None) -> Any:
    """Forward one bag; models declaring ``uses_coords = True`` (training.spatial) also
    get the tiles' level-0 (x, y) coordinates."""
    if getattr(_unwrap(model), "uses_coords", False):
        return model(x, label, coords=coords)
    return model(x, label)


def _forward_loss(
    model: nn.Module,
    head: Head,
    cfg: TrainConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    coords: torch.Tensor,
) -> torch.Tensor:
    out = _call(model, x, coords, head.instance_label(y))
    loss = head.loss(out.logits, y)
    if out.instance_loss is not None and cfg.bag_weight < 1.0:
        loss = cfg.bag_weight * loss + (1.0 - cfg.bag_weight) * out.instance_loss
    return loss


def _epoch_order(n: int, seed: int, epoch: int, group: int) -> np.ndarray:
    """Shuffled indices padded (by wrapping) to whole groups; the same on every worker."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    total = math.ceil(n / group) * group
    return np.resize(order, total)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: BagDataset,
    head: Head,
    cfg: TrainConfig,
    epoch: int,
    *,
    rank: int = 0,
    world: int = 1,
    device: torch.device | None = None,
) -> float:
    """One pass over the training bags; returns this worker's mean bag loss."""
    device = device or torch.device("cpu")
    local = math.ceil(cfg.bags_per_step / world)
    group = local * world
    data.set_epoch(epoch)
    order = _epoch_order(len(data), cfg.seed, epoch, group)
    model.train()
    losses = []
    for start in range(0, len(order), group):
        mine = order[start : start + group][rank::world]
        optimizer.zero_grad(set_to_none=True)
        for i, index in enumerate(mine):
            x, coords, y, _ = data[int(index)]
            # Skip DDP's all-reduce until the last bag of this worker's share.
            sync = i == len(mine) - 1 or not hasattr(model, "no_sync")
            with nullcontext() if sync else model.no_sync():  # type: ignore[operator]
                loss = _forward_loss(
                    model, head, cfg, x.to(device), y.to(device), coords.to(device)
                )
                (loss / local).backward()
            losses.append(float(loss.detach()))
        optimizer.step()
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def predict(
    model: nn.Module,
    data: BagDataset,
    head: Head,
    *,
    indices: list[int] | None = None,
    device: torch.device | None = None,
    attention: bool = False,
) -> list[dict[str, Any]]:
    """Per-slide rows: slide_id, patient_id, target, prediction (and attention, coords)."""
    device = device or torch.device("cpu")
    module = _unwrap(model)
    module.eval()
    rows = []
    for index in range(len(data)) if indices is None else indices:
        x, coords, y, slide_id = data[index]
        out = _call(module, x.to(device), coords.to(device))
        row = {
            "slide_id": slide_id,
            "patient_id": data.items[index].patient_id,
            "target": y.numpy(),
            "prediction": head.predict(out.logits),
            "loss": float(head.loss(out.logits, y.to(device))),
        }
        if attention:
            row["attention"] = out.attention.detach().cpu().numpy()
            row["coords"] = coords.numpy()
        rows.append(row)
    return rows


def score_predictions(head: Head, rows: list[dict[str, Any]]) -> float:
    """Validation score (higher is better): AUROC for classification (mean over
    signatures), mean Pearson r for regression; ``nan`` when undefined."""
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    y = np.stack([r["target"] for r in rows])
    p = np.stack([r["prediction"] for r in rows])
    if head.task == "binary":
        return float(roc_auc_score(y[:, 0], p[:, 0])) if len(np.unique(y)) == 2 else math.nan
    if head.task == "multiclass":
        if len(np.unique(y)) < 2:
            return math.nan
        return float(
            roc_auc_score(y[:, 0].astype(int), p, multi_class="ovr", labels=range(head.n_outputs))
        )
    if head.task == "multisignature":
        aucs = [
            roc_auc_score(y[:, j], p[:, j])
            for j in range(y.shape[1])
            if len(np.unique(y[:, j])) == 2
        ]
        return float(np.mean(aucs)) if aucs else math.nan
    rs = [
        stats.pearsonr(p[:, j], y[:, j])[0]
        for j in range(y.shape[1])
        if np.std(y[:, j]) > 0 and np.std(p[:, j]) > 0
    ]
    return float(np.mean(rs)) if rs else math.nan


def _gather(rows: list[dict[str, Any]], world: int) -> list[dict[str, Any]]:
    if world == 1:
        return rows
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, rows)
    return [row for part in parts for row in part]


def fit(
    cfg: TrainConfig,
    train_data: BagDataset,
    val_data: BagDataset,
    head: Head,
    *,
    reporter: Reporter | None = None,
    rank: int = 0,
    world: int = 1,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
    device: torch.device | None = None,
) -> FitResult:
    """Train with early stopping on the validation score; returns the best weights.

    ``wrap`` turns the model into its distributed form (Ray's ``prepare_model``);
    ``reporter(metrics, state)`` gets every epoch's metrics and, when the score
    improved, the new best weights (``state``), to checkpoint.
    """
    if len(train_data) == 0 or len(val_data) == 0:
        raise ConfigError("training and validation sets must both be non-empty")
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)  # identical initial weights on every worker
    model = build_model(cfg.model)
    prepare = getattr(model, "prepare", None)
    if callable(prepare):
        # Models with fitted non-learned parts (training.spatial's tissue-module codebook)
        # fit them here, from the training bags only; the result lives in buffers, so it
        # travels in the checkpoint. Deterministic, so every DDP worker fits the same.
        prepare(train_data)
    if wrap is not None:
        model = wrap(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = FitResult({}, -1, -math.inf, [])
    best_key = (-math.inf, -math.inf)
    stale = 0
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        train_loss = train_epoch(
            model, optimizer, train_data, head, cfg, epoch, rank=rank, world=world, device=device
        )
        train_s = time.perf_counter() - started
        rows = _gather(
            predict(
                model,
                val_data,
                head,
                indices=list(range(rank, len(val_data), world)),
                device=device,
            ),
            world,
        )
        score = score_predictions(head, rows)
        val_loss = float(np.mean([r["loss"] for r in rows]))
        # AUROC saturates at 1.0 on easy folds, so ties are broken by the validation
        # loss; an undefined score (one class in validation) ranks on the loss alone.
        key = (-math.inf if math.isnan(score) else score, -val_loss)
        # Epochs before min_epochs - 1 are kept only until the first counted epoch, which
        # replaces them whatever its score (with min_epochs 1: epoch 0, as before).
        warm_up = epoch < cfg.min_epochs - 1
        improved = key > best_key or epoch == cfg.min_epochs - 1
        best_key = key if improved else best_key
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "train_s": train_s,
            "val_score": score,
            "best_score": best_key[0],
        }
        best.history.append(metrics)
        state = None
        if improved:
            state = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
            best.best_state, best.best_epoch, best.best_score = state, epoch, score
            stale = 0
        elif not warm_up:
            stale += 1
        if reporter is not None:
            reporter(metrics, state)
        log.info(
            "epoch %d train_loss %.4f val_loss %.4f val_score %.4f",
            epoch,
            train_loss,
            val_loss,
            score,
        )
        if stale >= cfg.patience:
            log.info("early stop at epoch %d (best epoch %d)", epoch, best.best_epoch)
            break
    best.memorised = memorised(best.history, best.best_epoch, head.task)
    if best.memorised:
        log.warning(
            "the model memorised its training slides: training loss %.3f, kept validation "
            "AUROC %.3f; %s",
            min(h["train_loss"] for h in best.history),
            best.best_score,
            MEMORISED_HINT,
        )
    return best


def load_checkpoint_state(
    path: str | Path, storage_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Weights from a checkpoint directory written by the Ray Train fold loop (training.mil.fold_loop): a local folder
    or a URI (``s3://...``, read through fsspec with ``storage_options``)."""
    import io

    from infra.storage import is_local, open_filesystem

    if is_local(str(path)):
        payload = torch.load(Path(path) / "model.pt", map_location="cpu", weights_only=True)
    else:
        fs, root = open_filesystem(str(path), storage_options)
        with fs.open(f"{root.rstrip('/')}/model.pt", "rb") as handle:
            payload = torch.load(io.BytesIO(handle.read()), map_location="cpu", weights_only=True)
    return payload["state_dict"]
