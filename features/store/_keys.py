"""Identifiers the store puts in paths and filter strings, validated in one place.

Lance filters are SQL text, so every value interpolated into one goes through
:func:`sql_literal`, which only accepts strings already validated against the id
pattern (no quotes, no spaces): nothing user-controlled reaches a filter unchecked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from infra.errors import ConfigError
from infra.ids import SLIDE_ID_PATTERN, validate_slide_id

__all__ = [
    "in_list",
    "new_write_id",
    "sql_literal",
    "validate_config_hash",
    "validate_encoder",
    "validate_name",
    "validate_run_id",
    "validate_slide_id",
    "validate_write_id",
    "write_id_before",
]


def _validate_token(kind: str, value: object) -> str:
    if not isinstance(value, str) or not SLIDE_ID_PATTERN.fullmatch(value):
        raise ConfigError(
            f"invalid {kind} {value!r}: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}"
        )
    return value


def validate_encoder(encoder: object) -> str:
    """An encoder id names a Lance table directory, so it obeys the slide id rules."""
    return _validate_token("encoder id", encoder)


def validate_name(what: str, value: object) -> str:
    """A name that becomes a path component (a derived table's run or codebook hash)."""
    return _validate_token(what, value)


def validate_config_hash(config_hash: object) -> str:
    return _validate_token("config hash", config_hash)


def validate_run_id(run_id: object) -> str:
    """Run ids become Lance tag names (alphanumerics, '.', '-', '_')."""
    return _validate_token("run id", run_id)


def new_write_id() -> str:
    """A write id that sorts by creation time: 16 hex digits of ns, then randomness.

    Ordering lets the commit protocol decide which of two writes of the same slide is
    newer without a coordinator (see :mod:`features.store.writer`).
    """
    return f"{time.time_ns():016x}-{uuid.uuid4().hex[:16]}"


def write_id_before(seconds_ago: float) -> str:
    """The smallest write id that could have been made ``seconds_ago`` or later."""
    return f"{int((time.time() - seconds_ago) * 1e9):016x}"


def validate_write_id(write_id: object) -> str:
    return _validate_token("write id", write_id)


def sql_literal(value: str) -> str:
    """Quote a validated id for a Lance/DuckDB filter."""
    _validate_token("identifier", value)
    return f"'{value}'"


def in_list(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b')``; an empty list yields a predicate matching nothing."""
    items = sorted(set(values))
    if not items:
        return "false"
    return f"{column} IN ({', '.join(sql_literal(v) for v in items)})"
