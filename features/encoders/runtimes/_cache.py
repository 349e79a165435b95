"""Where exported models and ``auto``'s measurements live: one folder per cache key.

A key hashes what the artifact depends on (weights, the spec's fingerprint, runtime and
its version, dtype, input shape), so a changed model never meets a stale export. Writers
on one node (two fused actors starting together) serialise on a lock file per key: the
first exports, the others wait and load its result. Artifacts are built in a temporary
folder and published by one ``rename``; JSON through :func:`infra.files.atomic_write_json`.
A reader never sees half an export.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from infra.files import atomic_write_json
from infra.provenance import stable_hash

__all__ = ["ENV", "artifact", "cache_key", "cache_root", "locked", "read_json", "write_json"]

#: environment variable naming the cache folder (default ~/.cache/slidebank/runtimes)
ENV = "SLIDEBANK_RUNTIME_CACHE"
#: bumped when the layout or what an artifact holds changes
_FORMAT = 1


def cache_root() -> Path:
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slidebank" / "runtimes"


def cache_key(kind: str, fields: dict[str, Any]) -> str:
    return f"{kind}-{stable_hash('slidebank.runtime.' + kind, _FORMAT, fields)}"


@contextlib.contextmanager
def locked(key: str) -> Iterator[Path]:
    """Hold ``key``'s lock (other processes of this node wait); yields the cache root."""
    root = cache_root()
    locks = root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{key}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def artifact(
    key: str, build: Callable[[Path], dict[str, Any]]
) -> tuple[Path, dict[str, Any], bool]:
    """The folder holding ``key``'s artifact, its ``meta.json``, and whether it was built now.

    ``build(folder)`` writes the artifact into an empty folder and returns its metadata;
    it runs at most once per key on this node (under the key's lock).
    """
    with locked(key) as root:
        final = root / key
        meta = read_json(final / "meta.json")
        if meta is not None:
            return final, meta, False
        if final.exists():  # no meta.json: not ours, or from a format without one
            shutil.rmtree(final, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=root))
        try:
            meta = build(tmp)
            write_json(tmp / "meta.json", meta)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded
        return final, meta, True


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    atomic_write_json(path, value)
