"""Typed configuration of a cohort build; its hash goes into every output."""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.errors import ConfigError
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
        if self.n_splits < 2:
            raise ConfigError(f"n_splits must be >= 2, not {self.n_splits!r}")
        if not (0 <= self.val_fraction < 1 and 0 < self.test_fraction < 1):
            raise ConfigError("val_fraction must be in [0, 1) and test_fraction in (0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("val_fraction + test_fraction must leave patients to train on")
        if self.regression_bins < 2:
            raise ConfigError(f"regression_bins must be >= 2, not {self.regression_bins!r}")


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
        if not self.signatures:
            raise ConfigError("a cohort needs at least one signature")
        object.__setattr__(self, "signatures", tuple(self.signatures))
        if self.stratify is not None and self.stratify not in self.signatures:
            raise ConfigError(f"stratify {self.stratify!r} is not one of the signatures")

    @property
    def stratify_on(self) -> str:
        return self.stratify or self.signatures[0]

    def hash(self) -> str:
        return config_hash(self)

    def json(self) -> str:
        return config_json(self)
