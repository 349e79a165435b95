"""Typed configuration of omics loading, scoring and labelling, and its hash.

Every derived table (scores, labels, cohorts) records the hash of the configuration
that produced it, so two tables can be compared only when they were made the same way.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from infra.errors import ConfigError
from infra.provenance import canonical_json, stable_hash

__all__ = [
    "DuplicatePolicy",
    "ExpressionConfig",
    "GeneIdType",
    "LabelConfig",
    "LabelMethod",
    "Orientation",
    "ScoreConfig",
    "ScoreMethod",
    "Units",
    "config_hash",
    "config_json",
]

Orientation = Literal["auto", "genes_x_samples", "samples_x_genes"]
GeneIdType = Literal["auto", "symbol", "ensembl"]
# counts: raw read counts (library-size normalised to CPM first); tpm, fpkm and
# normalized (e.g. NanoString nSolver output) are linear scales; log2 is already logged.
Units = Literal["counts", "tpm", "fpkm", "normalized", "log2"]
DuplicatePolicy = Literal["max_mean", "mean", "sum", "first", "error"]
ScoreMethod = Literal["zscore", "rank"]
LabelMethod = Literal["hierarchical", "quantile"]
Linkage = Literal["ward", "average", "complete", "single"]


def _check_choice(field: str, value: object, kind: Any) -> None:
    allowed = get_args(kind)
    if value not in allowed:
        raise ConfigError(f"{field} must be one of {', '.join(map(repr, allowed))}, not {value!r}")


@dataclass(frozen=True)
class ExpressionConfig:
    """How to read an expression matrix and bring it to log2 scale."""

    units: Units = "tpm"
    orientation: Orientation = "auto"
    gene_ids: GeneIdType = "auto"
    # max_mean keeps, of several rows for one gene, the most expressed one: the usual
    # choice when probes or Ensembl ids collapse onto one symbol (WGCNA's collapseRows).
    duplicate_genes: DuplicatePolicy = "max_mean"
    pseudocount: float = 1.0

    def __post_init__(self) -> None:
        _check_choice("units", self.units, Units)
        _check_choice("orientation", self.orientation, Orientation)
        _check_choice("gene_ids", self.gene_ids, GeneIdType)
        _check_choice("duplicate_genes", self.duplicate_genes, DuplicatePolicy)
        if not (math.isfinite(self.pseudocount) and self.pseudocount > 0):
            raise ConfigError(f"pseudocount must be a positive number, not {self.pseudocount!r}")


@dataclass(frozen=True)
class ScoreConfig:
    """How a signature becomes one number per sample."""

    method: ScoreMethod = "zscore"
    # A signature scored on fewer than half its genes no longer measures what the
    # publication measured; below min_genes a "mean" is one or two genes' noise.
    min_fraction: float = 0.5
    min_genes: int = 2
    # ssGSEA's weight exponent (Barbie et al. 2009 use 0.25).
    alpha: float = 0.25

    def __post_init__(self) -> None:
        _check_choice("method", self.method, ScoreMethod)
        if not 0.0 < self.min_fraction <= 1.0:
            raise ConfigError(f"min_fraction must be in (0, 1], not {self.min_fraction!r}")
        if self.min_genes < 1:
            raise ConfigError(f"min_genes must be >= 1, not {self.min_genes!r}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"alpha must be a non-negative number, not {self.alpha!r}")


@dataclass(frozen=True)
class LabelConfig:
    """How patients become "High" or "Median/Low" for one signature.

    ``hierarchical`` follows the published method: cluster patients on the z-scored
    expression of the signature's genes into ``n_clusters`` groups (High, Median, Low
    for three) and call the cluster with the highest mean expression High.
    ``quantile`` calls High the patients whose score is at or above the
    ``high_quantile`` quantile of the cohort.
    """

    method: LabelMethod = "hierarchical"
    n_clusters: int = 3
    linkage: Linkage = "ward"
    metric: str = "euclidean"
    high_quantile: float = 2.0 / 3.0

    def __post_init__(self) -> None:
        _check_choice("method", self.method, LabelMethod)
        _check_choice("linkage", self.linkage, Linkage)
        if self.n_clusters < 2:
            raise ConfigError(f"n_clusters must be >= 2, not {self.n_clusters!r}")
        if self.linkage == "ward" and self.metric != "euclidean":
            raise ConfigError("ward linkage is only defined for the euclidean metric")
        if not 0.0 < self.high_quantile < 1.0:
            raise ConfigError(f"high_quantile must be in (0, 1), not {self.high_quantile!r}")


def config_json(config: Any) -> str:
    """Canonical JSON of a config (dataclasses and mappings), see :mod:`infra.provenance`."""
    return canonical_json(config)


def config_hash(config: Any) -> str:
    """A short stable hash of a config, recorded in every table derived with it; the
    config's type is part of what is hashed, so two kinds of config never collide."""
    kind = type(config).__name__ if dataclasses.is_dataclass(config) else "mapping"
    return stable_hash(f"slidebank.{kind}", 1, config)
