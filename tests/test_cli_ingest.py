"""``slidebank ingest`` and ``slidebank demo`` as a user runs them.

The commands join the session's Ray (``ray_local``) through the same ``connect`` that
starts an embedded one for a user, and leave it up; starting Ray anew for every command
would cost 15-40 s each on a small machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slidebank.cli import app
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

pytestmark = pytest.mark.timeout(600)
runner = CliRunner()


# Slow (about 20 s on Ray): a batch going on past bad slides is checked in the default
# suite by tests/test_hostile_slides.py (a bomb beside a good slide) and the engine tests.
@pytest.mark.slow
def test_ingest_glob_reports_failures_with_exit_code_3(ray_local, tmp_path: Path) -> None:
    for i in range(2):
        write_synthetic_slide(
            tmp_path / f"s{i}.svs",
            SyntheticSlideSpec(width=1536, height=1024, seed=i, downsamples=(1, 2)),
        )
    (tmp_path / "broken.svs").write_bytes(b"\0" * 4096)
    store = tmp_path / "store"
    args = [
        "ingest",
        str(tmp_path / "*.svs"),
        "--store",
        str(store),
        "--no-dashboard",
        "--json",
        "--tiles-per-batch",
        "16",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output
    payload = json.loads(result.stdout)
    status = {o["slide_id"]: o["status"] for o in payload["outcomes"]}
    assert status == {"s0": "done", "s1": "done", "broken": "failed"}
    again = runner.invoke(app, args)
    assert json.loads(again.stdout)["skipped"] == ["s0", "s1"]


def test_demo_writes_everything_it_promises(ray_local, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--slides", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "store").exists() and list(out.glob("*.overlay.png"))
    assert "tiles most like" in result.stdout and "overlay:" in result.stdout
