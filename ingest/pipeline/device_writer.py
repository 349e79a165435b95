"""The device engine's writer: fragment writes off the device loop, in order, bounded.

:class:`OrderedWrites` runs one slide's write jobs in the stage's writer thread, so the
loop that feeds the GPU goes on to the next batch while a batch's embeddings arrive on
the host and its Lance fragments are written. At most ``depth`` jobs wait; one more makes
:meth:`OrderedWrites.submit` wait for the oldest, which is also where a job's error
reaches the loop (and fails the slide). Results come back in submission order, and the
results of jobs that finished before a failed one come back before its error.

Nothing is half-written: a job writes invisible fragments (see
:mod:`features.store.writer`); only the rows it returns name them to the driver, and a
slide whose write failed yields a failed row instead, so the driver commits none of
them; once one job has failed, the slide's later jobs write nothing (they only hand
their resources back). :meth:`OrderedWrites.close` (failure, early stop, end) cancels jobs that have not
started, hands their resources back and waits for the running one: the slide does not
close under a write, and nothing of it is written after.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

__all__ = ["OrderedWrites", "WriteSkipped"]

T = TypeVar("T")


class WriteSkipped(RuntimeError):
    """A write job not run because an earlier one of the same slide failed."""


class OrderedWrites:
    """One slide's write jobs on ``pool`` (one thread), at most ``depth`` waiting."""

    def __init__(self, pool: ThreadPoolExecutor, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._pool, self._depth = pool, depth
        self._pending: deque[tuple[Future[Any], Callable[[], None] | None]] = deque()
        self._failed = False  # set in the writer thread, read there: no lock needed

    def submit(self, job: Callable[[], T], on_cancel: Callable[[], None] | None = None) -> list[T]:
        """Queue ``job``; returns the results of jobs already finished at the head of the
        queue, after waiting for the oldest while more than ``depth`` are pending (its
        error is raised here). ``on_cancel`` runs if the job is cancelled unstarted."""
        self._pending.append((self._pool.submit(self._run, job, on_cancel), on_cancel))
        done: list[T] = []
        while self._pending and (len(self._pending) > self._depth or self._pending[0][0].done()):
            future, _ = self._pending[0]
            try:
                result = future.result()
            except BaseException:
                if done:  # what finished before it goes back first; the error comes next call
                    return done
                raise
            self._pending.popleft()
            done.append(result)
        return done

    def _run(self, job: Callable[[], T], on_cancel: Callable[[], None] | None) -> T:
        if self._failed:
            if on_cancel is not None:
                on_cancel()
            raise WriteSkipped("an earlier write of this slide failed")
        try:
            return job()
        except BaseException:
            self._failed = True
            raise

    def drain(self) -> Iterator[T]:
        """The rest of the results, in order, each as it finishes."""
        while self._pending:
            future, _ = self._pending[0]
            result = future.result()  # a failed job stays queued: close() still sees it
            self._pending.popleft()
            yield result

    def close(self) -> None:
        """Cancel what has not started (running ``on_cancel``), wait for what has."""
        running = []
        while self._pending:
            future, on_cancel = self._pending.popleft()
            if future.cancel():
                if on_cancel is not None:
                    on_cancel()
            else:
                running.append(future)
        wait(running)
