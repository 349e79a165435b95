"""Annotation errors: each names the file and, where one is to blame, the feature.

They refine :class:`infra.errors.SlidebankError` and ``ValueError`` (conventions, rule 2),
so the CLI prints one line and exits 2, and Python callers may catch ``ValueError``.
"""

from __future__ import annotations

from infra.errors import SlidebankError

__all__ = [
    "AnnotationBoundsError",
    "AnnotationError",
    "AnnotationFileNotFoundError",
    "AnnotationFormatError",
    "EmptyAnnotationError",
    "MaskMPPError",
    "UnknownClassError",
]


class AnnotationError(SlidebankError, ValueError):
    """An annotation file cannot be imported as given."""


class AnnotationFileNotFoundError(AnnotationError, FileNotFoundError):
    """The annotation file does not exist."""


class AnnotationFormatError(AnnotationError):
    """The file, or one feature in it, is not a readable polygon annotation."""


class EmptyAnnotationError(AnnotationError):
    """The file holds no annotation with an area."""


class AnnotationBoundsError(AnnotationError):
    """A feature's coordinates fall outside the slide."""


class UnknownClassError(AnnotationError):
    """A feature's class is not in the class list given for the import."""


class MaskMPPError(AnnotationError):
    """A mask's microns per pixel is missing, invalid, or does not fit the slide."""
