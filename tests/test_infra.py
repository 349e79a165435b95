"""infra: slide ids, secret redaction, array-module choice, URIs."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from infra.arrays import asnumpy, get_xp, gpu_available
from infra.errors import InvalidSlideIdError
from infra.ids import slide_id_from_uri, validate_slide_id
from infra.logs import RedactingFilter, redact_options, redact_text
from infra.storage import is_local, strip_protocol


@pytest.mark.parametrize(
    "bad", ["../x", "/etc/passwd", "", ".hidden", "a/b", "a" * 129, None, "x y"]
)
def test_unsafe_slide_ids_are_refused(bad) -> None:
    with pytest.raises(InvalidSlideIdError):
        validate_slide_id(bad)


def test_slide_ids_from_file_names() -> None:
    assert slide_id_from_uri("s3://bucket/cohort/TCGA-AA-0001.svs") == "TCGA-AA-0001"
    odd = slide_id_from_uri("/data/my slide (1).svs")
    assert validate_slide_id(odd) == odd and odd.startswith("my_slide")
    assert odd != slide_id_from_uri("/data/my slide (2).svs")


def test_secrets_never_reach_logs(caplog: pytest.LogCaptureFixture) -> None:
    assert redact_options(
        {
            "key": "AKIA123",
            "secret": "s3cr3t",
            "endpoint_url": "http://x",
            "client_kwargs": {"aws_session_token": "tok"},
        }
    ) == {
        "key": "***",
        "secret": "***",
        "endpoint_url": "http://x",
        "client_kwargs": {"aws_session_token": "***"},
    }
    assert "hunter2" not in redact_text("https://user:hunter2@host/x.svs")
    logger = logging.getLogger("slidebank.test")
    handler = logging.Handler()
    records = []
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("opening with secret_access_key=%s", "s3cr3t")
    finally:
        logger.removeHandler(handler)
    assert "s3cr3t" not in records[0].getMessage()


def test_array_module_falls_back_to_numpy_without_gpu() -> None:
    xp = get_xp("auto")
    assert (xp is np) != gpu_available()
    assert isinstance(asnumpy(xp.ones(3)), np.ndarray)
    if not gpu_available():
        with pytest.raises(ValueError, match="no usable CUDA GPU"):
            get_xp("cuda")


def test_uris() -> None:
    assert is_local("/a/b.svs") and is_local("file:///a/b.svs") and not is_local("s3://b/k.svs")
    assert strip_protocol("file:///a/b.svs") == "/a/b.svs"
