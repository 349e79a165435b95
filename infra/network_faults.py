"""Network faults of remote storage, recognised wherever they surface.

A connection that was refused, reset, timed out or throttled reaches slidebank in many
disguises: botocore's ``EndpointConnectionError``, aiohttp's ``ClientConnectorError``,
the stdlib's ``ConnectionError`` and ``socket.gaierror``, Lance's ``LanceError(IO):
Generic S3 error: ... request or response body error`` (a ``ValueError``), s3fs's
``OSError`` for a 503 SlowDown, and any of these as the ``__cause__`` or ``__context__``
of another. :func:`network_fault` finds one in an exception's chain. The store
(``features.store._unavailable``) and the slide opener (``ingest.slides.opener``) both
decide "retry later, or check the endpoint" by it, so the two cannot disagree about what
a network fault is.

Only network faults count: a missing object, a refused permission or a corrupt file keep
their own errors, so nobody is told to retry what cannot succeed.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

__all__ = ["exception_chain", "network_fault"]

# Exception types of botocore, urllib3, aiohttp, gcsfs and the stdlib for a connection
# that failed, dropped or stalled (matched by name: none of these packages is imported).
# botocore's ``ConnectionError`` is its own class, not the builtin, hence the name too.
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
        "ConnectionError",
        "ConnectionRefusedError",
        "TimeoutError",
        "gaierror",
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


def network_fault(exc: BaseException) -> BaseException | None:
    """The link of ``exc``'s chain (itself, its causes and contexts) that is a network
    fault of remote storage, or None."""
    for err in exception_chain(exc):
        if _is_network_fault(err):
            return err
    return None


def exception_chain(exc: BaseException, limit: int = 16) -> Iterator[BaseException]:
    """``exc``, then its ``__cause__`` and ``__context__`` links, breadth first, each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < limit:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        todo += [err.__cause__, err.__context__]


def _is_network_fault(err: BaseException) -> bool:
    if type(err).__name__ in _NETWORK_TYPES:
        return True
    if isinstance(err, ConnectionError | TimeoutError | socket.gaierror):
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
