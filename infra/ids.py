"""Slide identifiers: validated before they ever touch a path."""

from __future__ import annotations

import hashlib
import re

from infra.errors import InvalidSlideIdError

__all__ = ["SLIDE_ID_PATTERN", "slide_id_from_uri", "validate_slide_id"]

SLIDE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def validate_slide_id(slide_id: object) -> str:
    """Return ``slide_id`` unchanged if it is safe to use as a path component.

    Refuses anything outside ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``: path separators,
    ``..``, absolute paths, empty strings, and names made only of dots.
    """
    if not isinstance(slide_id, str) or not SLIDE_ID_PATTERN.fullmatch(slide_id):
        raise InvalidSlideIdError(
            f"invalid slide id {slide_id!r}: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}"
        )
    return slide_id


def slide_id_from_uri(uri: str) -> str:
    """Derive a slide id from the file name of ``uri`` (extension dropped).

    A name with characters outside the allowed set is sanitized and suffixed with a
    short hash of the original name, so two different unsafe names never collide.
    """
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    stem = name.split(".", 1)[0] if not name.startswith(".") else name.lstrip(".")
    candidate = stem[:128]
    if SLIDE_ID_PATTERN.fullmatch(candidate):
        return candidate
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    cleaned = _UNSAFE.sub("_", stem).strip("._-")[:119] or "slide"
    return validate_slide_id(f"{cleaned}-{digest}")
