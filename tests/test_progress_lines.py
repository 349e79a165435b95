"""Ingest progress where stdout is not a terminal (nohup, SLURM, ``> log``): plain lines
every so often, never nothing until the final table (issue 30 item 2)."""

from __future__ import annotations

import io
import signal
from types import SimpleNamespace

import pytest

from ingest.pipeline.progress import Progress, deferred_interrupt


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream: io.StringIO, clock: _Clock) -> None:
    with Progress(10, stream=stream, clock=clock, every_s=30.0) as progress:
        progress.phase("starting Ray")
        clock.now += 20
        progress.phase("ingest")
        for _ in range(4):
            clock.now += 10
            progress.batch(100)
            progress.slide(SimpleNamespace(status="done"))
        clock.now += 19
        progress.tick()  # 29 s after the last status line: nothing yet
        clock.now += 1
        progress.tick()


def test_a_log_file_gets_phases_then_a_status_line_every_interval() -> None:
    log, clock = io.StringIO(), _Clock()
    _run(log, clock)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("ingest: starting Ray")
    assert lines[1].startswith("ingest: reading and encoding slides (20s elapsed)")
    status = [line for line in lines if "slides," in line]
    # 30 s after the phase line (the third batch, two slides done), 30 s later, and at exit
    assert status[0] == "ingest: 2/10 slides, 300 tiles, 10 tiles/s, ETA 2m00s, 50s elapsed"
    assert status[1] == "ingest: 4/10 slides, 400 tiles, 7 tiles/s, ETA 1m30s, 1m20s elapsed"
    assert len(status) == 3 and status[2] == status[1]


def test_a_terminal_gets_no_lines_and_a_disabled_progress_prints_nothing() -> None:
    terminal, clock = _Terminal(), _Clock()
    _run(terminal, clock)
    assert terminal.getvalue() == ""
    quiet = io.StringIO()
    with Progress(3, enabled=False, stream=quiet, clock=_Clock()) as progress:
        progress.phase("ingest")
        progress.slide(SimpleNamespace(status="done"))
    assert quiet.getvalue() == ""


def _ctrl_c() -> None:
    # The installed handler, called as the interpreter calls it on SIGINT. A real signal to
    # the pytest process crashed it (SIGSEGV) once earlier tests had left Ray's native
    # threads in it; the slow CLI test sends a real SIGINT to a `slidebank ingest` process.
    handler = signal.getsignal(signal.SIGINT)
    assert callable(handler)
    handler(signal.SIGINT, None)


def test_ctrl_c_waits_for_the_next_update_and_a_second_one_stops_at_once(capsys) -> None:
    """Held back, Ctrl-C never lands inside a commit (where Lance turned it into an
    ArrowInvalid traceback in a real run); the next progress update raises it."""
    before = signal.getsignal(signal.SIGINT)
    progress = Progress(3, enabled=False)
    with deferred_interrupt(progress):
        _ctrl_c()
        assert progress.stop_requested
        with pytest.raises(KeyboardInterrupt):
            progress.batch(10)
        with pytest.raises(KeyboardInterrupt):
            _ctrl_c()
    assert signal.getsignal(signal.SIGINT) is before
    assert "stopping after the current commit" in capsys.readouterr().err
