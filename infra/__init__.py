"""Runtime substrate shared by every slidebank package: errors, ids, storage, arrays, logging."""

from infra.errors import *  # noqa: F403
from infra.errors import __all__ as _errors_all
from infra.ids import slide_id_from_uri, validate_slide_id

__all__ = [*_errors_all, "slide_id_from_uri", "validate_slide_id"]
