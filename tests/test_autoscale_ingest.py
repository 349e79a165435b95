"""``slidebank ingest --engine auto --max-gpus 2`` on an autoscaling cluster whose GPU
workers start at zero (a RayJob's shape: a head without GPU, a GPU group at
``minReplicas: 0``), on Ray's fake autoscaler (tests/_autoscaling.py): the device engine is
chosen before any GPU exists, the autoscaler brings the fake GPU nodes, the device actor
pool grows as they join, and every slide is done.

Without a real GPU the device actors run the engine's NumPy path (as in
tests/test_pipeline_fused.py); the fake nodes' ``GPU`` resource is what Ray schedules
them by. Slow (a Ray head plus two autoscaled raylets); run with
``pytest -m slow tests/test_autoscale_ingest.py``.
"""

from __future__ import annotations

import json
import logging
import re
import threading

import pytest
from typer.testing import CliRunner

from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide
from tests._autoscaling import autoscaling_cluster
from tests._multinode import auth_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

GPU_NODE = {
    "fake-gpu": {
        "resources": {"CPU": 1, "GPU": 1},
        "node_config": {},
        "min_workers": 0,
        "max_workers": 2,
    }
}
N_SLIDES = 4


@pytest.fixture(scope="module", autouse=True)
def _no_other_ray_running() -> None:
    """One process holds one Ray: a session ``ray_local`` left up by an earlier module is
    shut down first (conftest brings it back after this module)."""
    import ray

    from infra.ray_runtime import shutdown

    if ray.is_initialized():
        shutdown(True)


def _gpus_seen(address: str, stop: threading.Event, seen: list[int]) -> None:
    """Record the cluster's GPU count every half second (from its GCS, no driver needed)."""
    from ray._raylet import GcsClient

    client = GcsClient(address=address)
    while not stop.wait(0.5):
        nodes = client.get_all_node_info(timeout=10)
        seen.append(
            sum(int(n.resources_total.get("GPU", 0)) for n in nodes.values() if n.state == 0)
        )  # 0: ALIVE


def test_ingest_grows_onto_gpus_the_autoscaler_brings(tmp_path, caplog) -> None:
    from slidebank.cli import app

    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(N_SLIDES):
        write_synthetic_slide(
            folder / f"as-{i}.svs",
            SyntheticSlideSpec(width=4096, height=3072, seed=90 + i, downsamples=(1, 4), n_blobs=2),
        )
    caplog.set_level(logging.INFO, logger="infra.autoscale")
    caplog.set_level(logging.INFO, logger="ingest.pipeline")  # the actor pool's "answers" lines
    with (
        auth_env("token"),
        autoscaling_cluster(tmp_path, head_cpus=2, worker_types=GPU_NODE) as address,
    ):
        seen: list[int] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_gpus_seen, args=(address, stop, seen), daemon=True)
        watcher.start()
        try:
            result = CliRunner().invoke(
                app,
                [
                    "ingest",
                    str(folder / "*.svs"),
                    "--store",
                    str(tmp_path / "store"),
                    "--address",
                    address,
                    "--engine",
                    "auto",
                    "--max-gpus",
                    "2",
                    "--gpu-wait",
                    "300",
                    "--tiles-per-batch",
                    "16",
                    "--json",
                ],
            )
        finally:
            stop.set()
            watcher.join(30)
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["engine"] == "device"
    assert sorted(o["status"] for o in summary["outcomes"]) == ["done"] * N_SLIDES
    assert all(o["tiles"] > 0 for o in summary["outcomes"])
    # The cluster had no GPU when the run began; the autoscaler brought two fake GPU nodes.
    assert seen and seen[0] == 0 and max(seen) == 2, seen
    messages = [r.getMessage() for r in caplog.records]
    assert "asked the autoscaler for 2 GPU(s)" in messages
    # The pool was sized for the two GPUs asked for and took slides on each as it answered.
    answered = [m for m in messages if re.fullmatch(r"a worker answers; \d of 2 take slides", m)]
    assert answered == [
        "a worker answers; 1 of 2 take slides",
        "a worker answers; 2 of 2 take slides",
    ]
