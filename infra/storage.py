"""URIs and object storage: one place that turns a URI into an fsspec filesystem.

Accepted: plain local paths, ``file://``, ``s3://``, ``gs://``, and any protocol fsspec
knows. Storage options (credentials, endpoint) are passed through unchanged and never
logged; use :func:`infra.logs.redact_options` to print them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.core import split_protocol

__all__ = ["ObjectInfo", "is_local", "object_info", "open_filesystem", "strip_protocol"]

_LOCAL = {None, "file", "local"}


def is_local(uri: str) -> bool:
    """True for plain paths and ``file://`` URIs."""
    protocol, _ = split_protocol(str(uri))
    return protocol in _LOCAL


def strip_protocol(uri: str) -> str:
    """The path part of a URI; for local URIs an absolute filesystem path."""
    protocol, path = split_protocol(str(uri))
    if protocol in _LOCAL:
        return os.path.abspath(os.path.expanduser(path))
    return path


def open_filesystem(
    uri: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem serving ``uri`` and the path within it."""
    protocol, _ = split_protocol(str(uri))
    if protocol in _LOCAL:
        return fsspec.filesystem("file"), strip_protocol(uri)
    fs, path = fsspec.core.url_to_fs(str(uri), **dict(storage_options or {}))
    return fs, path


@dataclass(frozen=True)
class ObjectInfo:
    """What the store says about one object: enough to detect a change."""

    size: int
    etag: str | None
    modified: str | None


def object_info(fs: fsspec.AbstractFileSystem, path: str) -> ObjectInfo:
    """Size, ETag (S3/GCS) and modification stamp of ``path``; raises FileNotFoundError."""
    info = fs.info(path)
    if info.get("type") == "directory":
        raise IsADirectoryError(path)
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    modified = info.get("LastModified") or info.get("mtime") or info.get("updated")
    return ObjectInfo(
        size=int(info.get("size") or 0),
        etag=str(etag).strip('"') if etag else None,
        modified=str(modified) if modified is not None else None,
    )
