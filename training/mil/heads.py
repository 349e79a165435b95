"""Task heads: how logits become a loss and a prediction.

* ``binary``: High vs the rest of one signature; 2 logits, cross-entropy, P(High).
* ``multiclass``: K mutually exclusive classes; cross-entropy, class probabilities.
* ``multisignature``: several binary signatures at once; one logit each, BCE.
* ``regression``: many genes; MSE on targets standardized with the training set's
  mean and sd (so high-variance genes do not dominate), predictions on the raw scale.

Class imbalance is handled by weighting the loss (``weights``), not by resampling, so
every worker still sees each training slide once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from infra.errors import ConfigError

__all__ = ["TASKS", "Head", "make_head"]

TASKS = ("binary", "multiclass", "multisignature", "regression")


@dataclass
class Head:
    task: str
    n_outputs: int
    # binary/multiclass: per-class weight; multisignature: per-signature positive weight.
    weights: np.ndarray | None = None
    mean: np.ndarray | None = None  # regression standardization
    std: np.ndarray | None = None

    @property
    def is_classification(self) -> bool:
        return self.task in ("binary", "multiclass")

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of one bag: ``logits`` (n_outputs,), ``target`` as built by the data module."""
        logits = logits.unsqueeze(0)
        weights = (
            None
            if self.weights is None
            else torch.as_tensor(self.weights, dtype=logits.dtype, device=logits.device)
        )
        if self.is_classification:
            label = target.long().reshape(1)
            # Per-bag weighted CE: scale by the class weight; batching is by accumulation.
            loss = F.cross_entropy(logits, label)
            return loss * weights[label[0]] if weights is not None else loss
        target = target.to(logits.dtype).reshape(1, -1)
        if self.task == "multisignature":
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weights)
        mean = torch.as_tensor(self.mean, dtype=logits.dtype, device=logits.device)
        std = torch.as_tensor(self.std, dtype=logits.dtype, device=logits.device)
        return F.mse_loss(logits, (target - mean) / std)

    def predict(self, logits: Tensor) -> np.ndarray:
        """A bag's prediction: P(class 1) (binary), class probabilities, P(High) per
        signature, or expression on the raw scale (regression)."""
        logits = logits.detach().float().cpu()
        if self.task == "binary":
            return torch.softmax(logits, -1)[..., 1:2].numpy()
        if self.task == "multiclass":
            return torch.softmax(logits, -1).numpy()
        if self.task == "multisignature":
            return torch.sigmoid(logits).numpy()
        return logits.numpy() * self.std + self.mean

    def instance_label(self, target: Tensor) -> int | None:
        """The class CLAM's instance loss uses; only defined for classification."""
        return int(target.reshape(-1)[0]) if self.is_classification else None


def make_head(
    task: str,
    targets: np.ndarray,
    *,
    n_classes: int | None = None,
    weighted: bool = True,
) -> Head:
    """A head fitted to training ``targets`` (class weights or standardization)."""
    targets = np.asarray(targets)
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    if len(targets) == 0:
        raise ConfigError("no training targets")
    if task in ("binary", "multiclass"):
        k = 2 if task == "binary" else int(n_classes or int(targets.max()) + 1)
        counts = np.bincount(targets.astype(int).reshape(-1), minlength=k).astype(float)
        if (counts == 0).any():
            raise ConfigError(f"a class has no training slides (counts {counts.tolist()})")
        # Inverse-frequency weights normalized to mean 1 keep the loss scale comparable.
        w = counts.sum() / (k * counts)
        return Head(task, k, w if weighted else None)
    targets = targets.reshape(len(targets), -1).astype(float)
    if task == "multisignature":
        pos = targets.sum(0)
        neg = len(targets) - pos
        if (pos == 0).any() or (neg == 0).any():
            raise ConfigError("a signature has no High (or no non-High) training slides")
        return Head(task, targets.shape[1], neg / pos if weighted else None)
    std = targets.std(0)
    return Head(task, targets.shape[1], mean=targets.mean(0), std=np.where(std > 0, std, 1.0))
