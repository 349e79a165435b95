"""Which class of a two-class label is positive: the one ROC, AUPRC, calibration and the
``score_<class>`` column are about.

The rule (``--positive`` unset): the class named like a positive finding, ``High``,
``1``, ``True``, ``yes``, ``positive`` or ``pos`` in any case, as ``slidebank train``
encodes ``High`` (or 1/True) as 1. A label where neither or both classes are named so
is an error asking for ``--positive``: taking the last class alphabetically would make a
probe and a MIL model describe opposite classes without a word.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.errors import ConfigError

__all__ = ["POSITIVE_NAMES", "positive_class"]

POSITIVE_NAMES = ("high", "1", "1.0", "true", "yes", "positive", "pos")


def positive_class(classes: Sequence[str], positive: str | None, *, label: str) -> str:
    """The positive one of the two ``classes`` of ``label`` (``positive`` if given)."""
    if len(classes) != 2:
        raise ConfigError(
            f"--positive needs a two-class label; {label!r} has {len(classes)} "
            f"classes ({', '.join(classes)})"
        )
    if positive is not None:
        if positive in classes:
            return positive
        folded = [c for c in classes if c.casefold() == positive.casefold()]
        if len(folded) == 1:
            return folded[0]
        raise ConfigError(
            f"--positive {positive!r} is not a class of {label!r} ({' or '.join(classes)})"
        )
    named = [c for c in classes if c.strip().casefold() in POSITIVE_NAMES]
    if len(named) == 1:
        return named[0]
    raise ConfigError(
        f"which class of {label!r} is positive, {classes[0]!r} or {classes[1]!r}? "
        f"Pass --positive (positive=... in Python); only High/1/True/yes/positive "
        "is taken as positive without it"
    )
