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

__all__ = ["translate_unavailable", "unavailable_error"]

# Exception types of botocore, urllib3, aiohttp and the stdlib for a connection that
# failed, dropped or stalled (matched by name: none of these packages is imported here).
_NETWORK_TYPES = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "ProtocolError",
        "ClientConnectorError",
        "ClientOSError",
        "ClientPayloadError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
    }
)
# Words of object_store / Lance and of s3fs messages for the same faults and for the
# throttling and 5xx replies that S3 documents as retryable.
_NETWORK_WORDS = re.compile(
    r"connection (reset|closed|refused|aborted)|broken pipe|timed out|timeout"
    r"|request or response body error|error sending request|dispatch failure"
    r"|incomplete ?message|unexpected eof|slow ?down|reduce your request rate"
    r"|service unavailable|internal ?error|internal server error|bad gateway"
    r"|gateway time-?out|status code: 5\d\d",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(r"not found|does not exist|no such file|nosuchkey|nosuchbucket", re.I)
_RUST_LOCATION = re.compile(r",?\s*/\S+\.rs:\d+:\d+")
_MAX_DETAIL = 240


def unavailable_error(exc: BaseException, uri: str, what: str) -> StoreUnavailableError | None:
    """The typed error for ``exc`` when a network fault of object storage caused it
    (looking through ``__cause__`` and ``__context__``), else None. ``uri`` is the store
    root, ``what`` what was being read (``"listing slides.lance"``)."""
    for err in _chain(exc):
        if isinstance(err, StoreUnavailableError):
            return err
        if _is_network_fault(err):
            return StoreUnavailableError(
                uri,
                f"object storage failed {what} with a network fault after the storage "
                f"client's retries ({_detail(err)}); nothing was changed, try again later "
                "or check the endpoint",
            )
    return None


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


def _is_network_fault(err: BaseException) -> bool:
    if type(err).__name__ in _NETWORK_TYPES:
        return True
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    if not isinstance(err, OSError | ValueError):
        return False
    text = str(err)
    if _NOT_FOUND.search(text):
        return False
    # A ValueError is only storage's when Lance raised it (LanceError(IO) comes as one).
    if isinstance(err, ValueError) and "LanceError" not in text:
        return False
    return _NETWORK_WORDS.search(text) is not None


def _detail(err: BaseException) -> str:
    lines = str(err).strip().splitlines() or [type(err).__name__]
    text = _RUST_LOCATION.sub("", lines[0]).strip()
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return f"{type(err).__name__}: {text}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 16:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        todo += [err.__cause__, err.__context__]
