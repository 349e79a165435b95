"""``mean_pool``: the simplest order-blind baseline, a mean of embedded tiles."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from infra.errors import ConfigError
from training.mil.models import MILConfig, MILOutput, register_model

__all__ = ["MeanPool"]


class MeanPool(nn.Module):
    def __init__(self, cfg: MILConfig) -> None:
        super().__init__()
        if cfg.options:
            raise ConfigError(f"mean_pool takes no options, got {sorted(cfg.options)}")
        self.cfg = cfg
        self.embed = nn.Sequential(
            nn.Linear(cfg.in_dim, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout)
        )
        self.head = nn.Linear(cfg.hidden, cfg.n_outputs)

    def forward(self, x: Tensor, label: int | None = None) -> MILOutput:
        if x.ndim != 2 or x.shape[0] == 0:
            raise ConfigError(
                f"a bag must be a non-empty (N, D) tensor, got shape {tuple(x.shape)}"
            )
        n = x.shape[0]
        return MILOutput(
            self.head(self.embed(x).mean(0)), torch.full((n,), 1.0 / n, device=x.device)
        )


@register_model("mean_pool")
def _build(cfg: MILConfig) -> nn.Module:
    return MeanPool(cfg)
