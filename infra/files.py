"""One atomic local write: a uniquely named temp file in the target's folder, then ``os.replace``.

Readers see the old file or the new one, never a partial one; two writers of the same
path never share a temp name (a uuid, not a fixed ``.partial`` suffix), so concurrent
writers cannot corrupt each other's temp files. Object stores (S3, GCS) PUT atomically
already; :func:`write_bytes_uri` uses this helper only for local paths.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from infra.errors import ConfigError, OutputExistsError
from infra.fs_errors import check_writable_folder

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_output",
    "refuse_existing",
    "temp_path",
    "to_json_data",
    "write_bytes_uri",
]


def temp_path(path: str | os.PathLike[str]) -> Path:
    """A unique sibling of ``path`` for writing before the rename (same filesystem)."""
    target = Path(path)
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial")


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", *, fsync: bool = True, overwrite: bool = True
) -> Iterator[IO[Any]]:
    """Open a temp file for writing; on success it replaces ``path``, on error it is removed.

    ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8). Parent folders are created.
    ``overwrite=False`` refuses an existing ``path`` (see :func:`atomic_path`).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    with (
        atomic_path(path, overwrite=overwrite) as tmp,
        open(tmp, mode, encoding=None if mode == "wb" else "utf-8") as handle,
    ):
        yield handle
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """A temp path beside ``path`` for writers that only take a path (h5py, anndata): it
    becomes ``path`` when the block succeeds and is removed when it fails.

    ``overwrite=False`` raises :class:`~infra.errors.OutputExistsError` for an existing
    ``path``: before the block runs (no work wasted) and again when the file is put in
    place, atomically (a hard link fails if ``path`` appeared meanwhile).
    """
    target = Path(path)
    if not overwrite:
        refuse_existing(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(target)
    try:
        yield tmp
        _publish(tmp, target, overwrite)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """``path`` as a Path, once what would fail at the end of the work producing it has been
    ruled out: an existing file (unless ``overwrite``), a folder by that name, a folder
    that cannot take writes (:func:`infra.fs_errors.check_writable_folder`)."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{target} is a folder; name a file to write")
    if not overwrite:
        refuse_existing(target)
    check_writable_folder(target.parent)
    return target


def refuse_existing(path: str | os.PathLike[str]) -> None:
    """Raise :class:`~infra.errors.OutputExistsError` when ``path`` exists (or is a link)."""
    if os.path.lexists(path):
        raise OutputExistsError(str(path))


_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}


def _publish(tmp: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise OutputExistsError(str(target)) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # A file system without hard links (some FUSE and SMB mounts): the check before
        # the write is the guard, with a small window for a file appearing meanwhile.
        refuse_existing(target)
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True
) -> Path:
    with atomic_write(path, "wb", overwrite=overwrite) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> Path:
    with atomic_write(path, "w", overwrite=overwrite) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, overwrite: bool = True
) -> Path:
    """JSON with sorted keys; NaN and infinities (not JSON) are written as null, numpy
    scalars as numbers, paths as strings. ``overwrite=False`` refuses an existing file."""
    return atomic_write_text(
        path,
        json.dumps(to_json_data(obj), indent=indent, sort_keys=True, allow_nan=False) + "\n",
        overwrite=overwrite,
    )


def to_json_data(value: Any) -> Any:
    """``value`` as plain JSON data (see :func:`atomic_write_json`)."""
    if isinstance(value, Mapping):
        return {str(k): to_json_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_data(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return to_json_data(_json_default(value))


def _json_default(value: Any) -> Any:
    # numpy scalars and paths show up in reports; anything else is a bug in the caller.
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")


def write_bytes_uri(
    uri: str, data: bytes, storage_options: Mapping[str, Any] | None = None
) -> None:
    """Write ``data`` to a local path atomically, or PUT it to an object store (atomic there)."""
    from infra.storage import is_local, open_filesystem, strip_protocol

    if is_local(uri):
        atomic_write_bytes(strip_protocol(uri), data)
        return
    fs, path = open_filesystem(uri, storage_options)
    parent = path.rsplit("/", 1)[0]
    with contextlib.suppress(OSError):  # object stores have no real folders
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as handle:
        handle.write(data)
