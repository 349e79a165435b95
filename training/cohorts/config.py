"""Typed configuration of a cohort build; its hash goes into every output."""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.validate import at_least, choice, fraction, non_empty, optional, require
from training.omics.config import (
    ExpressionConfig,
    LabelConfig,
    ScoreConfig,
    config_hash,
    config_json,
)

__all__ = ["CohortConfig", "SplitConfig"]


@dataclass(frozen=True)
class SplitConfig:
    """Patient-level k-fold and train/validation/test splits."""

    n_splits: int = 5
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # Continuous targets are stratified on this many quantile bins.
    regression_bins: int = 5

    def __post_init__(self) -> None:
        at_least("SplitConfig.n_splits", self.n_splits, 2)
        fraction("SplitConfig.val_fraction", self.val_fraction, open_high=True)
        fraction("SplitConfig.test_fraction", self.test_fraction, open_low=True, open_high=True)
        held_out = self.val_fraction + self.test_fraction
        require(
            held_out < 1,
            "SplitConfig.val_fraction + test_fraction",
            "< 1 (to leave patients to train on)",
            held_out,
        )
        at_least("SplitConfig.regression_bins", self.regression_bins, 2)


@dataclass(frozen=True)
class CohortConfig:
    """Everything that decides a cohort table's content."""

    signatures: tuple[str, ...] = ("ayers_ifng6",)
    expression: ExpressionConfig = field(default_factory=ExpressionConfig)
    scores: ScoreConfig = field(default_factory=ScoreConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    # TCGA samples kept before averaging per patient; None keeps all sample types.
    tcga_sample_types: tuple[str, ...] | None = ("01",)
    # Signature whose label stratifies the splits; default: the first one.
    stratify: str | None = None
    # Slides taken from the store: only those whose ingestion is done by default.
    slide_status: str | None = "done"
    name: str = "discovery"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "signatures", tuple(non_empty("CohortConfig.signatures", self.signatures))
        )
        optional(choice, "CohortConfig.stratify", self.stratify, self.signatures)

    @property
    def stratify_on(self) -> str:
        return self.stratify or self.signatures[0]

    def config_hash(self) -> str:
        return config_hash(self)

    def json(self) -> str:
        return config_json(self)
