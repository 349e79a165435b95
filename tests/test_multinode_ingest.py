"""Ingestion on a real multi-node Ray cluster (separate raylets on this machine), slides and
store on S3 (moto): the work spreads over the nodes, each node stages its own slides, the
result equals a single-node run, and losing a whole worker node mid-run loses and
duplicates no tile.

Slow (two Ray start-ups and three ingests); run with ``pytest -m slow tests/test_multinode_ingest.py``.
"""

from __future__ import annotations

import threading

import pytest

from features.store import FeatureStore
from ingest.pipeline.config import RunOptions
from ingest.pipeline.runner import run_ingest
from ingest.pipeline.sources import SlideSource
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide
from tests._deploy_tools.metric_names import code_metrics, exported_names
from tests._multinode import auth_env, multinode_cluster, wait_for, with_startup_retries

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.timeout(900)]

# Small batches so a slide is several tasks' worth of rows, committed every two slides.
OPTIONS = RunOptions(progress=False, commit_every=2, tiles_per_batch=16)
# Both CPU engines: "fused" is what CPU-only clusters run by default
# (resources.choose_engine); "dataset" (Ray Data actor pools) on request. On 1-CPU nodes the dataset engine gets one
# encoder (a whole node) and two readers: the default plan assumes one large node and its
# fractional shares (0.6-CPU encoders, 0.5-CPU readers) would not pack onto 1-CPU nodes.
ENGINES = {
    "fused": OPTIONS.replace(engine="fused"),
    "dataset": OPTIONS.replace(engine="dataset", encoder_actors=1, read_concurrency=2),
}
N_SLIDES = 8


@pytest.fixture(scope="module")
def s3_cohort(tmp_path_factory, s3_options) -> list[SlideSource]:
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    bucket = f"multinode-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    folder = tmp_path_factory.mktemp("mn-cohort")
    sources = []
    for i in range(N_SLIDES):
        path = folder / f"mn-{i}.svs"
        write_synthetic_slide(
            path,
            SyntheticSlideSpec(width=1792, height=1536, seed=70 + i, downsamples=(1, 4), n_blobs=2),
        )
        fs.put(str(path), f"{bucket}/slides/{path.name}")
        sources.append(
            SlideSource(f"s3://{bucket}/slides/{path.name}", path.stem, patient_id=f"P{i // 2}")
        )
    return sources


def _store(sources: list[SlideSource], name: str, s3_options: dict) -> FeatureStore:
    bucket = sources[0].uri.split("/")[2]
    return FeatureStore.open(f"s3://{bucket}/{name}", s3_options, create=True)


def _tiles(store: FeatureStore):
    return (
        store.latest()
        .tiles(columns=["slide_id", "x", "y", "embedding"])
        .sort_by([("slide_id", "ascending"), ("x", "ascending"), ("y", "ascending")])
    )


@pytest.fixture(scope="module", autouse=True)
def _no_other_ray_running() -> None:
    """This module starts its own Ray instances (one process holds one Ray at a time): the
    session ``ray_local`` an earlier module left up is shut down first, and conftest
    brings it back after this module. Without this, ``pytest -m slow`` over the whole
    suite failed here with "ray.init twice"."""
    import ray

    from infra.ray_runtime import shutdown

    if ray.is_initialized():
        shutdown(True)


@pytest.fixture(scope="module")
def reference(s3_cohort, s3_options):
    """The same cohort ingested by one embedded single-node Ray (2 CPUs)."""
    import ray

    store = _store(s3_cohort, "reference", s3_options)
    with auth_env("token"):
        with_startup_retries(
            lambda: ray.init(
                num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False
            )
        )
        try:
            result = run_ingest(
                s3_cohort, store, options=OPTIONS, storage_options=s3_options, dashboard=False
            )
        finally:
            ray.shutdown()
    assert all(o.status == "done" for o in result.outcomes)
    return _tiles(store)


@pytest.fixture(scope="module")
def cluster(reference, tmp_path_factory, moto_server):
    # After the reference run (one Ray per process at a time) and after moto's fake
    # credentials are in the environment, which the node processes inherit.
    with auth_env("token"), multinode_cluster(tmp_path_factory.mktemp("nodes"), n_workers=3) as c:
        yield c


def _statuses(result) -> list[str]:
    return [f"{o.slide_id}:{o.status}:{o.error_type or ''}" for o in result.outcomes]


