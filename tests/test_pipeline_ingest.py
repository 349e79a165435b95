"""The main job end to end: real Ray, real Lance, real S3 protocol, injected faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from features.store import FeatureStore
from ingest.pipeline._faults import FaultPlan, injected
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.runner import run_ingest
from ingest.pipeline.sources import SlideSource
from ingest.slides import open_slide
from ingest.tiling.plan import plan_slide
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> list[SlideSource]:
    folder = tmp_path_factory.mktemp("cohort")
    sources = []
    for i in range(6):
        path = folder / f"syn-{i}.svs"
        write_synthetic_slide(
            path,
            SyntheticSlideSpec(
                width=1792,
                height=1536,
                seed=40 + i,
                downsamples=(1, 4),
                pen_marks=i % 3 == 0,
                n_blobs=2,
            ),
        )
        sources.append(SlideSource(str(path), path.stem, patient_id=f"P{i // 2}"))
    return sources


def _planned(source: SlideSource, storage_options=None) -> set[tuple[int, int]]:
    with open_slide(source.uri, storage_options=storage_options, mpp=source.mpp) as slide:
        _, plan = plan_slide(slide)
    return set(
        zip(plan.table.column("x").to_pylist(), plan.table.column("y").to_pylist(), strict=True)
    )


def _stored(store: FeatureStore) -> dict[str, list[tuple[int, int]]]:
    table = store.latest().tiles(columns=["slide_id", "x", "y"])
    out: dict[str, list[tuple[int, int]]] = {}
    for sid, x, y in zip(
        *(table.column(c).to_pylist() for c in ("slide_id", "x", "y")), strict=True
    ):
        out.setdefault(sid, []).append((x, y))
    return out


FAST = RunOptions(progress=False, commit_every=3, tiles_per_batch=16)


# Slow (50-75 s): S3 reads and an S3 store are covered in the default suite by the
# slide conformance over S3, tests/test_s3_faults.py and the store's [s3] cases.
@pytest.mark.slow
@pytest.mark.s3
def test_cohort_from_s3_into_a_store_on_s3(
    ray_local, cohort, cmu_slide, s3_bucket, s3_options, tmp_path
) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    remote = []
    for source in [*cohort, SlideSource(str(cmu_slide), "cmu_small_region")]:
        key = f"{s3_bucket}/slides/{Path(source.uri).name}"
        fs.put(source.uri, key)
        remote.append(SlideSource(key, source.slide_id, source.patient_id))
    corrupt = f"{s3_bucket}/slides/corrupt.svs"
    fs.pipe(corrupt, Path(cohort[0].uri).read_bytes()[:50_000])
    remote.append(SlideSource(corrupt, "corrupt"))
    store = FeatureStore.open(f"{s3_bucket}/store", s3_options, create=True)

    result = run_ingest(remote, store, options=FAST, storage_options=s3_options)

    by_id = {o.slide_id: o for o in result.outcomes}
    assert (
        by_id["corrupt"].status == "failed" and by_id["corrupt"].error_type == "SlideCorruptError"
    )
    stored = _stored(store)
    for source in remote[:-1]:
        planned = _planned(source, s3_options)
        assert by_id[source.slide_id].status == "done"
        assert sorted(stored.get(source.slide_id, [])) == sorted(planned), source.slide_id
        assert len(planned) > 0
    slides = store.latest().slides(
        columns=["slide_id", "status", "tile_count", "mpp", "mpp_source"]
    )
    rows = {r["slide_id"]: r for r in slides.to_pylist()}
    assert rows["cmu_small_region"]["mpp"] == pytest.approx(0.499)
    assert rows["cmu_small_region"]["mpp_source"] == "aperio"
    assert rows["corrupt"]["status"] == "failed"
    embeddings = np.stack(
        store.latest()
        .tiles(columns=["embedding"])
        .column("embedding")
        .to_numpy(zero_copy_only=False)
    )
    assert embeddings.shape[1] == 64 and np.isfinite(embeddings).all()


def test_worker_killed_mid_ingest_leaves_exactly_the_planned_tiles(
    ray_local, cohort, tmp_path
) -> None:
    """One worker dies once (retried, exact tiles); one slide kills its worker every
    time (a poison slide: failed after MAX_CRASHES, not retried forever)."""
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    poison = cohort[-1].slide_id
    faults = FaultPlan(
        exit_once_slide=cohort[2].slide_id,
        exit_once_marker=str(tmp_path / "killed"),
        exit_always_slide=poison,
    )
    # Two slides per read task: a retried task re-reads the slide that finished before the
    # crash, which must not count as a crash of that slide. A low compaction threshold: the
    # exact-tiles checks below then also hold after the run's fragments were merged.
    with injected(faults):
        result = run_ingest(
            cohort, store, options=FAST.replace(compact_fragments=2, slides_per_task=2)
        )
    assert result.compacted > 0 and store.fragment_count(result.encoder) < 3
    assert (tmp_path / "killed").exists(), "the fault was injected"
    outcomes = {o.slide_id: o for o in result.outcomes}
    assert outcomes[poison].status == "failed"
    assert outcomes[poison].error_type == "SlideCrashError"
    assert "killed the worker process 2 times" in outcomes[poison].error_message
    assert all(o.status == "done" for sid, o in outcomes.items() if sid != poison)
    stored = _stored(store)
    assert poison not in stored
    for source in cohort[:-1]:
        tiles = stored[source.slide_id]
        assert len(tiles) == len(set(tiles)), "no duplicates"
        assert set(tiles) == _planned(source)


class _DriverStopped(Exception):
    """Raised in place of the driver dying: the in-process twin of ``os._exit``."""


@dataclass(frozen=True)
class _StopAfterCommits(FaultPlan):
    def after_commit(self, commits: int) -> None:
        if self.driver_exit_after_commits == commits:
            raise _DriverStopped(commits)


def _assert_same_store(store: FeatureStore, reference: FeatureStore) -> None:
    assert _stored(store).keys() == _stored(reference).keys()
    for sid, tiles in _stored(reference).items():
        assert sorted(_stored(store)[sid]) == sorted(tiles)
    order = [("slide_id", "ascending"), ("x", "ascending"), ("y", "ascending")]
    columns = ["slide_id", "x", "y", "embedding"]
    ours = store.latest().tiles(columns=columns).sort_by(order)
    theirs = reference.latest().tiles(columns=columns).sort_by(order)
    assert ours.equals(theirs), "same tiles and the same embeddings"


# Slow (three runs, about 20 s): the default suite keeps a rerun that skips done slides
# (test_cli_ingest) and a worker killed mid-run leaving exactly the planned tiles (above).
@pytest.mark.slow
def test_rerun_after_an_interrupted_run_equals_an_uninterrupted_run(
    ray_local, cohort, tmp_path
) -> None:
    """The fast twin of the driver-death test below: the run stops (raises) right after its
    first commit, in this process; the rerun skips exactly the committed slides."""
    cohort = cohort[:4]  # two per commit: the run stops half done
    reference = FeatureStore.open(str(tmp_path / "reference"), create=True)
    run_ingest(cohort, reference, options=FAST.replace(commit_every=2))
    store = FeatureStore.open(str(tmp_path / "stopped"), create=True)
    with injected(_StopAfterCommits(driver_exit_after_commits=1)), pytest.raises(_DriverStopped):
        run_ingest(cohort, store, options=FAST.replace(commit_every=2))
    partial = store.slides(status="done", columns=["slide_id"]).column("slide_id").to_pylist()
    assert 0 < len(partial) < len(cohort)

    result = run_ingest(cohort, store.latest(), options=FAST)

    assert sorted(result.skipped) == sorted(partial)
    _assert_same_store(store, reference)


@pytest.mark.slow
def test_rerun_after_the_driver_dies_equals_an_uninterrupted_run(cohort, tmp_path) -> None:
    """The driver process really dies (``os._exit`` after its first commit, no cleanup).
    It is a subprocess with its own embedded Ray: a driver in another process joining the
    session's loopback-only Ray did not connect here. The reference and the rerun run in
    this process (on the session's Ray when one is up, else on their own)."""
    cohort = cohort[:4]
    reference = FeatureStore.open(str(tmp_path / "reference"), create=True)
    run_ingest(cohort, reference, options=FAST.replace(commit_every=2), dashboard=False)
    crashed = tmp_path / "crashed"
    script = (
        "import json, sys\n"
        "from features.store import FeatureStore\n"
        "from ingest.pipeline._faults import FaultPlan, injected\n"
        "from ingest.pipeline.config import RunOptions\n"
        "from ingest.pipeline.runner import run_ingest\n"
        "from ingest.pipeline.sources import SlideSource\n"
        "sources = [SlideSource(**s) for s in json.loads(sys.argv[1])]\n"
        "opts = RunOptions(progress=False, commit_every=2, tiles_per_batch=16, encoder_actors=1,"
        " read_concurrency=1)\n"
        "with injected(FaultPlan(driver_exit_after_commits=1)):\n"
        f"    run_ingest(sources, FeatureStore.open({str(crashed)!r}, create=True), options=opts, dashboard=False)\n"
    )
    payload = json.dumps([s.__dict__ for s in cohort])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, payload],
            env=env,
            cwd=ROOT,
            capture_output=True,
            timeout=400,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the driver neither finished nor died: {(exc.stderr or b'').decode()[-2000:]}")
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]
    store = FeatureStore.open(str(crashed))
    partial = store.slides(status="done", columns=["slide_id"]).column("slide_id").to_pylist()
    assert 0 < len(partial) < len(cohort)

    result = run_ingest(cohort, store.latest(), options=FAST, dashboard=False)

    assert sorted(result.skipped) == sorted(partial)
    _assert_same_store(store, reference)


def test_all_background_slide_is_done_with_zero_tiles(ray_local, tmp_path) -> None:
    path = tmp_path / "glass.tif"
    import tifffile

    tifffile.imwrite(
        path,
        np.full((1024, 1024, 3), 242, np.uint8),
        tile=(256, 256),
        photometric="rgb",
        resolution=(20000.0, 20000.0),
        resolutionunit="CENTIMETER",
    )
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    result = run_ingest(
        [SlideSource(str(path), "glass")], store, options=FAST, config=IngestConfig(stain="none")
    )
    (outcome,) = result.outcomes
    assert (outcome.status, outcome.tiles) == ("done", 0)
