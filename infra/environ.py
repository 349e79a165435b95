"""Setting environment variables for a block and putting them back afterwards."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

__all__ = ["patched_environ"]


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set each variable of ``values`` (``None`` removes it) in this process's environment;
    on leaving, every one of them is as it was before, set or unset, even after an error.

    Child processes started inside the block inherit the patched environment, which is why
    the embedded Ray, the moto server and the multi-node tests need it rather than a copy.
    """
    saved = {key: os.environ.get(key) for key in values}
    try:
        _apply(values)
        yield
    finally:
        _apply(saved)


def _apply(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
