"""Typed errors for slidebank.

Every error derives from :class:`SlidebankError` and, where a builtin fits, from that
builtin too, so callers can catch either (``except MissingMPPError`` or
``except ValueError``). Errors about one slide carry the slide (its id or URI) so a
batch can report exactly which input failed and why.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "DiskFullError",
    "GPUUnavailableError",
    "IngestAborted",
    "InvalidSlideIdError",
    "MissingMPPError",
    "NotAFolderError",
    "NotWritableError",
    "OutputExistsError",
    "ScratchSpaceError",
    "SlideCorruptError",
    "SlideCrashError",
    "SlideError",
    "SlideLimitError",
    "SlideNotFoundError",
    "SlideOpenError",
    "SlideReadError",
    "SlidebankError",
    "StagingError",
    "StoreConflictError",
    "StoreError",
    "StoreUnavailableError",
    "StoreWriteError",
    "TableNotFoundError",
    "TableReadError",
    "TrainingFailedError",
    "WeightsError",
]


class SlidebankError(Exception):
    """Base class of every error slidebank raises on purpose."""


class ConfigError(SlidebankError, ValueError):
    """A configuration value is invalid (names the field and the value)."""


class InvalidSlideIdError(SlidebankError, ValueError):
    """A slide id does not match ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``."""


class SlideError(SlidebankError):
    """An error about one slide. ``slide`` names it (id or URI, never credentials)."""

    def __init__(self, slide: str, message: str) -> None:
        self.slide = slide
        self.reason = message
        super().__init__(f"{slide}: {message}")

    def __reduce__(self):  # keep (slide, message) through pickling to Ray workers
        return (type(self), (self.slide, self.reason))


class SlideOpenError(SlideError, OSError):
    """No backend could open the slide; ``__cause__`` chains each backend's failure."""


class SlideNotFoundError(SlideOpenError, FileNotFoundError):
    """The slide's URI points at nothing."""


class SlideCorruptError(SlideOpenError):
    """The bytes are not a readable slide (empty, truncated, wrong container)."""


class SlideReadError(SlideError, OSError):
    """A region could not be read from an open slide."""


class SlideCrashError(SlideReadError):
    """Reading the slide killed its worker process (a native decoder crash) repeatedly."""


class SlideLimitError(SlideError, ValueError):
    """The slide would take unbounded work: implausible declared pixels for its size, a
    thumbnail too large for memory, or over its time budget / memory ceiling (issue 17)."""


class MissingMPPError(SlideError, ValueError):
    """The slide has no microns-per-pixel in its metadata and no override was given."""


class BackendUnavailableError(SlidebankError, ImportError):
    """A requested reader backend is not installed or cannot run here."""


class StagingError(SlidebankError, OSError):
    """Downloading a remote slide to local scratch failed its size or ETag check."""


class ScratchSpaceError(StagingError):
    """Local scratch is too small for the slide even after evicting unused files."""


class StoreError(SlidebankError):
    """An error in the feature store."""


class StoreConflictError(StoreError, RuntimeError):
    """A concurrent writer committed first and retries were exhausted."""


class StoreUnavailableError(StoreError, ConnectionError):
    """Object storage failed a read or listing of the store with a network fault
    (connection reset, timeout, throttling) after the storage client's own retries.
    ``uri`` names the store. Nothing was written: the same call may succeed later."""

    def __init__(self, uri: str, message: str) -> None:
        self.uri = uri
        self.reason = message
        super().__init__(f"{uri}: {message}")

    def __reduce__(self):
        return (type(self), (self.uri, self.reason))


class StoreWriteError(StoreError, OSError):
    """The file system refused a write to the store or to an output file; names the path.

    ``errno`` is the operating system's code (also when Lance reported it as text), so
    callers that check ``exc.errno`` keep working.
    """

    def __init__(self, path: str, message: str, errno: int | None = None) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}")
        self.errno = errno

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.errno))


class DiskFullError(StoreWriteError):
    """No space left (ENOSPC), over a quota (EDQUOT) or over a file-size limit (EFBIG)."""


class NotWritableError(StoreWriteError, PermissionError):
    """A read-only file system (EROFS) or no permission to write there (EACCES, EPERM)."""


class NotAFolderError(StoreWriteError, NotADirectoryError):
    """A file stands where the store (or an output folder) or one of its parents must be."""


class IngestAborted(StoreWriteError):
    """An ingest run stopped part-way because the store refused a write (disk full,
    read-only, a file in the way): ``cause`` is that refusal, ``partial`` the run's result
    up to then (committed slides as they are, the rest ``aborted``; an
    ``ingest.pipeline.runner.IngestResult``), ``record_written`` whether the run is
    recorded ``failed`` in the store (``record_error`` says why not)."""

    def __init__(
        self,
        cause: StoreWriteError,
        partial: Any,
        record_written: bool = False,
        record_error: str | None = None,
    ) -> None:
        super().__init__(cause.path, cause.reason, cause.errno)
        self.cause, self.partial = cause, partial
        self.record_written, self.record_error = record_written, record_error

    def __reduce__(self):
        return (type(self), (self.cause, self.partial, self.record_written, self.record_error))


class OutputExistsError(SlidebankError, FileExistsError):
    """An output file exists already and overwriting it was not asked for."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"{path} exists already; pass --overwrite (overwrite=True in Python) to replace it"
        )

    def __reduce__(self):
        return (type(self), (self.path,))


class WeightsError(SlidebankError, OSError):
    """Model weights are missing, unsafe to load, or do not match the architecture."""


class TableReadError(SlidebankError, ValueError):
    """A user-supplied table (manifest, cohort, labels, omics) cannot be read; names the file."""

    def __init__(self, table: str, message: str) -> None:
        self.table = table
        self.reason = message
        super().__init__(f"{table}: {message}")

    def __reduce__(self):
        return (type(self), (self.table, self.reason))


class TableNotFoundError(TableReadError, FileNotFoundError):
    """A user-supplied table does not exist."""


class TrainingFailedError(SlidebankError, RuntimeError):
    """Ray Train gave up on a run (its retries spent); the folds it finished are saved."""


class GPUUnavailableError(SlidebankError, TimeoutError):
    """GPUs were asked of the autoscaler and none joined the cluster in time."""
