"""The command line as a program hands its objects to no final garbage collection (issue 28:
one slide in seconds; the interpreter's last collections over every imported module's
objects were 0.5-1 s of it), while an in-process caller's collector is left alone."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from slidebank.cli import app

ROOT = Path(__file__).resolve().parents[1]

_PROGRAM = """
import atexit, gc
atexit.register(lambda: print("FROZEN", gc.get_freeze_count() > 0, flush=True))
from slidebank.cli import app
app()
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _PROGRAM, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_finished_command_freezes_its_objects_before_the_interpreter_exits() -> None:
    proc = _run("encoders")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "handcrafted-he-v1" in proc.stdout  # the command ran and printed first
    assert proc.stdout.split("FROZEN")[-1].split() == ["True"]


def test_a_failed_command_keeps_its_exit_code() -> None:
    proc = _run("info", str(ROOT / "no-such-slide.svs"))
    assert proc.returncode not in (0, None)
    assert proc.stdout.split("FROZEN")[-1].split() == ["True"]


def test_an_in_process_caller_keeps_its_collector() -> None:
    before = gc.get_freeze_count()
    result = CliRunner().invoke(app, ["encoders"])
    assert result.exit_code == 0, result.output
    assert gc.get_freeze_count() == before
