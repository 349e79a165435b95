"""A corrupt slide must not fail the ingest RayJob (KubeRay marks the job Failed on a
non-zero exit, and ``backoffLimit`` then reruns it on new clusters): the job's own flags,
taken from its replayed submission, make slidebank exit 0, write the summary with the
failed slide, and a rerun redoes only what is not done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slidebank.cli import app
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide
from tests._deploy_tools.fixtures import renders  # noqa: F401
from tests._deploy_tools.kuberay_submitter import replay

pytestmark = pytest.mark.timeout(600)


def test_a_corrupt_slide_leaves_the_job_successful_and_listed(
    ray_local,
    renders,  # noqa: F811
    tmp_path: Path,
) -> None:
    (job,) = [d for d in renders["jobs/ingest"] if d["kind"] == "RayJob"]
    job_argv = replay(job, renders[""] + renders["jobs/ingest"], tmp_path / "replay")
    assert "--partial-ok" in job_argv and "--summary" in job_argv
    assert job["spec"]["backoffLimit"] >= 1  # why a non-zero exit would cost new clusters

    write_synthetic_slide(
        tmp_path / "good.svs",
        SyntheticSlideSpec(width=1024, height=768, seed=1, downsamples=(1, 2)),
    )
    (tmp_path / "broken.svs").write_bytes(b"\0" * 4096)
    summary = tmp_path / "runs" / "summary.json"
    args = [
        "ingest",
        str(tmp_path / "*.svs"),
        "--store",
        str(tmp_path / "store"),
        "--no-dashboard",
        "--json",
        "--tiles-per-batch",
        "16",
        "--partial-ok",
        "--summary",
        str(summary),
    ]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    written = json.loads(summary.read_text())
    assert {o["slide_id"]: o["status"] for o in written["outcomes"]} == {
        "good": "done",
        "broken": "failed",
    }
    assert next(o for o in written["outcomes"] if o["slide_id"] == "broken")["error_type"]
    # A rerun (a retried job, or resubmitting failures) redoes only the failed slide.
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(summary.read_text())["skipped"] == ["good"]
    # (Without --partial-ok the exit code is 3: tests/test_cli_ingest.py.)
