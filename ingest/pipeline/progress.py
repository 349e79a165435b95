"""What a person watching a long ingestion sees: slides and tiles done, rate, ETA."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["Progress", "quiet_ray", "summary_table"]

log = logging.getLogger(__name__)


class Progress:
    """A rich progress bar over slides with a live tile count; silent when disabled."""

    def __init__(self, total_slides: int, *, enabled: bool = True) -> None:
        self.total, self.enabled = total_slides, enabled and sys.stderr.isatty()
        self.tiles = self.done = self.failed = 0
        self.started = time.perf_counter()
        #: when the first encoded tiles reached the driver (start-up over; steady state on)
        self.first_tile_at: float | None = None
        self._progress: Any = None
        self._task: Any = None

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
                SpinnerColumn(), TextColumn("[bold]{task.fields[phase]}"), BarColumn(),
                MofNCompleteColumn(),
                TextColumn("slides · {task.fields[tiles]:,} tiles · {task.fields[rate]:.0f} tiles/s"
                           " · {task.fields[failed]} failed"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                refresh_per_second=4)
            self._progress.start()  # from the first second: start-up is shown, not silent
            self._task = self._progress.add_task("ingest", total=self.total, tiles=0, rate=0.0,
                                                 failed=0, phase="starting")
        return self

    def phase(self, text: str) -> None:
        """Name what the run is doing now (start-up steps, then ``ingest``)."""
        if self._progress is not None:
            self._progress.update(self._task, phase=text)
        log.debug("ingest phase: %s", text)

    def tick(self) -> None:
        """Refresh the rate while no batch arrives (the display thread redraws it)."""
        self._update(advance=0)

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
        if self._progress is None:
            return
        rate = self.tiles / max(time.perf_counter() - self.started, 1e-6)
        self._progress.update(self._task, advance=advance, tiles=self.tiles, rate=rate,
                              failed=self.failed)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


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

    table = Table(title=f"ingest {result.run_id} · config {result.config_hash} · "
                        f"{result.seconds:.1f} s")
    for column in ("slide", "status", "tiles", "seconds", "error"):
        table.add_column(column, justify="right" if column in ("tiles", "seconds") else "left")
    for o in result.outcomes:
        error = f"{o.error_type}: {o.error_message}"[:120] if o.error_type else ""
        style = "red" if o.status == "failed" else None
        table.add_row(o.slide_id, o.status, f"{o.tiles:,}",
                      f"{o.seconds:.2f}" if o.seconds is not None else "", error, style=style)
    updated = set(getattr(result, "metadata_updated", ()))
    for sid in result.skipped:
        status = "done, metadata updated" if sid in updated else "skipped (done)"
        table.add_row(sid, status, "", "", "", style="dim")
    return table
