"""Issue 28 #5: Ray's workers run at the driver's own priority, not 15 nicer (Ray's
default), in the embedded Ray and in ``slidebank cluster up``; a user's
``RAY_worker_niceness`` is kept."""

from __future__ import annotations

import os

import pytest

from infra.ray_runtime import ray_process_env

KNOB = "RAY_worker_niceness"  # Ray's own spelling (a RayConfig key), not an upper-case name


def test_embedded_ray_workers_run_at_the_drivers_niceness(ray_local) -> None:
    import ray

    @ray.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    # Ray's default would make this the driver's niceness + 15 (capped at 19).
    assert ray.get(niceness.remote()) == os.nice(0)


def test_cluster_up_environment_keeps_workers_at_the_users_priority(monkeypatch) -> None:
    monkeypatch.delenv(KNOB, raising=False)
    assert ray_process_env("token", "t")[KNOB] == "0"
    monkeypatch.setenv(KNOB, "10")  # the user asked for nicer workers
    assert ray_process_env("token", "t")[KNOB] == "10"


@pytest.mark.parametrize("value", ["0", "7"])
def test_embedded_start_sets_the_niceness_only_while_ray_starts(monkeypatch, value) -> None:
    from infra import ray_runtime

    monkeypatch.setenv(KNOB, value)
    with ray_runtime._loopback_only():
        assert os.environ[KNOB] == value
    assert os.environ[KNOB] == value
    monkeypatch.delenv(KNOB)
    with ray_runtime._loopback_only():
        assert os.environ[KNOB] == "0"
    assert KNOB not in os.environ
