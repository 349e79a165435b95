"""Shared fixtures: real sample slide, synthetic slides, and a local moto S3 server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# cuCIM must initialise before PyTorch in a process (see ingest/slides/backends/cucim_reader.py):
# load it first so every test, whatever the order, can use the cuCIM backend.
with contextlib.suppress(Exception):  # cuCIM missing or broken: its own tests say so
    from ingest.slides.backends.cucim_reader import warm_up

    warm_up()

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CMU_SLIDE = SHARED_DATA / "cmu_small_region.svs"

# Fake credentials for the local moto server only; set before any boto/s3fs import
# can pick up real ones from the environment.
_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real S3-protocol endpoint on loopback (``python -m moto.server``)."""
    port = _free_port()
    # Libraries that read credentials from the environment (boto, lance) must only ever
    # see the fake ones while the tests talk to moto.
    saved = {k: os.environ.get(k) for k in _FAKE_AWS}
    os.environ.update(_FAKE_AWS)
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto server did not start")
            time.sleep(0.1)
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def s3_options(moto_server: str) -> dict:
    """fsspec storage options pointing s3fs at the moto server (fake credentials)."""
    return {
        "key": _FAKE_AWS["AWS_ACCESS_KEY_ID"],
        "secret": _FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        "endpoint_url": moto_server,
        "skip_instance_cache": True,
    }


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
    from ingest.synthetic import SyntheticSlideSpec, write_synthetic_slide

    spec = SyntheticSlideSpec(width=2304, height=1792, mpp=0.5, style="svs", seed=11,
                              downsamples=(1, 4), pen_marks=True)
    return write_synthetic_slide(synthetic_dir / "synthetic.svs", spec)


@pytest.fixture(scope="session")
def synthetic_tiff(synthetic_dir: Path):
    from ingest.synthetic import SyntheticSlideSpec, write_synthetic_slide

    # 1502 rows: level 2 has a non-integer downsample (1502 / 375), as real scans do.
    spec = SyntheticSlideSpec(width=2000, height=1502, mpp=0.25, style="tiff", seed=12,
                              downsamples=(1, 2, 4))
    return write_synthetic_slide(synthetic_dir / "synthetic.tif", spec)


# ---- one local Ray for the whole session ---------------------------------------------------
@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A running local Ray (2 CPUs) shared by every test that needs one: starting Ray costs
    15-40 s on a small machine, so each module starting its own would dominate the suite.
    Started through the same ``infra.ray_runtime.connect`` the CLI uses (token auth set
    explicitly, dashboard off)."""
    import ray

    from infra.ray_runtime import connect, shutdown

    started = connect(num_cpus=2)
    try:
        yield None
    finally:
        if ray.is_initialized():
            shutdown(started)
