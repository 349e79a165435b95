"""Resource plans never over-commit the cluster (an over-committed plan deadlocks)."""

from __future__ import annotations

import pytest

from ingest.pipeline.config import RunOptions
from ingest.pipeline.resources import plan_resources


@pytest.mark.parametrize(("cpus", "gpus"), [(1, 0), (2, 0), (3, 0), (16, 0), (8, 1), (32, 4)])
def test_cpu_shares_fit(monkeypatch, cpus: int, gpus: int) -> None:
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": float(cpus), "GPU": float(gpus)})
    plan = plan_resources(RunOptions())
    used = (
        plan.encoder_actors * plan.cpus_per_encoder
        + plan.readers * plan.cpus_per_reader
        + plan.writers * plan.cpus_per_writer
    )
    assert used <= cpus + 1e-9
    assert plan.encoder_actors == (gpus or (cpus // 2 if cpus >= 4 else cpus))
    assert plan.cpus_per_reader != plan.cpus_per_encoder, "keeps reads a separate operator"


def test_encoder_names_become_store_ids() -> None:
    from features.store import SlideKey
    from ingest.pipeline.config import IngestConfig

    config = IngestConfig(encoder="timm:vit_small_patch16_224")
    assert config.encoder_id == "timm-vit_small_patch16_224"
    SlideKey("s1", config.encoder_id, "0123456789abcdef")  # accepted by the store
