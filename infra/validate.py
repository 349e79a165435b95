"""Checks for configuration values, one rule per function (zarr's ``parse_*`` style).

Each check takes the value's name and the value, and returns the value unchanged, so a
frozen dataclass's ``__post_init__`` reads as its list of rules::

    def __post_init__(self) -> None:
        integer("TilingConfig.tile_size", self.tile_size)
        positive("TilingConfig.target_mpp", self.target_mpp)
        fraction("TilingConfig.overlap", self.overlap, open_high=True)
        choice("TilingConfig.resample", self.resample, Resample)

A value that breaks its rule raises :class:`~infra.errors.ConfigError` with one message
form, everywhere::

    <name> must be <rule>, got <value!r>

* ``name`` is ``Class.field`` for a dataclass field (``TissueConfig.min_od``): the same
  field name sits in several configs (``seed``, ``alpha``, ``metric``), and the class
  says which one. A bare parameter name (``metric``) where there is no class.
* ``rule`` says what would be accepted: ``> 0``, ``>= 2``, ``in [0, 1)``,
  ``one of 'L2', 'cosine', 'dot'``, ``an integer``, ``non-empty``.
* ``value!r`` is cut to 80 characters, so a message stays one line; where the value must
  not be echoed (free text that may carry identifiers) :func:`fail` takes ``shown=``.

A rule no helper spells (one field against another) goes through :func:`require` or
``raise fail(...)``, in the same form: ``MILConfig.hidden must be divisible by n_heads (4)
for transmil, got 130``.

Numbers: every numeric rule first asks for a finite real number that is not a bool
(NumPy scalars count). NaN compares false with everything, so without this it would slip
through a ``not x < 0`` test; a bool is a mistyped flag, never a count.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, get_args

from infra.errors import ConfigError

__all__ = [
    "at_least",
    "choice",
    "choices",
    "fail",
    "fraction",
    "in_range",
    "integer",
    "non_empty",
    "non_negative",
    "number",
    "optional",
    "positive",
    "require",
]

_N = TypeVar("_N", bound=float)
_T = TypeVar("_T")
_MAX_SHOWN = 80


def fail(name: str, rule: str, value: Any, *, shown: str | None = None) -> ConfigError:
    """The error for ``value`` breaking ``rule`` (raise it: ``raise fail(...)``)."""
    got = shown if shown is not None else repr(value)
    if len(got) > _MAX_SHOWN:
        got = got[: _MAX_SHOWN - 3] + "..."
    return ConfigError(f"{name} must be {rule}, got {got}")


def require(ok: object, name: str, rule: str, value: Any) -> None:
    """Raise :func:`fail`'s error unless ``ok`` is truthy: for a rule no other check spells
    (one field against another, a shape)."""
    if not ok:
        raise fail(name, rule, value)


def number(name: str, value: _N) -> _N:
    """A finite real number, not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise fail(name, "a finite number", value)
    return value


def integer(name: str, value: int) -> int:
    """An integer (Python's or NumPy's), not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise fail(name, "an integer", value)
    return value


def positive(name: str, value: _N) -> _N:
    """A finite number ``> 0``."""
    if not number(name, value) > 0:
        raise fail(name, "> 0", value)
    return value


def non_negative(name: str, value: _N) -> _N:
    """A finite number ``>= 0``."""
    if not number(name, value) >= 0:
        raise fail(name, ">= 0", value)
    return value


def at_least(name: str, value: _N, low: float) -> _N:
    """A finite number ``>= low`` (``at_least(name, n, 2)`` for "two or more")."""
    if not number(name, value) >= low:
        raise fail(name, f">= {low}", value)
    return value


def in_range(
    name: str,
    value: _N,
    low: float,
    high: float,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> _N:
    """A finite number in ``[low, high]``; ``open_low``/``open_high`` exclude an end."""
    number(name, value)
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    if not (above and below):
        rule = f"in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise fail(name, rule, value)
    return value


def fraction(name: str, value: _N, *, open_low: bool = False, open_high: bool = False) -> _N:
    """A number in ``[0, 1]``; ``open_low``/``open_high`` exclude 0 or 1."""
    return in_range(name, value, 0, 1, open_low=open_low, open_high=open_high)


def _allowed(allowed: Any) -> tuple[Any, ...]:
    # A ``Literal[...]`` alias gives its members, so a choice is spelled once, in the type.
    return get_args(allowed) or tuple(allowed)


def _spell(allowed: tuple[Any, ...]) -> str:
    return ", ".join(map(repr, allowed))


def choice(name: str, value: _T, allowed: Any) -> _T:
    """One of ``allowed``: a ``typing.Literal`` alias or any iterable of values."""
    options = _allowed(allowed)
    if value not in options:
        raise fail(name, f"one of {_spell(options)}", value)
    return value


def choices(name: str, values: Iterable[_T], allowed: Any) -> tuple[_T, ...]:
    """Values each one of ``allowed`` (as :func:`choice`), returned as a tuple."""
    options = _allowed(allowed)
    values = tuple(values)
    unknown = [v for v in values if v not in options]
    if unknown:
        raise fail(name, f"made of {_spell(options)}", unknown[0] if len(unknown) == 1 else unknown)
    return values


def non_empty(name: str, value: _T) -> _T:
    """A string or collection with at least one element."""
    try:
        empty = len(value) == 0  # type: ignore[arg-type]
    except TypeError:
        empty = True
    if empty:
        raise fail(name, "non-empty", value)
    return value


def optional(
    check: Callable[..., _T], name: str, value: _T | None, *args: Any, **kwargs: Any
) -> _T | None:
    """``None``, or a value passing ``check``: ``optional(positive, "X.timeout_s", t)``."""
    return None if value is None else check(name, value, *args, **kwargs)
