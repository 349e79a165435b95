"""Fixtures for the feature store tests: a store on each storage location, tile factories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from features.store import FeatureStore, PendingSlide, SlideKey
from tests._support.store import CONFIG, DIM, ENCODER, slide_info, tile_payload


@pytest.hookimpl(tryfirst=True)  # before ``-m 'not slow'`` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.slow_on_s3``: the test's S3 case is slow, its local case stays in the
    default suite. Each S3 case pays several seconds of moto round trips; the default suite
    keeps the S3 cases that prove something only S3 can (conditional commits, retries,
    concurrent writers killed mid-commit) and leaves these to ``-m slow``."""
    for item in items:
        spec = getattr(item, "callspec", None)
        if (
            item.get_closest_marker("slow_on_s3")
            and spec
            and spec.params.get("store_location") == "s3"
        ):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store_location(request: pytest.FixtureRequest, tmp_path) -> tuple[str, dict[str, Any]]:
    """A fresh store root on local disk, or in a moto S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "store"), {}
    bucket = request.getfixturevalue("s3_bucket")
    options = request.getfixturevalue("s3_options")
    return f"{bucket}/store", options


@pytest.fixture
def store(store_location) -> FeatureStore:
    uri, options = store_location
    return FeatureStore.open(uri, options, create=True)


@pytest.fixture
def local_store(tmp_path) -> FeatureStore:
    return FeatureStore.open(str(tmp_path / "store"), create=True)


WriteFn = Callable[..., PendingSlide]


@pytest.fixture
def write() -> WriteFn:
    """``write(store, slide_id, n=..., seed=...)``: a worker-side write, not committed."""

    def _write(
        fs: FeatureStore,
        slide_id: str,
        n: int = 40,
        *,
        seed: int = 0,
        encoder: str = ENCODER,
        config: str = CONFIG,
        dim: int = DIM,
        dtype: str = "float32",
    ) -> PendingSlide:
        key = SlideKey(slide_id, encoder, config)
        return fs.write_slide(
            key, slide_info(slide_id), [tile_payload(n, dim=dim, seed=seed, dtype=dtype)]
        )

    return _write
