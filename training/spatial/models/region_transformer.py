"""``region_transformer``: HIPT's top two levels (and HiTrans' idea) on stored tiles.

Tiles are grouped into square regions of ``region`` × ``region`` tiles (16 × 256 px =
4096 px at 0.5 mpp), anchored at the slide's first tile. A transformer runs inside
each region, gated attention pools it to a region token, a second transformer runs over
the region tokens, and gated attention pools those to the slide. Position enters as a
learned per-head attention bias of the *Euclidean distance* between tiles (between
region centres at the top level), bucketed (exact up to 8 tiles, then log-spaced) —
real 2-D geometry, never bag order, and unchanged by rotating or flipping the slide.
An order-blind ABMIL branch is summed at the logits, as in ``tile_gnn``.

Long range (``geometry_pools``): a needle-like relation — two small nests 5 tiles apart
vs 25 — is hard to learn through softmax attention alone (HIPT is weak on such tasks,
HIPT issue #41). So G attention pools over the final tile states each give an
attention-weighted centroid and spread in tile units; the log of the G·(G−1)/2
centroid distances and the G spreads feed a linear read-out summed at the logits.
Distances move with the attention, so the pools learn *where* to look by gradient, and
being distances they are unchanged by rotations, flips and translations.

Tile attention for heatmaps is region attention × within-region attention.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from infra.errors import ConfigError
from training.mil.models import GatedAttention, MILConfig, MILOutput, register_model
from training.spatial.graphs import grid_index
from training.spatial.models._common import InvariantBranch, fit_transform, options, require_coords
from training.spatial.preprocess import TileTransform

__all__ = ["RegionTransformer", "distance_bucket"]

DEFAULTS: dict[str, Any] = {
    "region": 16,
    "tile_layers": 1,
    "region_layers": 1,
    "invariant_branch": True,
    "geometry_pools": 4,
    "centre": False,
    "whiten": False,
}
N_BUCKETS = 16


def distance_bucket(d: Tensor) -> Tensor:
    """Exact buckets 0..7 for distances under 8 tiles, then two per doubling, capped."""
    near = torch.round(d)
    far = 8 + torch.floor(2 * torch.log2(d.clamp_min(8.0) / 8.0))
    return torch.where(d < 7.5, near, far).clamp(0, N_BUCKETS - 1).long()


class _BiasedLayer(nn.Module):
    """Pre-norm transformer layer whose attention logits get a distance bias per head."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.bias = nn.Embedding(N_BUCKETS, heads)
        # ALiBi-style start (Press et al. 2022): head h penalises distance with slope
        # 2^-h, so attention begins local (one head sees mostly its 8 neighbours) and
        # widens where training wants; a zero start leaves every token attending to the
        # slide mean, where arrangement gives almost no gradient.
        with torch.no_grad():
            slopes = torch.tensor([2.0**-h for h in range(heads)])
            self.bias.weight.copy_(
                -torch.arange(N_BUCKETS, dtype=torch.float32)[:, None] * slopes[None, :]
            )
        self.ff = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.dropout = dropout

    def forward(self, t: Tensor, buckets: Tensor, pad: Tensor) -> Tensor:
        """t (B, L, dim); buckets (B, L, L) long; pad (B, L) True where padding."""
        b, n, dim = t.shape
        q, k, v = (
            self.qkv(self.norm1(t))
            .reshape(b, n, 3, self.heads, dim // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        bias = self.bias(buckets).permute(0, 3, 1, 2)  # (B, H, L, L)
        bias = bias.masked_fill(pad[:, None, None, :], float("-inf"))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )
        t = t + self.out(y.transpose(1, 2).reshape(b, n, dim))
        return t + self.ff(self.norm2(t))


def _masked_softmax(scores: Tensor, pad: Tensor) -> Tensor:
    return torch.softmax(scores.masked_fill(pad, float("-inf")), dim=-1)


class RegionTransformer(nn.Module):
    uses_coords = True

    def __init__(self, cfg: MILConfig) -> None:
        super().__init__()
        self.cfg = cfg
        opts = options(cfg, DEFAULTS)
        self.region = int(opts["region"])
        if self.region < 1 or int(opts["tile_layers"]) < 1 or int(opts["region_layers"]) < 0:
            raise ConfigError(f"region_transformer: bad region/layers options {opts}")
        if cfg.hidden % cfg.n_heads:
            raise ConfigError(
                f"region_transformer: hidden ({cfg.hidden}) must be divisible by n_heads ({cfg.n_heads})"
            )
        h = cfg.hidden
        self.transform = TileTransform(
            cfg.in_dim, centre=bool(opts["centre"]), whiten=opts["whiten"]
        )
        self.embed = nn.Sequential(nn.Linear(cfg.in_dim, h), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.tile_layers = nn.ModuleList(
            _BiasedLayer(h, cfg.n_heads, cfg.dropout) for _ in range(int(opts["tile_layers"]))
        )
        self.tile_pool = GatedAttention(h, cfg.attn_dim, 1, cfg.dropout)
        self.region_layers = nn.ModuleList(
            _BiasedLayer(h, cfg.n_heads, cfg.dropout) for _ in range(int(opts["region_layers"]))
        )
        self.region_pool = GatedAttention(h, cfg.attn_dim, 1, cfg.dropout)
        self.norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, cfg.n_outputs)
        self.invariant = InvariantBranch(cfg) if opts["invariant_branch"] else None
        g = int(opts["geometry_pools"])
        if g == 1 or g < 0:
            raise ConfigError(f"region_transformer: geometry_pools must be 0 or >= 2, got {g}")
        self.geo_pools = GatedAttention(h, cfg.attn_dim, g, cfg.dropout) if g else None
        self.geo_head = nn.Linear(g * (g - 1) // 2 + g, cfg.n_outputs) if g else None

    def prepare(self, train_data: Any) -> None:
        """Fit the whitening (option ``whiten``) on the training bags only."""
        if self.transform.whiten:
            fit_transform(self, train_data)

    @staticmethod
    def _geometry(pools: nn.Module, states: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """(features, attention (G, N)): log1p of pool-centroid distances and spreads."""
        a = torch.softmax(pools(states), dim=1)  # (G, N)
        centre = a @ pos  # (G, 2)
        spread = torch.sqrt((a * ((pos[None] - centre[:, None]) ** 2).sum(-1)).sum(1) + 1e-6)
        i, j = torch.triu_indices(len(centre), len(centre), 1, device=pos.device)
        dist = torch.sqrt(
            ((centre[i] - centre[j]) ** 2).sum(-1) + 1e-6
        )  # eps: finite gradient at 0
        return torch.log1p(torch.cat([dist, spread])), a

    def _regions(self, coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        rows, cols, _ = grid_index(coords.detach().cpu().numpy())
        rc = torch.from_numpy(rows).to(coords.device), torch.from_numpy(cols).to(coords.device)
        n_cols = int(rc[1].max()) // self.region + 1
        region = (rc[0] // self.region) * n_cols + rc[1] // self.region
        _, region = torch.unique(region, return_inverse=True)
        return region, rc[0].float(), rc[1].float()

    def forward(
        self,
        x: Tensor,
        label: int | None = None,
        *,
        coords: Tensor | None = None,
        edges: Any = None,
    ) -> MILOutput:
        coords = require_coords("region_transformer", x, coords)
        x = self.transform(x)
        region, rows, cols = self._regions(coords)
        n_regions = int(region.max()) + 1
        order = torch.argsort(region, stable=True)
        sizes = torch.bincount(region, minlength=n_regions)
        starts = torch.cumsum(sizes, 0) - sizes
        slot = torch.empty_like(region)
        slot[order] = torch.arange(len(region), device=x.device) - starts[region[order]]
        length = int(sizes.max())
        h = self.embed(x)
        tokens = h.new_zeros(n_regions, length, h.shape[1])
        tokens[region, slot] = h
        pad = torch.ones(n_regions, length, dtype=torch.bool, device=x.device)
        pad[region, slot] = False
        pos = x.new_zeros(n_regions, length, 2)
        pos[region, slot] = torch.stack([rows, cols], 1)
        buckets = distance_bucket(torch.cdist(pos, pos))
        for layer in self.tile_layers:
            tokens = layer(tokens, buckets, pad)
        scores = self.tile_pool(tokens.reshape(-1, tokens.shape[-1])).reshape(n_regions, length)
        inner = _masked_softmax(scores, pad)  # (R, L)
        region_tokens = (inner[..., None] * tokens).sum(1)  # (R, h)
        # Region positions: the geometric centre of its tiles (not attention-weighted, so
        # position stays a property of the slide, not of what the model looks at).
        centres = torch.zeros(n_regions, 2, device=x.device).index_add_(
            0, region, torch.stack([rows, cols], 1)
        )
        centres = centres / sizes[:, None]
        top = region_tokens[None]
        top_buckets = distance_bucket(torch.cdist(centres, centres))[None]
        no_pad = torch.zeros(1, n_regions, dtype=torch.bool, device=x.device)
        for layer in self.region_layers:
            top = layer(top, top_buckets, no_pad)
        top = self.norm(top[0])
        outer = torch.softmax(self.region_pool(top), dim=1).squeeze(0)  # (R,)
        logits = self.head(outer @ top)
        attention = outer[region] * inner[region, slot]
        states = tokens[region, slot]
        extras: dict[str, Tensor] = {
            "region": region,
            "region_attention": outer.detach(),
            "tile_states": states.detach(),
        }
        if self.geo_pools is not None and self.geo_head is not None:
            geo, geo_a = self._geometry(self.geo_pools, states, torch.stack([rows, cols], 1))
            logits = logits + self.geo_head(geo)
            extras["geometry_attention"] = geo_a.detach()
        if self.invariant is not None:
            inv_logits, inv_a = self.invariant(x)
            logits = logits + inv_logits
            extras["invariant_attention"] = inv_a.detach()
        return MILOutput(logits, attention, None, extras)

    def tile_logits(self, x: Tensor, coords: Tensor) -> Tensor:
        """(N, n_outputs): the slide head on each tile's state after the region transformer."""
        return self.head(self.norm(self.forward(x, coords=coords).extras["tile_states"]))


@register_model("region_transformer")
def _build(cfg: MILConfig) -> nn.Module:
    return RegionTransformer(cfg)
