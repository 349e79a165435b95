"""Open a slide by URI: find it, vet its bytes, pick a strategy and a backend, resolve MPP.

Remote objects are read in one of two ways:

* ``stream`` — byte-range reads through fsspec (tiffslide); nothing touches local disk.
* ``stage`` — a parallel ranged download into bounded scratch, then cuCIM or OpenSlide.

``auto`` stages when the slide fits in scratch (the fast path for whole-slide work) and
streams otherwise. Local files are always opened in place.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping
from typing import IO, Any

from infra.errors import (
    BackendUnavailableError,
    ConfigError,
    MissingMPPError,
    ScratchSpaceError,
    SlideCorruptError,
    SlideError,
    SlideNotFoundError,
    SlideOpenError,
)
from infra.logs import redact_text
from infra.network_faults import network_fault
from infra.storage import ObjectInfo, is_local, object_info, open_filesystem
from ingest.slides.base import BackendSlide, SlideReader
from ingest.slides.container import inspect_tiff, is_tiff, sniff
from ingest.slides.handle import SlideHandle, Strategy
from ingest.slides.metadata import SlideMetadata, sanitize_short_text
from ingest.slides.mpp import VendorMetadata, objective_power, resolve_mpp, scanner_model
from ingest.slides.registry import candidate_readers, extension_of, get_reader_class
from ingest.slides.slide import Slide
from ingest.slides.staging import ScratchSpace, default_scratch

__all__ = ["open_handle", "open_slide"]

log = logging.getLogger(__name__)
_REMOTE_BLOCK = 2**16  # readahead per ranged GET: covers TIFF directories and one tile


def open_slide(
    uri: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    reader: str | None = None,
    mpp: float | None = None,
    strategy: Strategy = "auto",
    device: str = "auto",
    require_mpp: bool = True,
    scratch: ScratchSpace | None = None,
) -> Slide:
    """Open ``uri`` (path, ``file://``, ``s3://``, ``gs://``, any fsspec URL).

    ``mpp`` overrides the metadata (a manifest value). Without it, a slide whose
    metadata has no resolution raises :class:`MissingMPPError` unless
    ``require_mpp=False``. Every failure names the slide; when no backend opens it,
    the error's ``__cause__`` groups each backend's own exception.
    """
    handle = SlideHandle(str(uri), storage_options, reader, mpp, strategy, device, require_mpp)  # type: ignore[arg-type]
    return open_handle(handle, scratch)


def open_handle(handle: SlideHandle, scratch: ScratchSpace | None = None) -> Slide:
    if handle.strategy not in ("auto", "stream", "stage"):
        raise ConfigError(f"strategy must be auto, stream or stage, got {handle.strategy!r}")
    label = redact_text(handle.uri)
    fs, path = open_filesystem(handle.uri, handle.storage_options)
    info = _locate(fs, path, label)
    remote = not is_local(handle.uri)
    meta, tiff = _vet(fs, path, info, label)
    if not remote:
        return _open_with(handle, label, path, None, meta, tiff, info, "local", None)
    access = _choose_access(handle, info)
    if access == "stage":
        space = scratch or default_scratch()
        try:
            staged = space.stage(fs, path, info, label, extension_of(handle.uri))
        except ScratchSpaceError:
            if handle.strategy == "stage":
                raise
            log.warning("%s does not fit in scratch; streaming it instead", label)
        else:
            try:
                return _open_with(
                    handle,
                    label,
                    str(staged.path),
                    None,
                    meta,
                    tiff,
                    info,
                    "stage",
                    (space, staged),
                )
            except BaseException:
                space.release(staged)
                raise
    fileobj = fs.open(path, "rb", block_size=_REMOTE_BLOCK, cache_type="readahead")
    try:
        return _open_with(handle, label, path, fileobj, meta, tiff, info, "stream", None)
    except BaseException:
        fileobj.close()
        raise


def _locate(fs: Any, path: str, label: str) -> ObjectInfo:
    protocol = getattr(fs, "protocol", "file")
    if {"file", "local"} & set((protocol,) if isinstance(protocol, str) else protocol):
        _check_regular_file(path, label)
    try:
        info = object_info(fs, path)
    except FileNotFoundError as exc:
        raise SlideNotFoundError(label, "no such file or object") from exc
    except IsADirectoryError as exc:
        raise SlideOpenError(label, "is a directory, not a slide") from exc
    except Exception as exc:
        if _unreachable(exc):
            raise SlideOpenError(
                label, f"cannot reach the storage endpoint ({type(exc).__name__}: {_short(exc)})"
            ) from exc
        if isinstance(exc, OSError):
            raise SlideOpenError(label, f"cannot stat: {_short(exc)}") from exc
        raise
    if info.size == 0:
        raise SlideCorruptError(label, "empty file (0 bytes)")
    return info


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular_file(path: str, label: str) -> None:
    """Slides are read with random access: a FIFO or a device (``/dev/zero``) is refused by
    name before any read (a FIFO read would block; a device never ends)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing / unreadable: object_info names it precisely
    for test, kind in _SPECIAL_FILES:
        if test(mode):
            raise SlideOpenError(
                label,
                f"is {kind}, not a regular file; slides must be files "
                "or objects that allow random access",
            )


def _unreachable(exc: BaseException) -> bool:
    """Network failures (refused, DNS, timeouts, resets, throttling) from botocore, aiohttp,
    gcsfs or the stdlib: the one rule the store uses too (:mod:`infra.network_faults`)."""
    return network_fault(exc) is not None


def _vet(fs: Any, path: str, info: ObjectInfo, label: str) -> tuple[VendorMetadata, bool]:
    """Check the container before any decoder sees it; gather TIFF metadata."""
    with fs.open(path, "rb", block_size=_REMOTE_BLOCK, cache_type="readahead") as fh:
        head = sniff(fh)
        if not is_tiff(head):
            return VendorMetadata(), False
        return inspect_tiff(fh, info.size, label), True


def _choose_access(handle: SlideHandle, info: ObjectInfo) -> str:
    if handle.strategy == "stream":
        if handle.reader and not get_reader_class(handle.reader).supports_remote:
            raise ConfigError(
                f"reader {handle.reader!r} cannot stream from object storage; "
                "use strategy='stage' or reader='tiffslide'"
            )
        return "stream"
    if handle.strategy == "stage":
        return "stage"
    if handle.reader and get_reader_class(handle.reader).supports_remote:
        return "stream"
    return "stage"


def _candidates(handle: SlideHandle, access: str) -> list[type[SlideReader]]:
    if handle.reader:
        return [get_reader_class(handle.reader)]
    found = candidate_readers(handle.uri, remote=access == "stream")
    if not found:
        raise BackendUnavailableError(
            f"no installed reader can open {extension_of(handle.uri)!r} slides with access={access}"
        )
    return found


def _instantiate(cls: type[SlideReader], handle: SlideHandle) -> SlideReader:
    if cls.supports_gpu_decode:
        from infra.arrays import gpu_available

        device = handle.device
        if device == "auto":
            device = "cuda" if gpu_available() else "cpu"
        return cls(device=device)  # type: ignore[call-arg]
    return cls()


def _try_backends(
    handle: SlideHandle, label: str, target: str, fileobj: IO[bytes] | None, tiff: bool, access: str
) -> tuple[str, BackendSlide]:
    failures: list[Exception] = []
    for cls in _candidates(handle, access):
        try:
            if cls.tiff_only and not tiff:
                raise SlideCorruptError(
                    label, "not a TIFF container (reads TIFF-family formats only)"
                )
            reader = _instantiate(cls, handle)
            if fileobj is not None:
                backend = reader.open_remote(fileobj, handle.uri, handle.storage_options or {})
            else:
                backend = reader.open_local(target)
            if not backend.level_dimensions:
                backend.close()
                raise SlideCorruptError(label, "no image levels")
            return cls.name, backend
        except Exception as exc:  # each backend fails differently; collect all, raise once
            exc.add_note(f"backend: {cls.name}")
            failures.append(exc)
    reasons = "; ".join(f"{_backend_of(e)}: {type(e).__name__}: {_short(e)}" for e in failures)
    raise SlideOpenError(label, f"no reader could open it ({reasons})") from ExceptionGroup(
        f"{label}: every backend failed", failures
    )


def _backend_of(exc: Exception) -> str:
    notes = getattr(exc, "__notes__", [])
    return notes[-1].removeprefix("backend: ") if notes else "?"


_BYTES_REPR = re.compile(r"""b(['"]).*?(?<!\\)\1""")


def _short(exc: BaseException) -> str:
    """A backend's message, one line, without any bytes of the file (decoders quote the
    header they did not recognise: ``header=b'root'`` for /etc/passwd)."""
    if isinstance(exc, SlideError):
        return exc.reason[:200]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    return _BYTES_REPR.sub("<file bytes omitted>", text)[:200]


def _open_with(
    handle: SlideHandle,
    label: str,
    target: str,
    fileobj: IO[bytes] | None,
    meta: VendorMetadata,
    tiff: bool,
    info: ObjectInfo,
    access: str,
    staged: Any,
) -> Slide:
    name, backend = _try_backends(handle, label, target, fileobj, tiff, access)
    try:
        metadata = _metadata(handle, label, backend, name, meta, tiff, info, access)
    except BaseException:
        backend.close()
        raise
    on_close = fileobj.close if fileobj is not None else None
    return Slide(handle, backend, metadata, label, staged=staged, on_close=on_close)


def canonical_downsamples(dims: tuple[tuple[int, int], ...]) -> tuple[float, ...]:
    """Mean of the width and height ratios (OpenSlide's definition), for every backend alike.

    Backends disagree in the last digits (cuCIM stores float32); one definition keeps the
    level-0 ↔ level mapping and the reported metadata identical whichever backend reads.
    """
    w0, h0 = dims[0]
    return tuple(1.0 if i == 0 else (w0 / w + h0 / h) / 2 for i, (w, h) in enumerate(dims))


def _metadata(
    handle: SlideHandle,
    label: str,
    backend: BackendSlide,
    reader: str,
    meta: VendorMetadata,
    tiff: bool,
    info: ObjectInfo,
    access: str,
) -> SlideMetadata:
    props = backend.vendor_properties
    if not tiff:
        # Non-TIFF formats (MRXS, DICOM, ...) are parsed only by the backend; trust it there.
        # For TIFF containers the backend's values derive from the same tags we read, and
        # ignoring them keeps the MPP *source* identical whichever backend opened the slide.
        meta.openslide_mpp = props.get("mpp")
        meta.openslide_objective = props.get("objective_power")
        meta.vendor = props.get("vendor")
    mpp = None
    try:
        mpp = resolve_mpp(label, meta, handle.mpp)
    except MissingMPPError:
        # Planning needs an MPP, metadata-only callers (``slidebank info``) do not. Only a
        # missing MPP is tolerated here; a parsing bug must surface, not become mpp=None.
        if handle.require_mpp or handle.mpp is not None:
            raise
    return SlideMetadata(
        uri=label,
        reader=reader,
        vendor=sanitize_short_text(meta.vendor),
        level_count=len(backend.level_dimensions),
        level_dimensions=backend.level_dimensions,
        level_downsamples=canonical_downsamples(backend.level_dimensions),
        mpp_x=mpp.x if mpp else None,
        mpp_y=mpp.y if mpp else None,
        mpp_source=mpp.source if mpp else None,
        objective_power=objective_power(meta),
        tile_size=backend.tile_size,
        scanner_model=sanitize_short_text(scanner_model(meta)),
        size_bytes=info.size,
        etag=info.etag,
        access=access,  # type: ignore[arg-type]
    )
