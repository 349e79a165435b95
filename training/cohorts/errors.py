"""Typed errors for cohorts and splits (``SlidebankError`` and ``ValueError``)."""

from __future__ import annotations

from infra.errors import SlidebankError

__all__ = ["CohortError", "LeakageError", "SplitError"]


class CohortError(SlidebankError, ValueError):
    """A cohort cannot be built (no slides, no patients in common, bad slides source)."""


class SplitError(CohortError):
    """A split cannot be made (a class with too few patients for the folds asked)."""


class LeakageError(CohortError):
    """One patient's slides sit on two sides of a split, or in two cohorts."""
