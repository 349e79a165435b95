"""Ctrl-C during ``slidebank ingest``: one line saying what was committed and how to
resume, exit code 130, and the rerun resumes there (issue 30 item 2).

A real SIGINT is sent to this process right after the driver's first commit (the
fault-injection hook the resume tests use); the run holds it back to the next safe point
and stops there."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ingest.pipeline._faults import FaultPlan, injected
from slidebank.cli import app
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide


@dataclass(frozen=True)
class _CtrlCAfterCommits(FaultPlan):
    def after_commit(self, commits: int) -> None:
        if self.driver_exit_after_commits == commits:
            os.kill(os.getpid(), signal.SIGINT)


# Slow: two ingest runs on the session's Ray (about 30 s on 2 cores).
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_says_what_was_committed_and_the_rerun_resumes(ray_local, tmp_path: Path) -> None:
    for i in range(4):
        write_synthetic_slide(
            tmp_path / f"s{i}.svs",
            SyntheticSlideSpec(width=1024, height=1024, seed=i, downsamples=(1, 2)),
        )
    args = [
        "ingest",
        str(tmp_path / "*.svs"),
        "--store",
        str(tmp_path / "store"),
        "--no-dashboard",
        "--commit-every",
        "2",
        "--tiles-per-batch",
        "16",
        "--read-concurrency",
        "1",
        "--encoder-actors",
        "1",
    ]
    with injected(_CtrlCAfterCommits(driver_exit_after_commits=1)):
        stopped = CliRunner().invoke(app, args)
    assert stopped.exit_code == 130, stopped.output
    assert (
        "interrupted: 2 slides committed (2 of 4 done in the store), rerun the same command "
        "to resume" in stopped.output
    )
    assert "Traceback" not in stopped.output
    again = CliRunner().invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.output
    payload = json.loads(again.stdout)
    assert len(payload["skipped"]) == 2 and len(payload["outcomes"]) == 2
