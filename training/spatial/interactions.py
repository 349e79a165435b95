"""Module interaction graphs: which tissue modules touch, and how much more than chance.

For a slide with tiles labelled by module and a tile graph (grid neighbours), the
contact matrix ``C[i, j]`` counts directed edges from a module-i tile to a module-j tile
(symmetric, since edges are). Under random placement of the same tiles on the same
graph (label permutation), the expected count is ``E · n_i n_j / (N (N − 1))`` for
``i ≠ j`` and ``E · n_i (n_i − 1) / (N (N − 1))`` on the diagonal, with E the number of
directed edges; enrichment is ``log2((C + 1) / (expected + 1))`` (squidpy's
neighbourhood enrichment, in closed form instead of by permutations).

Written in torch so the module-graph model and the analysis share one implementation;
NumPy inputs are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["ModuleGraph", "contact_counts", "module_graph"]


def _t(value: np.ndarray | Tensor, dtype: torch.dtype | None = None) -> Tensor:
    out = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    return out if dtype is None else out.to(dtype)


def contact_counts(modules: Tensor, src: Tensor, dst: Tensor, k: int) -> Tensor:
    """(K, K) float counts of directed edges between modules."""
    modules, src, dst = _t(modules, torch.long), _t(src, torch.long), _t(dst, torch.long)
    pair = modules[src] * k + modules[dst]
    return torch.bincount(pair, minlength=k * k).reshape(k, k).to(torch.float32)


@dataclass
class ModuleGraph:
    """One slide's module interaction graph (K nodes, including absent modules)."""

    counts: Tensor  # (K,) tiles per module
    proportions: Tensor  # (K,)
    mean_embedding: Tensor  # (K, D), zero for absent modules
    contacts: Tensor  # (K, K) directed edge counts
    expected: Tensor  # (K, K) under random placement
    enrichment: Tensor  # (K, K) log2((C + 1) / (expected + 1))
    contact_fraction: Tensor  # (K, K) C / E

    @property
    def present(self) -> Tensor:
        return self.counts > 0


def module_graph(
    embeddings: np.ndarray | Tensor,
    modules: np.ndarray | Tensor,
    src: np.ndarray | Tensor,
    dst: np.ndarray | Tensor,
    k: int,
) -> ModuleGraph:
    x = _t(embeddings, torch.float32)
    modules = _t(modules, torch.long).to(x.device)
    n = x.shape[0]
    counts = torch.bincount(modules, minlength=k).to(x.dtype)
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, modules, x)
    mean = sums / counts.clamp_min(1)[:, None]
    contacts = contact_counts(modules, _t(src).to(x.device), _t(dst).to(x.device), k).to(x.device)
    total = contacts.sum()
    pairs = max(n * (n - 1), 1)
    expected = total * (counts[:, None] * counts[None, :] - torch.diag(counts)) / pairs
    enrichment = torch.log2((contacts + 1) / (expected + 1))
    return ModuleGraph(
        counts,
        counts / max(n, 1),
        mean,
        contacts,
        expected,
        enrichment,
        contacts / total.clamp_min(1),
    )
