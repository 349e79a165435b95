"""Stage remote slides to bounded local scratch with parallel ranged downloads.

Why stage: cuCIM and OpenSlide need a local file, and for whole-slide work one
parallel download followed by local decoding beats thousands of per-tile GETs.
Guarantees: the staged file has the object's size, the object's ETag did not change
while downloading (and equals the content MD5 when the ETag is a plain MD5), the file
appears only complete (temp name then ``os.replace``), and scratch never holds more
than ``max_bytes``: unused staged files are evicted least-recently-used first.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import fsspec

from infra.errors import ScratchSpaceError, StagingError
from infra.files import temp_path
from infra.storage import ObjectInfo, object_info

__all__ = ["ScratchSpace", "StagedFile", "default_scratch"]

log = logging.getLogger(__name__)
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class StagedFile:
    path: Path
    key: str
    size: int
    seconds: float
    reused: bool


class ScratchSpace:
    """A bounded directory of staged slides, shared by the slides open in this process."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        max_bytes: int = 64 * 2**30,
        *,
        parts: int = 8,
        part_size: int = 8 * 2**20,
        keep: bool = False,
        verify_md5: bool = True,
    ) -> None:
        base = (
            Path(root) if root else Path(tempfile.gettempdir()) / f"slidebank-scratch-{os.getuid()}"
        )
        # One subdirectory per process: eviction never touches another process's files.
        self.root = base / f"p{os.getpid()}"
        self.max_bytes = int(max_bytes)
        self.parts = max(int(parts), 1)
        self.part_size = max(int(part_size), 2**16)
        self.keep = keep
        self.verify_md5 = verify_md5
        self._pins: dict[str, int] = {}
        self._lock = threading.Lock()
        atexit.register(self.clear)

    # ---- bookkeeping -------------------------------------------------------------------
    def _entries(self) -> list[Path]:
        if not self.root.exists():
            return []
        return [p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")]

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._entries())

    def _make_room(self, needed: int, slide: str) -> None:
        if needed > self.max_bytes:
            raise ScratchSpaceError(
                f"{slide}: {needed} bytes exceed the scratch limit of {self.max_bytes} bytes"
            )
        entries = sorted(self._entries(), key=lambda p: p.stat().st_atime)
        free = self.max_bytes - sum(p.stat().st_size for p in entries)
        for entry in entries:
            if free >= needed:
                break
            if self._pins.get(entry.name, 0) == 0:
                free += entry.stat().st_size
                entry.unlink(missing_ok=True)
        if free < needed:
            raise ScratchSpaceError(
                f"{slide}: scratch {self.root} is full of slides in use "
                f"({self.max_bytes - free} of {self.max_bytes} bytes pinned)"
            )

    def release(self, staged: StagedFile) -> None:
        """Unpin; delete the file unless ``keep`` (then it stays until evicted)."""
        with self._lock:
            count = self._pins.get(staged.path.name, 0) - 1
            if count > 0:
                self._pins[staged.path.name] = count
                return
            self._pins.pop(staged.path.name, None)
            if not self.keep:
                staged.path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove every unpinned staged file of this process, and its folder once empty."""
        with self._lock:
            for entry in self._entries():
                if self._pins.get(entry.name, 0) == 0:
                    entry.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty (pinned or temp files) or gone
                self.root.rmdir()

    def _make_root(self) -> None:
        """Create the scratch folders private to this user (0700; the base only when we
        create it, a user's own SLIDEBANK_SCRATCH keeps its mode). The default base has a
        predictable name in /tmp, so one that is a symlink or someone else's is refused
        rather than written into; folders of processes that are gone are removed."""
        base = self.root.parent
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = base.lstat()
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
            raise ScratchSpaceError(
                f"scratch folder {base} is a symlink or belongs to another "
                "user; set SLIDEBANK_SCRATCH to a private folder"
            )
        if not self.root.exists():
            _remove_stale(base)
        self.root.mkdir(mode=0o700, exist_ok=True)

    # ---- staging -----------------------------------------------------------------------
    def stage(
        self, fs: fsspec.AbstractFileSystem, path: str, info: ObjectInfo, slide: str, suffix: str
    ) -> StagedFile:
        key = hashlib.sha256(f"{fs.unstrip_protocol(path)}|{info.etag}|{info.size}".encode())
        name = key.hexdigest()[:32] + suffix
        target = self.root / name
        with self._lock:
            self._make_root()
            if target.exists() and target.stat().st_size == info.size:
                self._pins[name] = self._pins.get(name, 0) + 1
                os.utime(target)
                return StagedFile(target, name, info.size, 0.0, reused=True)
            self._make_room(info.size, slide)
            self._pins[name] = self._pins.get(name, 0) + 1
        try:
            seconds = self._download(fs, path, info, target, slide)
        except BaseException:
            with self._lock:
                self._pins.pop(name, None)
            raise
        return StagedFile(target, name, info.size, seconds, reused=False)

    def _download(self, fs, path: str, info: ObjectInfo, target: Path, slide: str) -> float:
        start = time.perf_counter()
        # Not infra.files.atomic_write: parts are written in parallel with pwrite and
        # verified before the rename, but the temp name comes from the same helper.
        tmp = temp_path(target)
        ranges = [
            (o, min(o + self.part_size, info.size)) for o in range(0, info.size, self.part_size)
        ]
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.ftruncate(fd, info.size)

                def fetch(span: tuple[int, int]) -> None:
                    data = fs.cat_file(path, start=span[0], end=span[1])
                    if len(data) != span[1] - span[0]:
                        raise StagingError(
                            f"{slide}: short read at bytes {span[0]}-{span[1]} ({len(data)} bytes)"
                        )
                    os.pwrite(fd, data, span[0])

                with ThreadPoolExecutor(max_workers=min(self.parts, max(len(ranges), 1))) as pool:
                    list(pool.map(fetch, ranges))
            finally:
                os.close(fd)
            self._verify(fs, path, info, tmp, slide)
            os.replace(tmp, target)
        except StagingError:
            raise
        except OSError as exc:
            raise StagingError(f"{slide}: staging download failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        seconds = time.perf_counter() - start
        log.debug("staged %s (%d bytes) in %.2fs", slide, info.size, seconds)
        return seconds

    def _verify(self, fs, path: str, before: ObjectInfo, tmp: Path, slide: str) -> None:
        size = tmp.stat().st_size
        if size != before.size:
            raise StagingError(f"{slide}: staged {size} bytes, object has {before.size}")
        after = object_info(fs, path)
        if (after.etag, after.size) != (before.etag, before.size):
            raise StagingError(
                f"{slide}: object changed while staging (ETag {before.etag} -> {after.etag})"
            )
        if self.verify_md5 and before.etag and _MD5_ETAG.match(before.etag):
            digest = hashlib.md5(usedforsecurity=False)
            with open(tmp, "rb") as fh:
                for block in iter(lambda: fh.read(8 * 2**20), b""):
                    digest.update(block)
            if digest.hexdigest() != before.etag:
                raise StagingError(
                    f"{slide}: content MD5 {digest.hexdigest()} != ETag {before.etag}"
                )


_default: ScratchSpace | None = None
_default_lock = threading.Lock()


def _remove_stale(base: Path) -> None:
    """``p<pid>`` folders whose process has exited (killed before its atexit clean-up)."""
    for entry in base.glob("p[0-9]*"):
        pid = entry.name[1:]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_scratch() -> ScratchSpace:
    """The process-wide scratch space, created on first use (root: $SLIDEBANK_SCRATCH)."""
    global _default
    with _default_lock:
        if _default is None:
            max_gb = float(os.environ.get("SLIDEBANK_SCRATCH_GB", "64"))
            _default = ScratchSpace(os.environ.get("SLIDEBANK_SCRATCH"), int(max_gb * 2**30))
        return _default
