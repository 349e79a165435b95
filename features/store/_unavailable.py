"""Network faults of object storage as one typed error naming the store.

When S3 (or GCS, Azure, a MinIO or Ceph endpoint) resets a connection, times out or
throttles, the storage client retries (Lance's object_store: ``client_max_retries``,
``client_retry_timeout``; s3fs: botocore's ``retries``). Once those retries are spent the
fault reached the user as ``ValueError: LanceError(IO): Generic S3 error: Error getting
list response body: HTTP error: request or response body error, /home/runner/.../
object_store.rs:1576:42`` from deep inside an open. :func:`unavailable_error` recognises
such faults and returns :class:`~infra.errors.StoreUnavailableError` (a
``ConnectionError``) naming the store root and what was being read, in one line.

Only network faults are translated: a missing table, a refused permission or a corrupt
file keep their own errors, so nobody is told to retry what cannot succeed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from infra.errors import StoreUnavailableError
from infra.network_faults import exception_chain, network_fault

__all__ = ["translate_unavailable", "unavailable_error"]

_RUST_LOCATION = re.compile(r",?\s*/\S+\.rs:\d+:\d+")
_MAX_DETAIL = 240


def unavailable_error(exc: BaseException, uri: str, what: str) -> StoreUnavailableError | None:
    """The typed error for ``exc`` when a network fault of object storage caused it
    (looking through ``__cause__`` and ``__context__``: :func:`infra.network_faults.network_fault`),
    else None. ``uri`` is the store root, ``what`` what was being read
    (``"listing slides.lance"``)."""
    for err in exception_chain(exc):
        if isinstance(err, StoreUnavailableError):
            return err
    fault = network_fault(exc)
    if fault is None:
        return None
    return StoreUnavailableError(
        uri,
        f"object storage failed {what} with a network fault after the storage "
        f"client's retries ({_detail(fault)}); nothing was changed, try again later "
        "or check the endpoint",
    )


@contextlib.contextmanager
def translate_unavailable(uri: str, what: str) -> Iterator[None]:
    """Re-raise network faults of object storage in the block as typed errors."""
    try:
        yield
    except Exception as exc:
        typed = unavailable_error(exc, uri, what)
        if typed is None or typed is exc:
            raise
        raise typed from exc


def _detail(err: BaseException) -> str:
    lines = str(err).strip().splitlines() or [type(err).__name__]
    text = _RUST_LOCATION.sub("", lines[0]).strip()
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return f"{type(err).__name__}: {text}"