@pytest.mark.parametrize("engine", ["fused", "dataset"])
def test_ingest_spreads_over_nodes_and_equals_a_single_node_run(
    cluster, reference, s3_cohort, s3_options, engine
) -> None:
    import ray._private.state as ray_state

    store = _store(s3_cohort, f"multinode-{engine}", s3_options)
    staged_before = {n: set(cluster.staging_processes(n)) for n in cluster.workers}
    actors_before = set(ray_state.actors())

    result = run_ingest(
        s3_cohort, store, options=ENGINES[engine], storage_options=s3_options, dashboard=False
    )

    assert all(o.status == "done" for o in result.outcomes), _statuses(result)
    assert len(result.outcomes) == N_SLIDES
    # The run's actors (GCS actor table; the state API needs a dashboard) sit on >= 2 nodes.
    new = [a for i, a in ray_state.actors().items() if i not in actors_before]
    work_nodes = {a["Address"]["NodeID"] for a in new} & set(cluster.workers)
    assert len(work_nodes) >= 2, f"the run's actors sat on {len(work_nodes)} worker node(s)"
    if engine == "fused":
        # Each node staged the slides it read into its own scratch folder.
        staging = [
            n
            for n in cluster.workers
            if set(cluster.staging_processes(n)) - staged_before.get(n, set())
        ]
        assert len(staging) >= 2, f"slides were staged on {len(staging)} node(s) only"
    ours = _tiles(store)
    assert ours.num_rows == reference.num_rows > 0
    assert ours.equals(reference), "same tiles and the same embeddings as one node"

    # The custom metrics leave through each node's own Prometheus endpoint (workers: tiles,
    # bytes, stage latencies; the head, where the driver runs: finished slides), where the
    # PodMonitor in infra/deploy scrapes them, under the names the Grafana board's test
    # derives from the code (tests/_deploy_tools/metric_names.py).
    def scraped() -> set[str]:
        return {
            line.split("{")[0].split(" ")[0]
            for n in [*cluster.workers, "head"]
            for line in cluster.scrape(n).splitlines()
            if line.startswith("ray_slidebank_")
        }

    derived = {s for name, (kind, _) in code_metrics().items() for s in exported_names(name, kind)}
    expected = {
        "ray_slidebank_slides_total",
        "ray_slidebank_tiles_total",
        "ray_slidebank_bytes_read_total",
        "ray_slidebank_stage_seconds_bucket",
    }
    assert wait_for(lambda: expected <= scraped(), timeout=30), scraped()
    assert scraped() <= derived, scraped() - derived


def test_mil_training_runs_across_two_nodes_with_checkpoints_on_s3(
    cluster, s3_cohort, s3_options
) -> None:
    import ray._private.state as ray_state
    import s3fs

    from synthetic.mil import write_planted_cohort
    from training.mil.job import JobConfig, run_training
    from training.mil.models import MILConfig
    from training.mil.train import TrainConfig

    bucket = s3_cohort[0].uri.split("/")[2]
    store_uri = f"s3://{bucket}/mil-store"
    cohort = write_planted_cohort(
        store_uri, n_slides=12, n_tiles=16, dim=8, n_folds=3, storage_options=s3_options
    )
    table = cohort.table
    train, val, test = (table[table["fold"] == k] for k in (0, 1, 2))
    job = JobConfig(
        store_uri=store_uri,
        encoder=cohort.encoder,
        storage_options=s3_options,
        name="two-nodes",
        num_workers=2,
        train=TrainConfig(
            model=MILConfig(hidden=8, attn_dim=4), epochs=2, patience=2, lr=2e-3, torch_threads=1
        ),
    )

    result = run_training(job, train, val, {"test": test})

    # GCS's actor table (the state API needs the dashboard, which this cluster does not run).
    workers = [a for a in ray_state.actors().values() if "TrainWorker" in a["ActorClassName"]]
    assert len({a["Address"]["NodeID"] for a in workers}) == 2, (
        "one Train worker on each of two nodes"
    )
    assert result.checkpoint_path.startswith(f"{store_uri}/mil_runs/two-nodes/")
    assert s3fs.S3FileSystem(**s3_options).exists(f"{result.checkpoint_path}/model.pt")
    assert len(result.predictions["test"]) == len(test)


# The fused engine failed this until its pool stopped waiting for the dead actor's
# replacement (pending while the surviving nodes were full) and requeued the slides to the
# survivors; see ingest/pipeline/engines/actor_pool.py.
@pytest.mark.parametrize("engine", ["dataset", "fused"])
def test_losing_a_worker_node_mid_run_loses_and_duplicates_no_tile(
    cluster, reference, s3_cohort, s3_options, engine
) -> None:
    store = _store(s3_cohort, f"node-loss-{engine}", s3_options)
    killed: list[str] = []
    while len(cluster.workers) < 3:  # a fresh node replaces the one an earlier case killed
        with_startup_retries(lambda: cluster.add_worker(f"spare-{engine}"))

    def kill_the_first_node_that_reads() -> None:
        # A staged slide in a node's scratch means a reader there is mid-slide.
        def reading() -> list[str]:
            return [n for n in list(cluster.workers) if cluster.staged_files(n)]

        if wait_for(lambda: bool(reading()), timeout=300, step=0.05):
            victim = reading()[0]
            cluster.kill_worker(victim)
            killed.append(victim)

    killer = threading.Thread(target=kill_the_first_node_that_reads, daemon=True)
    killer.start()
    result = run_ingest(
        s3_cohort, store, options=ENGINES[engine], storage_options=s3_options, dashboard=False
    )
    killer.join(timeout=60)

    assert killed, "no node was killed: the fault was not injected"
    assert all(o.status == "done" for o in result.outcomes), _statuses(result)
    assert len(result.outcomes) == N_SLIDES
    ours = _tiles(store)
    keys = list(zip(*(ours.column(c).to_pylist() for c in ("slide_id", "x", "y")), strict=True))
    assert len(keys) == len(set(keys)), "no duplicated tile"
    assert ours.num_rows == reference.num_rows, "no lost tile"
    assert ours.equals(reference)
    done = store.latest().slides(status="done", columns=["slide_id"]).column("slide_id").to_pylist()
    assert sorted(done) == sorted(s.slide_id for s in s3_cohort)
