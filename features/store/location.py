"""Where a feature store lives: a root URI plus storage options, in every dialect needed.

Callers hand slidebank fsspec-style options (``key``, ``secret``, ``endpoint_url``, as
s3fs takes them). Lance's object store speaks another dialect (``aws_access_key_id``,
``aws_endpoint``, ``allow_http``...), Zarr takes fsspec options again. One frozen,
picklable :class:`StoreLocation` carries the options to workers and translates them, so
no module builds credentials by hand. Its ``repr`` never shows secret values.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.fs_errors import check_writable_folder
from infra.logs import redact_options
from infra.storage import is_local, open_filesystem, strip_protocol

__all__ = ["StoreLocation", "lance_storage_options"]

# fsspec/s3fs option name -> object_store (Lance) option name.
_S3_RENAMES = {
    "key": "aws_access_key_id",
    "secret": "aws_secret_access_key",
    "token": "aws_session_token",
    "endpoint_url": "aws_endpoint",
    "region_name": "aws_region",
}
# fsspec-only knobs with no object_store meaning; dropped rather than passed through,
# because object_store rejects keys it does not know.
_FSSPEC_ONLY = {"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "asynchronous"}


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def lance_storage_options(uri: str, options: Mapping[str, Any] | None) -> dict[str, str]:
    """Translate fsspec-style storage options into Lance/object_store ones.

    Keys already in object_store form (``aws_*``, ``google_*``, ``azure_*``,
    ``allow_http``...) pass through unchanged, so callers may use either dialect.
    """
    if is_local(uri) or not options:
        return {}
    out: dict[str, str] = {}
    for key, value in options.items():
        if value is None or key in _FSSPEC_ONLY:
            continue
        if key == "client_kwargs" and isinstance(value, Mapping):
            # s3fs nests the region (and sometimes the endpoint) under client_kwargs.
            for sub_key, sub_value in value.items():
                if sub_key in _S3_RENAMES and sub_value is not None:
                    out[_S3_RENAMES[sub_key]] = _stringify(sub_value)
            continue
        if key == "anon":
            if value:
                out["aws_skip_signature"] = "true"
            continue
        if isinstance(value, Mapping):
            continue  # other nested fsspec config (config_kwargs...) has no equivalent
        out[_S3_RENAMES.get(key, key)] = _stringify(value)
    endpoint = out.get("aws_endpoint", "")
    if endpoint.startswith("http://"):
        out.setdefault("allow_http", "true")
    if endpoint:
        # A custom endpoint (MinIO, moto, Ceph) still needs a region to sign with.
        out.setdefault("aws_region", "us-east-1")
    return out


@dataclass(frozen=True)
class StoreLocation:
    """A feature store root (local path, ``file://`` or ``s3://``...) and its options."""

    uri: str
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        uri = str(self.uri).rstrip("/")
        if is_local(uri):
            uri = strip_protocol(uri)
        object.__setattr__(self, "uri", uri)
        object.__setattr__(self, "storage_options", dict(self.storage_options or {}))

    def __repr__(self) -> str:
        return f"StoreLocation(uri={self.uri!r}, storage_options={redact_options(self.storage_options)!r})"

    @property
    def local(self) -> bool:
        return is_local(self.uri)

    def join(self, *parts: str) -> str:
        """A URI under the root. Parts must already be validated ids or fixed names."""
        return posixpath.join(self.uri, *parts)

    def lance_options(self) -> dict[str, str]:
        return lance_storage_options(self.uri, self.storage_options)

    def check_writable(self) -> None:
        """Raise :class:`~infra.errors.NotAFolderError`, :class:`~infra.errors.NotWritableError`
        or :class:`~infra.errors.DiskFullError` now, before a run starts, if a local store
        root cannot take writes. Object stores are not probed: a test write would be a
        side effect, and their refusals are translated when they happen."""
        if self.local:
            check_writable_folder(self.uri)

    def filesystem(self) -> tuple[Any, str]:
        """The fsspec filesystem and root path (for Zarr groups and deletes)."""
        return open_filesystem(self.uri, self.storage_options)
