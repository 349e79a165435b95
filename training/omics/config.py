"""Typed configuration of omics loading, scoring and labelling, and its hash.

Every derived table (scores, labels, cohorts) records the hash of the configuration
that produced it, so two tables can be compared only when they were made the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from infra.provenance import canonical_json, stable_hash
from infra.validate import at_least, choice, fraction, non_negative, positive, require

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
        choice("ExpressionConfig.units", self.units, Units)
        choice("ExpressionConfig.orientation", self.orientation, Orientation)
        choice("ExpressionConfig.gene_ids", self.gene_ids, GeneIdType)
        choice("ExpressionConfig.duplicate_genes", self.duplicate_genes, DuplicatePolicy)
        positive("ExpressionConfig.pseudocount", self.pseudocount)


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
        choice("ScoreConfig.method", self.method, ScoreMethod)
        fraction("ScoreConfig.min_fraction", self.min_fraction, open_low=True)
        at_least("ScoreConfig.min_genes", self.min_genes, 1)
        non_negative("ScoreConfig.alpha", self.alpha)


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
        choice("LabelConfig.method", self.method, LabelMethod)
        choice("LabelConfig.linkage", self.linkage, Linkage)
        at_least("LabelConfig.n_clusters", self.n_clusters, 2)
        require(
            self.linkage != "ward" or self.metric == "euclidean",
            "LabelConfig.metric",
            "'euclidean' for ward linkage",
            self.metric,
        )
        fraction("LabelConfig.high_quantile", self.high_quantile, open_low=True, open_high=True)


def config_json(config: Any) -> str:
    """Canonical JSON of a config (dataclasses and mappings), see :mod:`infra.provenance`."""
    return canonical_json(config)


def config_hash(config: Any) -> str:
    """A short stable hash of a config, recorded in every table derived with it; the
    config's type is part of what is hashed, so two kinds of config never collide."""
    kind = type(config).__name__ if dataclasses.is_dataclass(config) else "mapping"
    return stable_hash(f"slidebank.{kind}", 1, config)
