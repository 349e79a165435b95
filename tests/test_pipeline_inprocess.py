"""Issue 28 #2: small jobs without waiting for Ray. The in-process engine runs the fused
stage in the driver and commits through the same collector (its equality with the other
engines: tests/test_pipeline_fused.py); ``auto`` picks it only for small local jobs with
no cluster to use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features.store import FeatureStore
from infra.arrays import cuda_driver_absent
from ingest.pipeline import _faults
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.engines.inprocess import MAX_SLIDES, use_inprocess
from ingest.pipeline.runner import run_ingest
from ingest.pipeline.sources import SlideSource
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

ROOT = Path(__file__).resolve().parents[1]
CONFIG = IngestConfig(stain="none")
AUTO = RunOptions(progress=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SlideSource:
    path = tmp_path_factory.mktemp("inprocess") / "small.svs"
    write_synthetic_slide(
        path, SyntheticSlideSpec(width=1536, height=1280, seed=5, downsamples=(1, 4), n_blobs=2)
    )
    return SlideSource(str(path), path.stem)


def test_auto_goes_to_ray_for_a_cluster_big_or_remote_jobs_and_worker_faults(
    small, tmp_path
) -> None:
    assert not use_inprocess(AUTO.replace(address="127.0.0.1:6379"), [small])
    assert not use_inprocess(AUTO, [small] * (MAX_SLIDES + 1))
    assert not use_inprocess(AUTO, [SlideSource("s3://bucket/a.svs", "a")])
    assert not use_inprocess(AUTO.replace(max_gpus=2), [small])
    with _faults.injected(_faults.FaultPlan(exit_always_slide="x")):
        assert not use_inprocess(AUTO, [small])
    assert use_inprocess(AUTO.replace(engine="inprocess"), [small] * 9)
    assert not use_inprocess(AUTO.replace(engine="fused"), [small])


def test_auto_keeps_a_few_large_slides_in_process(small, tmp_path, monkeypatch) -> None:
    # The encoder gets every core's threads in either engine; with a few slides Ray's
    # start-up costs more than the actors' parallel planning gives back, whatever their size.
    # No cluster named or running, as for a user's first command (in this test process
    # another test may have started Ray, which auto would rightly join).
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("SLIDEBANK_CLUSTER_STATE", str(tmp_path / "no-cluster.json"))
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert use_inprocess(AUTO, [small] * MAX_SLIDES)
    big = [SlideSource(f"/slides/big-{i}.svs", f"big-{i}") for i in range(2)]
    assert use_inprocess(AUTO, big)


def test_inprocess_run_records_its_engine_and_runtime_outside_the_hash(small, tmp_path) -> None:
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    missing = SlideSource(str(tmp_path / "nope.svs"), "nope")
    result = run_ingest([small, missing], store, CONFIG, AUTO.replace(engine="inprocess"))
    outcomes = {o.slide_id: o for o in result.outcomes}
    assert outcomes["small"].status == "done" and outcomes["small"].tiles > 0
    assert (
        outcomes["nope"].status == "failed" and outcomes["nope"].error_type == "SlideNotFoundError"
    )
    assert result.engine == "inprocess" and result.runtimes == ["numpy"]
    assert result.first_tile_s is not None and 0 < result.first_tile_s <= result.seconds
    run = next(r for r in store.runs().to_pylist() if r["run_id"] == result.run_id)
    assert run["status"] == "done" and run["config_hash"] == result.config_hash
    assert json.loads(run["config_json"])["execution"] == {
        "engine": "inprocess",
        "head_start": [],
        "device": "auto",
        "cpu_dtype": "float32",
        "runtime": "auto",
        "runtimes_used": ["numpy"],
    }
    # execution choices stay out of the config hash: a rerun with another runtime skips
    again = run_ingest([small], store, CONFIG, AUTO.replace(engine="inprocess", runtime="torch"))
    assert again.skipped == ["small"] and again.config_hash == result.config_hash


def test_cli_runs_one_small_slide_without_ray_and_says_so(small, tmp_path) -> None:
    """The whole command in a fresh process (no Ray in it): auto picks in-process, and
    neither Ray nor (without a CUDA driver) CuPy is even imported: each is seconds of a
    small job's start-up on 2 cores (issue 28, one slide in 3 s)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["SLIDEBANK_CLUSTER_STATE"] = str(tmp_path / "no-cluster.json")  # no `cluster up` either
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom slidebank.cli import app\ntry:\n    app()\nfinally:\n"
            "    print('IMPORTED', 'ray' in sys.modules, sys.modules.get('cupy') is not None)",
            "ingest",
            small.uri,
            "--store",
            str(tmp_path / "s"),
            "--stain",
            "none",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "engine in-process (a small job: no Ray)" in " ".join(proc.stdout.split())
    ray_imported, cupy_imported = proc.stdout.split("IMPORTED")[-1].split()
    assert ray_imported == "False"
    if cuda_driver_absent():
        assert cupy_imported == "False"
    assert FeatureStore.open(str(tmp_path / "s")).latest().tiles(columns=["x"]).num_rows > 0


@pytest.mark.slow
def test_a_larger_run_starts_on_its_first_slide_while_ray_boots(small, tmp_path) -> None:
    """More slides than the in-process rule takes: the command ingests the first one
    itself while its embedded Ray starts, then the rest on fused actors; every slide
    stores the same tiles (the slides are copies of one file) and the run says so."""
    names = [f"copy-{i}" for i in range(MAX_SLIDES + 1)]
    for name in names:
        os.link(small.uri, tmp_path / f"{name}.svs")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["SLIDEBANK_CLUSTER_STATE"] = str(tmp_path / "no-cluster.json")
    env.setdefault("RAY_AUTH_MODE", "disabled")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from slidebank.cli import app; app()",
            "ingest",
            str(tmp_path),
            "--store",
            str(tmp_path / "s"),
            "--stain",
            "none",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = " ".join(proc.stdout.split())
    assert "engine fused (the first slide in-process while Ray started: copy-0)" in out
    store = FeatureStore.open(str(tmp_path / "s"))
    tiles = store.latest().tiles(columns=["slide_id", "x", "y", "embedding"]).to_pandas()
    assert sorted(tiles["slide_id"].unique()) == names
    by_slide = {sid: g.sort_values(["x", "y"]) for sid, g in tiles.groupby("slide_id", sort=True)}
    first = by_slide["copy-0"]
    for sid in names[1:]:
        other = by_slide[sid]
        assert other[["x", "y"]].to_numpy().tolist() == first[["x", "y"]].to_numpy().tolist()
        diff = np.abs(np.stack(other["embedding"]) - np.stack(first["embedding"])).max()
        assert diff <= 1e-5, sid
    (run,) = [r for r in store.runs().to_pylist() if r["status"] == "done"]
    assert json.loads(run["config_json"])["execution"]["head_start"] == ["copy-0"]
