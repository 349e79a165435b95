"""Issue 17: S3 misbehaving between slidebank and the store — throttling (503 SlowDown),
connections reset mid-body, stalls past the client timeout, and PUTs that succeed but
whose response is lost — for slide reads, staging, Lance commits and Zarr writes.
Outcome in every case: the right bytes or a typed error; never a lost or duplicated slide.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import numpy as np
import pytest

from features.store import FeatureStore, SlideKey
from infra.errors import SlidebankError
from ingest.slides import open_slide
from tests._support.s3_faults import Fault, fault_proxy
from tests._support.store import CONFIG, ENCODER, slide_info, tile_payload

pytestmark = [pytest.mark.s3, pytest.mark.timeout(300)]


@pytest.fixture
def proxy(moto_server):
    with fault_proxy(moto_server) as p:
        yield p


def _options(endpoint: str) -> dict:
    return {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": endpoint,
        "skip_instance_cache": True,
        "config_kwargs": {
            "read_timeout": 2,
            "connect_timeout": 2,
            "retries": {"max_attempts": 6, "mode": "standard"},
        },
    }


@pytest.fixture
def bucket(s3_options) -> str:
    import s3fs

    name = f"faults-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(**s3_options).mkdir(name)
    return name


@pytest.fixture
def remote_slide(bucket, s3_options, synthetic_svs) -> str:
    import s3fs

    s3fs.S3FileSystem(**s3_options).pipe(
        f"{bucket}/slides/a.svs", Path(synthetic_svs.path).read_bytes()
    )
    return f"s3://{bucket}/slides/a.svs"


def _region(uri: str, options: dict | None, strategy: str = "auto") -> np.ndarray:
    with open_slide(
        uri,
        storage_options=options,
        strategy=strategy,
        reader="tiffslide" if strategy == "stream" else None,
    ) as slide:
        return slide.read_region((512, 512), 0, (256, 256))


# ~5-10 s each on 2 cores: the default suite keeps one read and one commit case per fault
# family; the rest run with -m slow.
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "fault",
    [
        Fault("slowdown", method="GET|HEAD", times=2),  # each retry backs off: 4 took 12 s
        pytest.param(Fault("reset", method="GET", times=2), marks=SLOW),
        pytest.param(Fault("stall", method="GET|HEAD", times=1, seconds=4.0), marks=SLOW),
    ],
    ids=["503-slowdown", "reset-mid-body", "stall-past-timeout"],
)
@pytest.mark.parametrize("strategy", ["stream", pytest.param("stage", marks=SLOW)])
def test_slide_reads_survive_transient_faults(
    proxy, remote_slide, synthetic_svs, fault, strategy
) -> None:
    expected = _region(synthetic_svs.path, None)
    fault = dataclasses.replace(fault, seen=0, fired=0)  # parameters are shared objects
    proxy.add(fault)
    try:
        got = _region(remote_slide, _options(proxy.endpoint), strategy)
    except SlidebankError:
        pytest.fail(f"a transient {fault.kind} was not retried")
    assert proxy.fired(fault.kind) == fault.times
    np.testing.assert_array_equal(got, expected)


@SLOW
def test_persistent_throttling_is_a_typed_error(proxy, remote_slide) -> None:
    proxy.add(Fault("slowdown", times=10_000))
    with pytest.raises(SlidebankError) as info:
        _region(remote_slide, _options(proxy.endpoint), "stream")
    assert remote_slide in str(info.value)


def _commit(store: FeatureStore, names: list[str]) -> None:
    store.commit(
        [
            store.write_slide(
                SlideKey(n, ENCODER, CONFIG), slide_info(n), [tile_payload(5 + i, seed=i)]
            )
            for i, n in enumerate(names)
        ]
    )


@pytest.mark.parametrize(
    "fault",
    [
        Fault("drop_response", method="PUT", times=3),
        pytest.param(
            Fault("drop_response", method="PUT", path=r"_versions|\.manifest", times=2), marks=SLOW
        ),
        pytest.param(Fault("slowdown", method="PUT|POST|GET", times=6), marks=SLOW),
        pytest.param(Fault("reset", method="GET", times=3), marks=SLOW),
    ],
    ids=["put-response-lost", "manifest-put-response-lost", "503-on-writes", "reset-on-reads"],
)
def test_store_commits_lose_and_duplicate_nothing(proxy, bucket, s3_options, fault) -> None:
    uri = f"s3://{bucket}/store"
    faulty = FeatureStore.open(uri, _options(proxy.endpoint), create=True)
    _commit(faulty, ["s1", "s2"])
    fault = dataclasses.replace(fault, seen=0, fired=0)  # parameters are shared objects
    proxy.add(fault)
    try:
        _commit(faulty, ["s3", "s4"])
        committed = {"s1", "s2", "s3", "s4"}
    except SlidebankError:
        committed = {"s1", "s2"}  # typed failure: the group must then be wholly absent
    assert proxy.fired(fault.kind) >= 1
    truth = FeatureStore.open(uri, s3_options)  # straight to moto, no faults
    rows = truth.slides(columns=["slide_id", "status"]).to_pylist()
    assert sorted(r["slide_id"] for r in rows) == sorted(committed), "lost or duplicated slide"
    tiles = truth.tiles(columns=["slide_id", "x", "y"]).to_pylist()
    keys = [(t["slide_id"], t["x"], t["y"]) for t in tiles]
    assert len(keys) == len(set(keys)), "duplicated tiles"
    assert {k[0] for k in keys} == committed
