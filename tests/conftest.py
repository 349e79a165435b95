"""Shared fixtures: real sample slide, synthetic slides, and a local moto S3 server."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.environ import patched_environ
from tests._support import moto
from tests._support.moto import FAKE_CREDENTIALS
from tests._support.slides import CMU_SLIDE

# cuCIM must initialise before PyTorch in a process (see ingest/slides/backends/cucim_reader.py):
# load it first so every test, whatever the order, can use the cuCIM backend.
with contextlib.suppress(Exception):  # cuCIM missing or broken: its own tests say so
    from ingest.slides.backends.cucim_reader import warm_up

    warm_up()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from infra.arrays import gpu_available

    if gpu_available():
        return
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def cmu_slide() -> Path:
    if not CMU_SLIDE.exists():
        pytest.skip(f"real sample slide not present at {CMU_SLIDE} (fresh clone without shared/)")
    return CMU_SLIDE


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real S3-protocol endpoint on loopback (``python -m moto.server``)."""
    # Libraries that read credentials from the environment (boto, lance) must only ever
    # see the fake ones while the tests talk to moto.
    with patched_environ(FAKE_CREDENTIALS), moto.moto_server(dict(os.environ)) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3_options(moto_server: str) -> dict:
    """fsspec storage options pointing s3fs at the moto server (fake credentials)."""
    return moto.storage_options(moto_server)


@pytest.fixture
def s3_bucket(s3_options: dict) -> str:
    """A fresh, empty bucket; returns ``s3://name``."""
    import s3fs

    name = f"test-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(**s3_options)
    fs.mkdir(name)
    return f"s3://{name}"


# ---- synthetic slides (written once per session, small enough for CI) -------------------
@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="session")
def synthetic_svs(synthetic_dir: Path):
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    spec = SyntheticSlideSpec(
        width=2304, height=1792, mpp=0.5, style="svs", seed=11, downsamples=(1, 4), pen_marks=True
    )
    return write_synthetic_slide(synthetic_dir / "synthetic.svs", spec)


@pytest.fixture(scope="session")
def synthetic_tiff(synthetic_dir: Path):
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    # 1502 rows: level 2 has a non-integer downsample (1502 / 375), as real scans do.
    spec = SyntheticSlideSpec(
        width=2000, height=1502, mpp=0.25, style="tiff", seed=12, downsamples=(1, 2, 4)
    )
    return write_synthetic_slide(synthetic_dir / "synthetic.tif", spec)


# ---- one local Ray for the whole session ---------------------------------------------------
_RAY_LOCAL: dict[str, bool] = {"active": False}


def _start_ray(attempts: int = 3) -> bool:
    """``infra.ray_runtime.connect(num_cpus=2)``, tried up to three times: Ray gives its
    raylet and agents fixed start-up deadlines (30 s; the metrics agent's port file), which
    a heavily shared 2-core machine misses now and then."""
    import ray

    from infra.ray_runtime import connect

    for attempt in range(1, attempts + 1):
        try:
            return connect(num_cpus=2)
        except Exception:  # Ray raises a bare Exception for a start-up timeout
            if attempt == attempts:
                raise
            logging.getLogger(__name__).warning(
                "Ray did not start (attempt %d of %d)", attempt, attempts, exc_info=True
            )
            ray.shutdown()
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A running local Ray (2 CPUs) shared by every test that needs one: starting Ray costs
    15-40 s on a small machine, so each module starting its own would dominate the suite.
    Started through the same ``infra.ray_runtime.connect`` the CLI uses (token auth set
    explicitly, dashboard off), so code under test that calls ``connect`` joins it and
    leaves it up."""
    import ray

    from infra.ray_runtime import shutdown

    started = _start_ray()
    _RAY_LOCAL["active"] = True
    try:
        yield None
    finally:
        _RAY_LOCAL["active"] = False
        if ray.is_initialized():
            shutdown(started)


@pytest.fixture(scope="module", autouse=True)
def _ray_local_outlives_each_module() -> Iterator[None]:
    """A module that shuts Ray down (to run its own cluster, or through the code it tests)
    must not leave later modules with a dead ``ray_local``: bring it back up after that
    module. Costs nothing when Ray was never started or is still up."""
    yield
    if _RAY_LOCAL["active"]:
        import ray

        if not ray.is_initialized():
            _start_ray()


@pytest.fixture
def runtime_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private encoder-runtime cache (SLIDEBANK_RUNTIME_CACHE) for one test: exports and
    compiled models never leak between tests or into the user's cache."""
    folder = tmp_path / "runtime-cache"
    monkeypatch.setenv("SLIDEBANK_RUNTIME_CACHE", str(folder))
    return folder
