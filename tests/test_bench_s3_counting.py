"""The S3 request counts of issue 27 (``benchmarks/_s3_counting.py``) and the chaos run's
periodic faults (``benchmarks/_s3_chaos.py``), against a real moto server on loopback."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from benchmarks._s3_chaos import EveryNth
from benchmarks._s3_counting import counting_moto, price, read_counts
from tests._support.moto import FAKE_CREDENTIALS, storage_options
from tests._support.s3_faults import fault_proxy

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def counted() -> Iterator[str]:
    with counting_moto({**os.environ, **FAKE_CREDENTIALS}) as endpoint:
        yield endpoint


def test_each_request_is_counted_as_s3_bills_it(counted) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**storage_options(counted))
    fs.mkdir("counted")
    read_counts(counted, reset=True)
    fs.pipe("counted/store/slides.lance/_versions/1.manifest", b"x" * 10)  # PUT
    fs.pipe("counted/store/tiles/enc.lance/data/a.lance", b"y" * 10)  # PUT
    fs.cat("counted/store/tiles/enc.lance/data/a.lance")  # GET
    fs.invalidate_cache()
    fs.info("counted/store/tiles/enc.lance/data/a.lance")  # HEAD
    fs.invalidate_cache()
    fs.ls("counted/store/tiles/enc.lance/data")  # LIST
    fs.copy("counted/store/tiles/enc.lance/data/a.lance", "counted/b")  # COPY
    fs.rm_file("counted/b")  # DELETE
    counts = read_counts(counted, reset=True)
    ops, parts = counts["ops"], counts["parts"]
    assert ops["PUT"] == 2 and ops["GET"] == 1 and ops["COPY"] == 1, ops
    assert ops["LIST"] >= 1 and ops["HEAD"] >= 1 and ops["DELETE"] >= 1, ops
    assert parts["PUT slides:_versions"] == 1 and parts["PUT tiles:data"] == 1, parts
    assert parts["GET tiles:data"] == 1, parts
    assert any(key.startswith("LIST tiles:data") for key in parts), parts
    assert read_counts(counted)["ops"] == {}, "reset starts from zero"
    # 2 PUT + 1 COPY + LISTs at $0.005/1000, GET and HEADs at $0.0004/1000, DELETE free
    expected = (3 + ops["LIST"]) * 0.005 / 1000 + (1 + ops["HEAD"]) * 0.0004 / 1000
    assert price(ops) == pytest.approx(expected)


def test_every_nth_fault_fires_all_run_long(counted) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**storage_options(counted))
    fs.mkdir("nth")
    fs.pipe("nth/k", b"z")
    with fault_proxy(counted) as proxy:
        proxy.add(EveryNth("slowdown", method="GET", times=10**9, every=3))
        statuses = []
        for _ in range(7):
            try:
                with urllib.request.urlopen(f"{proxy.endpoint}/nth/k", timeout=10) as r:
                    statuses.append(r.status)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
    # unsigned requests: moto answers them itself (403), the proxy's fault is the 503
    assert [code == 503 for code in statuses] == [False, False, True, False, False, True, False]
    assert proxy.fired("slowdown") == 2
