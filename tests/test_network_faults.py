"""One rule for "a network fault of remote storage", shared by the store and the slide
opener (infra.network_faults): they must not disagree about what to call retryable."""

from __future__ import annotations

import socket

from infra.network_faults import network_fault


class EndpointConnectionError(Exception):
    """Named like botocore's, which is not a builtin ConnectionError."""


def _raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as caught:
        return caught


def test_network_faults_are_found_through_the_chain() -> None:
    lance = ValueError(
        "LanceError(IO): Generic S3 error: Error getting list response body: HTTP error: "
        "request or response body error, /root/object_store.rs:1576:42"
    )
    assert network_fault(lance) is lance
    assert network_fault(ConnectionResetError("reset")) is not None
    assert network_fault(socket.gaierror("Name or service not known")) is not None
    assert network_fault(OSError("503 SlowDown: reduce your request rate")) is not None
    named = EndpointConnectionError("http://127.0.0.1:1")
    wrapped = _raised_from(RuntimeError("open failed"), named)
    assert network_fault(wrapped) is named


def test_what_cannot_succeed_on_retry_is_not_a_network_fault() -> None:
    assert network_fault(FileNotFoundError("no such file: s3://b/x.svs")) is None
    assert network_fault(PermissionError("AccessDenied")) is None
    # a ValueError is storage's only when Lance raised it
    assert network_fault(ValueError("timeout must be positive")) is None
    assert network_fault(ValueError("LanceError(IO): Not found: s3://b/t.lance")) is None
    assert network_fault(ValueError("LanceError(Corrupt): bad manifest")) is None


def test_the_slide_opener_uses_the_same_rule() -> None:
    from ingest.slides import opener

    assert opener._unreachable(OSError("Connection reset by peer"))
    assert not opener._unreachable(FileNotFoundError("missing.svs"))
