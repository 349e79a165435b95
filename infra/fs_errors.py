"""File-system refusals as one typed error naming the path: checked up front, translated mid-run.

Disk full, a read-only store and a file standing where a folder must be reach slidebank
in several disguises: Python's ``OSError`` with an ``errno``; Lance's
``LanceError(IO): No space left on device (os error 28)`` (an ``OSError`` or a
``ValueError`` without ``errno``); h5py's ``errno = 28``; and any of these inside Ray's
``RayTaskError`` when a worker wrote. :func:`write_error` reads the code back from each and
returns :class:`~infra.errors.DiskFullError`, :class:`~infra.errors.NotWritableError` or
:class:`~infra.errors.NotAFolderError`; :func:`check_writable_folder` finds the same
conditions before a run starts, where the OS lets us see them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from infra.errors import DiskFullError, NotAFolderError, NotWritableError, StoreWriteError

__all__ = ["MIN_FREE_BYTES", "check_writable_folder", "translate_write_errors", "write_error"]

#: Less free space than this cannot hold even a run record or a small export: refuse
#: up front rather than fail half-way.
MIN_FREE_BYTES = 64 * 1024

_CLASSES: dict[int, type[StoreWriteError]] = {
    errno.ENOSPC: DiskFullError,
    errno.EDQUOT: DiskFullError,
    errno.EFBIG: DiskFullError,
    errno.EROFS: NotWritableError,
    errno.EACCES: NotWritableError,
    errno.EPERM: NotWritableError,
    errno.ENOTDIR: NotAFolderError,
}
_MESSAGES = {
    errno.EFBIG: "file too large (a file-size limit of the file system or of this process)",
    errno.ENOTDIR: "a file stands where a folder is needed",
}
_CODE_IN_TEXT = re.compile(r"\(os error (\d+)\)|errno\s*=\s*(\d+)")
_LANCE_PATH = re.compile(r"operation on (/\S+?):\s")
_UNKNOWN_PATH = "a file-system write"


def write_error(
    exc: BaseException, path: str | os.PathLike[str] | None = None
) -> StoreWriteError | None:
    """The typed error for ``exc`` when a full, read-only or misplaced target caused it
    (looking through ``__cause__``, ``__context__`` and Ray's ``cause``); else None.

    The error names the file Python reported, else ``path`` (the store root or the
    output being written), else the path in Lance's message.
    """
    for err in _chain(exc):
        if isinstance(err, StoreWriteError):
            return err
        code = _errno(err)
        if code in _CLASSES:
            where = _where(err, path)
            return _CLASSES[code](where, _message(code), code)
    return None


@contextlib.contextmanager
def translate_write_errors(path: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Re-raise full, read-only and not-a-folder failures of the block as typed errors."""
    try:
        yield
    except Exception as exc:
        typed = write_error(exc, path)
        if typed is None or typed is exc:
            raise
        raise typed from exc


def check_writable_folder(path: str | os.PathLike[str]) -> None:
    """Raise before any work if the local folder ``path`` (existing or to be created)
    cannot take writes: a file on the way, a read-only or foreign folder, a full disk."""
    target = Path(path)
    existing = _nearest_existing(target)
    if not existing.is_dir():
        where = "is a file" if existing == target else f"cannot be created: {existing} is a file"
        raise NotAFolderError(str(target), f"{where}, not a folder", errno.ENOTDIR)
    if not os.access(existing, os.W_OK | os.X_OK):
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            raise NotWritableError(str(target), f"read-only file system at {existing}", errno.EROFS)
        raise NotWritableError(str(target), f"no permission to write in {existing}", errno.EACCES)
    stat = os.statvfs(existing)
    free = stat.f_bavail * stat.f_frsize
    if free < MIN_FREE_BYTES:
        raise DiskFullError(
            str(target), f"no space left on device ({free:,} bytes free)", errno.ENOSPC
        )


def _nearest_existing(path: Path) -> Path:
    # Path.exists() is False below a file (ENOTDIR), so the walk stops at that file.
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 16:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        ray_cause = getattr(err, "cause", None)  # ray.exceptions.RayTaskError
        todo += [
            ray_cause if isinstance(ray_cause, BaseException) else None,
            err.__cause__,
            err.__context__,
        ]


def _errno(err: BaseException) -> int | None:
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno if err.errno in _CLASSES else None
    if not isinstance(err, OSError | ValueError):
        return None
    text = str(err)
    match = _CODE_IN_TEXT.search(text)
    if match:
        return int(match.group(1) or match.group(2))
    if isinstance(err, OSError):  # a library's OSError that kept only the OS's words
        return next((code for code in _CLASSES if os.strerror(code) in text), None)
    return None


def _where(err: BaseException, path: str | os.PathLike[str] | None) -> str:
    # The file Python names is the most precise; Lance's paths are its internal files,
    # so the store root or output the caller names reads better to a user.
    if isinstance(err, OSError) and err.filename:
        return str(err.filename)
    if path is not None:
        return str(path)
    match = _LANCE_PATH.search(str(err))
    return match.group(1) if match else _UNKNOWN_PATH


def _message(code: int) -> str:
    return f"{_MESSAGES.get(code, os.strerror(code).lower())} (errno {code})"
