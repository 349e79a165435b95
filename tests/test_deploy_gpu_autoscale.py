"""Ingestion on an autoscaling cluster whose GPU workers start at zero (the RayJob's shape).

Function level, no GPU and no Ray: the cluster's resources are a scripted sequence (as in
tests/test_pipeline_resources.py) and the autoscaler request is recorded. Before the fix
the engine was chosen from the resources present at connect time: on a head with no GPU
the run took the CPU engine with one actor and never asked for a GPU.
"""

from __future__ import annotations

from typing import Any

import pytest

from infra.autoscale import gpu_request, wait_for_gpus
from infra.errors import GPUUnavailableError
from ingest.pipeline.config import RunOptions
from ingest.pipeline.resources import choose_engine, gpus_to_request, plan_device


class _Cluster:
    """``ray.cluster_resources`` that gains GPUs as the autoscaler brings nodes."""

    def __init__(self, gpus: list[int], cpus: int = 0) -> None:
        self.gpus, self.cpus, self.calls = gpus, cpus, 0

    def __call__(self) -> dict[str, float]:
        gpus = self.gpus[min(self.calls, len(self.gpus) - 1)]
        self.calls += 1
        return {"CPU": float(self.cpus + 6 * gpus), "GPU": float(gpus)}


@pytest.fixture
def requests(monkeypatch) -> list[Any]:
    import ray.autoscaler.sdk

    seen: list[Any] = []
    monkeypatch.setattr(
        ray.autoscaler.sdk, "request_resources", lambda **kw: seen.append(kw.get("bundles"))
    )
    return seen


def _cluster(monkeypatch, gpus: list[int]) -> _Cluster:
    import ray

    cluster = _Cluster(gpus)
    monkeypatch.setattr(ray, "cluster_resources", cluster)
    return cluster


def test_the_device_engine_is_chosen_before_any_gpu_joined(monkeypatch, requests) -> None:
    # The head has no GPU when the run starts; the first GPU worker joins a poll later.
    _cluster(monkeypatch, [0, 0, 1])
    options = RunOptions(max_gpus=4, gpu_wait_s=5)
    monkeypatch.setattr("infra.autoscale.time.sleep", lambda s: None)
    assert choose_engine(options) == "device"
    # GPUs were asked for, and the sticky request withdrawn once the wait was over.
    assert requests == [[{"GPU": 1}] * 4, []]


def test_without_max_gpus_the_choice_is_what_is_there(monkeypatch, requests) -> None:
    _cluster(monkeypatch, [0])
    assert choose_engine(RunOptions()) == "fused"
    assert requests == []
    assert gpus_to_request(RunOptions(max_gpus=2, device="cpu")) == 0
    assert gpus_to_request(RunOptions(max_gpus=2, engine="fused")) == 0


def test_no_gpu_in_time_fails_clearly_or_falls_back_when_asked(monkeypatch, requests) -> None:
    _cluster(monkeypatch, [0])
    with pytest.raises(GPUUnavailableError, match=r"no GPU joined .* within 0\.05 s.*--gpu-wait"):
        choose_engine(RunOptions(max_gpus=2, gpu_wait_s=0.05))
    assert requests == [[{"GPU": 1}] * 2, []], "the request is withdrawn after a timeout too"
    assert choose_engine(RunOptions(max_gpus=2, gpu_wait_s=0.05, gpu_fallback_cpu=True)) == "fused"


def test_the_device_pool_is_sized_for_the_gpus_asked_for(monkeypatch) -> None:
    # One GPU has joined; the pool gets one actor per GPU asked for (never more than
    # slides), and the ones beyond the first start as their GPUs arrive.
    _cluster(monkeypatch, [1])
    assert plan_device(RunOptions(max_gpus=8), n_slides=20).actors == 8
    assert plan_device(RunOptions(max_gpus=8), n_slides=3).actors == 3
    assert plan_device(RunOptions(), n_slides=20).actors == 1


def test_wait_for_gpus_polls_until_one_joins() -> None:
    now = [0.0]
    seen = iter([{}, {"GPU": 0.0}, {"GPU": 2.0}])
    gpus = wait_for_gpus(
        60,
        poll_s=5,
        resources=lambda: next(seen),
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    assert gpus == 2 and now[0] == 10


def test_gpu_request_is_withdrawn_when_the_run_fails(requests) -> None:
    with pytest.raises(RuntimeError), gpu_request(3):
        raise RuntimeError("boom")
    assert requests == [[{"GPU": 1}] * 3, []]
    with gpu_request(0):
        pass
    assert len(requests) == 2, "nothing asked for when no GPUs are wanted"


@pytest.mark.parametrize("bad", [{"max_gpus": 0}, {"gpu_wait_s": 0}, {"gpu_wait_s": -1.0}])
def test_bad_gpu_options_are_refused(bad: dict[str, Any]) -> None:
    from infra.errors import ConfigError

    with pytest.raises(ConfigError):
        RunOptions(**bad)
