"""MIL models over one bag of tile embeddings: gated-attention ABMIL, CLAM-SB/MB, TransMIL.

Every model maps an (N, D) bag to an :class:`MILOutput`: slide-level logits, one
attention weight per tile (summing to 1, for heatmaps) and, for CLAM, the instance
clustering loss. Bags differ in size, so a forward pass is one bag; batching happens
by accumulating gradients over bags (see :mod:`training.mil.train`).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from infra.errors import ConfigError
from infra.validate import at_least, choice, fraction, require

__all__ = [
    "ABMIL",
    "CLAM",
    "MILConfig",
    "MILOutput",
    "TransMIL",
    "build_model",
    "model_names",
    "register_model",
]

MODELS = ("abmil", "clam_sb", "clam_mb", "transmil")

# --- model registry -------------------------------------------------------------------
# Other model families (training.spatial: graphs, modules, regions) register their
# builders with @register_model. Their names are listed here so a config naming them is
# validated, and their module is imported only when such a model is built (torch_geometric
# and the rest stay unloaded for plain MIL runs).
_FAMILIES: dict[str, str] = {
    "mean_pool": "training.spatial.models",
    "tile_gnn": "training.spatial.models",
    "module_graph": "training.spatial.models",
    "module_stats": "training.spatial.models",
    "region_transformer": "training.spatial.models",
}
_REGISTRY: dict[str, Callable[[MILConfig], nn.Module]] = {}
#: models that read the tiles' layout (edges, contacts, regions): a random subsample of a
#: bag (``TrainConfig.max_patches``) would cut their graphs, so they need whole bags
SPATIAL_MODELS = ("tile_gnn", "module_graph", "module_stats", "region_transformer")


def register_model(
    name: str,
) -> Callable[[Callable[[MILConfig], nn.Module]], Callable[[MILConfig], nn.Module]]:
    """Register ``builder(cfg) -> nn.Module`` under ``name`` (a decorator)."""

    def wrap(builder: Callable[[MILConfig], nn.Module]) -> Callable[[MILConfig], nn.Module]:
        _REGISTRY[name] = builder
        return builder

    return wrap


def model_names() -> tuple[str, ...]:
    return (*MODELS, *sorted(_FAMILIES))


# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MILConfig:
    """Architecture of a MIL model (hashed into run provenance with the training config)."""

    model: str = "abmil"
    in_dim: int = 64
    n_outputs: int = 2
    hidden: int = 128
    attn_dim: int = 64
    dropout: float = 0.1
    # CLAM: patches per side (top-k / bottom-k attended) for the instance loss.
    k_sample: int = 8
    # CLAM: with mutually exclusive classes (subtyping), other classes' top-k are negatives.
    subtyping: bool = False
    # TransMIL
    n_layers: int = 2
    n_heads: int = 4
    # Family-specific settings of registered models (e.g. training.spatial: graph kind,
    # number of tissue modules, region size); plain MIL models take none.
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        choice("MILConfig.model", self.model, model_names())
        require(
            not self.options or self.model not in MODELS,
            "MILConfig.options",
            f"empty for model {self.model!r}",
            sorted(self.options),
        )
        for name in ("in_dim", "n_outputs", "hidden", "attn_dim", "k_sample", "n_heads"):
            at_least(f"MILConfig.{name}", getattr(self, name), 1)
        fraction("MILConfig.dropout", self.dropout, open_high=True)
        require(
            self.model != "transmil" or self.hidden % self.n_heads == 0,
            "MILConfig.hidden",
            f"divisible by n_heads ({self.n_heads}) for transmil",
            self.hidden,
        )


@dataclass
class MILOutput:
    logits: Tensor  # (n_outputs,)
    attention: Tensor  # (N,), sums to 1
    instance_loss: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


def _check_bag(x: Tensor) -> None:
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConfigError(f"a bag must be a non-empty (N, D) tensor, got shape {tuple(x.shape)}")


class GatedAttention(nn.Module):
    """Ilse et al. (2018) gated attention: w^T (tanh(Vh) * sigmoid(Uh)), one column per branch.

    The sigmoid gate lets the score be non-linear in h without tanh's saturation alone
    deciding it; several branches give CLAM-MB one attention map per class.
    """

    def __init__(self, dim: int, attn_dim: int, branches: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.value = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.gate = nn.Sequential(nn.Linear(dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.score = nn.Linear(attn_dim, branches)

    def forward(self, h: Tensor) -> Tensor:
        """Raw scores (branches, N); softmax over N is left to the caller."""
        return self.score(self.value(h) * self.gate(h)).transpose(0, 1)


def _embedder(cfg: MILConfig) -> nn.Module:
    return nn.Sequential(nn.Linear(cfg.in_dim, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout))


class ABMIL(nn.Module):
    """Attention-based deep MIL: a softmax-weighted mean of embedded tiles, then a head."""

    def __init__(self, cfg: MILConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = _embedder(cfg)
        self.attention = GatedAttention(cfg.hidden, cfg.attn_dim, 1, cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden, cfg.n_outputs)

    def forward(self, x: Tensor, label: int | None = None) -> MILOutput:
        _check_bag(x)
        h = self.embed(x)
        a = torch.softmax(self.attention(h), dim=1)  # (1, N)
        z = (a @ h).squeeze(0)
        return MILOutput(self.classifier(z), a.squeeze(0))


class CLAM(nn.Module):
    """CLAM (Lu et al., 2021), single-branch (``multi_branch=False``) or multi-branch.

    Beyond ABMIL, each class has an instance classifier trained on pseudo-labels: the k
    most-attended patches of the bag's class are positives and its k least-attended are
    negatives, which sharpens attention onto discriminative tissue with few slides.
    """

    def __init__(self, cfg: MILConfig, multi_branch: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.multi_branch = multi_branch
        n = cfg.n_outputs
        self.embed = _embedder(cfg)
        self.attention = GatedAttention(
            cfg.hidden, cfg.attn_dim, n if multi_branch else 1, cfg.dropout
        )
        if multi_branch:
            # One independent linear score per class over that class's pooled vector.
            self.class_weight = nn.Parameter(torch.empty(n, cfg.hidden))
            self.class_bias = nn.Parameter(torch.zeros(n))
            nn.init.kaiming_uniform_(self.class_weight, a=math.sqrt(5))
        else:
            self.classifier = nn.Linear(cfg.hidden, n)
        self.instance_classifiers = nn.ModuleList(nn.Linear(cfg.hidden, 2) for _ in range(n))

    def forward(self, x: Tensor, label: int | None = None) -> MILOutput:
        _check_bag(x)
        h = self.embed(x)
        a = torch.softmax(self.attention(h), dim=1)  # (branches, N)
        if self.multi_branch:
            z = a @ h  # (n_classes, hidden)
            logits = (z * self.class_weight).sum(dim=1) + self.class_bias
        else:
            logits = self.classifier((a @ h).squeeze(0))
        loss = None if label is None else self.instance_loss(h, a, int(label))
        row = int(logits.argmax()) if self.multi_branch else 0
        return MILOutput(logits, a[row], loss, {"attention_all": a})

    def instance_loss(self, h: Tensor, a: Tensor, label: int) -> Tensor:
        """Mean cross-entropy of the instance classifiers on top-k / bottom-k patches."""
        n_tiles = h.shape[0]
        k = min(self.cfg.k_sample, n_tiles // 2)
        if k < 1:  # a one-tile bag has no bottom half to contrast with
            return h.sum() * 0.0
        losses = []
        for cls, classifier in enumerate(self.instance_classifiers):
            scores = a[cls if self.multi_branch else 0].detach()
            top = torch.topk(scores, k).indices
            if cls == label:
                bottom = torch.topk(-scores, k).indices
                idx = torch.cat([top, bottom])
                target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(h.device)
            elif self.cfg.subtyping:
                idx = top
                target = torch.zeros(k, dtype=torch.long, device=h.device)
            else:
                continue
            losses.append(F.cross_entropy(classifier(h[idx]), target))
        return torch.stack(losses).mean()


class _Block(nn.Module):
    """Pre-norm transformer block that also returns head-averaged attention weights."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        y = self.norm(t)
        out, weights = self.attn(y, y, y, need_weights=True, average_attn_weights=True)
        return t + out, weights


