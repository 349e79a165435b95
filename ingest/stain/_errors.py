"""Errors of stain fitting: stain-specific, so they live with the stain code and derive from infra.errors."""

from __future__ import annotations

from infra.errors import SlidebankError


class StainFitError(SlidebankError, ValueError):
    """Stain parameters cannot be fitted from the given pixels.

    Raised for too few tissue pixels (a blank or faint image), a single stain (the two
    Macenko directions collapse onto one), or non-finite results. Never returned as
    garbage parameters: a caller decides whether to skip the slide or normalize it
    with another reference.
    """
