"""What a person watching a long ingestion sees: slides and tiles done, rate, ETA."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = ["Progress", "deferred_interrupt", "quiet_ray", "summary_table"]

log = logging.getLogger(__name__)

#: characters of a failed slide's error shown in the summary table (the store keeps 2000)
_MAX_ERROR = 600


class Progress:
    """A rich progress bar over slides with a live tile count on a terminal; where stdout
    is not one (nohup, SLURM, ``> log``), a plain line every ``every_s`` seconds instead,
    so a batch log shows the run moving. Silent when disabled."""

    def __init__(
        self,
        total_slides: int,
        *,
        enabled: bool = True,
        every_s: float = 30.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.enabled = total_slides, enabled and sys.stderr.isatty()
        self.tiles = self.done = self.failed = 0
        self._clock = clock
        self.started = clock()
        #: when the first encoded tiles reached the driver (start-up over; steady state on)
        self.first_tile_at: float | None = None
        self._progress: Any = None
        self._task: Any = None
        stream = stream if stream is not None else sys.stdout
        self._lines = stream if enabled and not _isatty(stream) else None
        self._every, self._last_line, self._ingest_at = every_s, self.started, self.started
        #: a Ctrl-C :func:`deferred_interrupt` holds back until the next safe point
        self.stop_requested = False

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                SpinnerColumn(),
                TextColumn("[bold]{task.fields[phase]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "slides · {task.fields[tiles]:,} tiles · {task.fields[rate]:.0f} tiles/s"
                    " · {task.fields[failed]} failed"
                ),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                refresh_per_second=4,
            )
            self._progress.start()  # from the first second: start-up is shown, not silent
            self._task = self._progress.add_task(
                "ingest", total=self.total, tiles=0, rate=0.0, failed=0, phase="starting"
            )
        return self

    def phase(self, text: str) -> None:
        """Name what the run is doing now (start-up steps, then ``ingest``)."""
        if self._progress is not None:
            self._progress.update(self._task, phase=text)
        if text == "ingest":
            self._ingest_at = self._clock()
        shown = "reading and encoding slides" if text == "ingest" else text
        self._line(f"ingest: {shown} ({_duration(self._clock() - self.started)} elapsed)")
        log.debug("ingest phase: %s", text)

    def tick(self) -> None:
        """Refresh the rate while no batch arrives (the display thread redraws it)."""
        self._update(advance=0)

    def _stop_if_asked(self) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt

    def batch(self, tiles: int) -> None:
        if tiles and self.first_tile_at is None:
            self.first_tile_at = time.perf_counter()
        self.tiles += tiles
        self._update(advance=0)

    def slide(self, outcome: Any) -> None:
        self.done += 1
        self.failed += outcome.status == "failed"
        self._update(advance=1)

    def _update(self, advance: int) -> None:
        # Every caller is the driver's loop between rows, never inside a commit: the
        # place where a held-back Ctrl-C can stop the run cleanly.
        self._stop_if_asked()
        now = self._clock()
        if self._lines is not None and now - self._last_line >= self._every:
            self._line(self.status_line(now))
        if self._progress is None:
            return
        rate = self.tiles / max(now - self.started, 1e-6)
        self._progress.update(
            self._task, advance=advance, tiles=self.tiles, rate=rate, failed=self.failed
        )

    def status_line(self, now: float | None = None) -> str:
        """``ingest: 12/100 slides (1 failed), 3,456 tiles, 85 tiles/s, ETA 4m10s``."""
        now = self._clock() if now is None else now
        busy = max(now - self._ingest_at, 1e-6)
        eta = "ETA unknown"
        if self.done:  # slides still to do at the pace of those done so far
            eta = f"ETA {_duration(busy / self.done * max(self.total - self.done, 0))}"
        failed = f" ({self.failed} failed)" if self.failed else ""
        return (
            f"ingest: {self.done}/{self.total} slides{failed}, {self.tiles:,} tiles, "
            f"{self.tiles / busy:.0f} tiles/s, {eta}, {_duration(now - self.started)} elapsed"
        )

    def _line(self, text: str) -> None:
        if self._lines is None:
            return
        self._last_line = self._clock()
        _write(self._lines, text)

    def notice(self, text: str) -> None:
        """A one-off line for the person at the terminal (stderr, whatever the mode)."""
        _write(sys.stderr, text)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self.done:
            self._line(self.status_line())


def _write(stream: Any, text: str) -> None:
    stream.write(f"{text}\n")
    stream.flush()  # a batch log is read as it grows


@contextlib.contextmanager
def deferred_interrupt(progress: Progress) -> Iterator[None]:
    """Hold a Ctrl-C back until ``progress`` is next updated (between the driver's commits,
    not inside one, where Lance and Arrow would turn it into an I/O error with a
    traceback); a second Ctrl-C stops at once. Only the main thread receives signals, so
    elsewhere, or where SIGINT is ignored (a background job), nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        yield
        return
    restore = previous if previous is not None else signal.default_int_handler

    def hold(signum: int, frame: Any) -> None:
        if progress.stop_requested:
            signal.signal(signal.SIGINT, restore)
            raise KeyboardInterrupt
        progress.stop_requested = True
        progress.notice("Ctrl-C: stopping after the current commit (Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, restore)


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@contextlib.contextmanager
def quiet_ray() -> Iterator[None]:
    """Keep Ray's notices (connecting to a cluster, Ray Data's execution plan and its
    "progress bars disabled" warning) off the terminal while our own display runs; they
    still reach Ray's log files. ``-v`` (DEBUG on the root logger) leaves them on."""
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, saved, strict=True):
            logger.setLevel(level)


def summary_table(result: Any) -> Any:
    """A rich table of the run: one row per slide, failures with their reason."""
    from rich.table import Table

    table = Table(
        title=f"ingest {result.run_id} · config {result.config_hash} · {result.seconds:.1f} s"
    )
    for column in ("slide", "status", "tiles", "seconds"):
        table.add_column(
            column, justify="right" if column in ("tiles", "seconds") else "left", no_wrap=True
        )
    # Wrapped, never cut: the reason is why a failed slide is listed at all.
    table.add_column("error", overflow="fold", ratio=1)
    for o in result.outcomes:
        error = f"{o.error_type}: {o.error_message}"[:_MAX_ERROR] if o.error_type else ""
        style = "red" if o.status == "failed" else None
        table.add_row(
            o.slide_id,
            o.status,
            f"{o.tiles:,}",
            f"{o.seconds:.2f}" if o.seconds is not None else "",
            error,
            style=style,
        )
    updated = set(getattr(result, "metadata_updated", ()))
    for sid in result.skipped:
        status = "done, metadata updated" if sid in updated else "skipped (done)"
        table.add_row(sid, status, "", "", "", style="dim")
    return table