class PPEG(nn.Module):
    """TransMIL's pyramid position encoding: depthwise convs (7, 5, 3) on the token square."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3)
        )

    def forward(self, t: Tensor, side: int) -> Tensor:
        cls, tokens = t[:, :1], t[:, 1:]
        grid = tokens.transpose(1, 2).reshape(t.shape[0], t.shape[2], side, side)
        grid = grid + sum(conv(grid) for conv in self.convs)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)


class TransMIL(nn.Module):
    """TransMIL (Shao et al., 2021): a class token over tiles, with PPEG between layers.

    The paper approximates self-attention with Nyström attention to reach very long
    bags; here it is exact multi-head attention, which costs O(N^2) memory, so bags are
    bounded by the data loader's ``max_patches`` subsampling (default 4096 tiles).
    """

    def __init__(self, cfg: MILConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = _embedder(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden))
        nn.init.normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(
            _Block(cfg.hidden, cfg.n_heads, cfg.dropout) for _ in range(max(cfg.n_layers, 1))
        )
        self.ppeg = PPEG(cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.classifier = nn.Linear(cfg.hidden, cfg.n_outputs)

    def forward(self, x: Tensor, label: int | None = None) -> MILOutput:
        _check_bag(x)
        n = x.shape[0]
        h = self.embed(x)
        side = math.ceil(math.sqrt(n))
        # Fill the square by repeating the first tiles, as the paper does.
        h = torch.cat([h, h[: side * side - n]]) if side * side > n else h
        while h.shape[0] < side * side:  # very small bags need more than one repeat
            h = torch.cat([h, h[: side * side - h.shape[0]]])
        t = torch.cat([self.cls_token, h.unsqueeze(0)], dim=1)
        weights = None
        for i, block in enumerate(self.blocks):
            t, weights = block(t)
            if i == 0:
                t = self.ppeg(t, side)
        if weights is None:  # the constructor requires at least one block; keep it loud
            raise RuntimeError("TransMIL has no attention blocks")
        cls = self.norm(t)[0, 0]
        a = weights[0, 0, 1 : n + 1]  # class-token attention over the real tiles
        return MILOutput(self.classifier(cls), a / a.sum().clamp_min(1e-12))


def build_model(cfg: MILConfig) -> nn.Module:
    if cfg.model in _FAMILIES:
        importlib.import_module(_FAMILIES[cfg.model])  # registers the family's builders
        return _REGISTRY[cfg.model](cfg)
    if cfg.model == "abmil":
        return ABMIL(cfg)
    if cfg.model in ("clam_sb", "clam_mb"):
        return CLAM(cfg, multi_branch=cfg.model == "clam_mb")
    return TransMIL(cfg)
