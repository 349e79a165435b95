"""Store errors that refine the shared ones in :mod:`infra.errors`.

They subclass :class:`infra.errors.StoreError` and a builtin, so callers may catch
``StoreError``, the specific class, or the builtin (conventions, rule 2).
"""

from __future__ import annotations

from infra.errors import StoreError

__all__ = [
    "FragmentMissingError",
    "SlideNotInStoreError",
    "StoreNotFoundError",
    "StoreReadOnlyError",
    "StoreSchemaError",
    "StoreVersionError",
    "TileNotFoundError",
]


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No feature store (or no table for the requested encoder) at the given URI."""


class StoreSchemaError(StoreError, ValueError):
    """Data does not match a table's schema (embedding dim or dtype, columns)."""


class StoreVersionError(StoreError, LookupError):
    """A requested version or tag does not exist or was removed by cleanup."""


class StoreReadOnlyError(StoreError, PermissionError):
    """A write was attempted on a store opened at a past version."""


class TileNotFoundError(StoreError, LookupError):
    """No visible tile at the requested (slide_id, x, y)."""


class SlideNotInStoreError(StoreError, LookupError):
    """A slide id the store has never seen (for the encoder asked about)."""


class FragmentMissingError(StoreError, FileNotFoundError):
    """A commit names fragment files that are gone (removed by a recovery or cleanup that
    took their run for dead): committing them would make every read of the table fail."""
