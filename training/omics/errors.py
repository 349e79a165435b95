"""Typed errors for omics tables, mappings and signatures.

They refine :class:`infra.errors.SlidebankError` and a builtin (``ValueError``), so a
caller can catch the specific class, ``SlidebankError`` or ``ValueError``. Table errors
carry the file and, where one is to blame, the row and column, because the person who
has to fix a 20 000-row matrix needs to know exactly where to look.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.errors import SlidebankError

__all__ = [
    "InsufficientGenesError",
    "MappingError",
    "OmicsError",
    "OmicsTableError",
    "SignatureError",
]


class OmicsError(SlidebankError):
    """Base class of errors about omics data."""


class OmicsTableError(OmicsError, ValueError):
    """A table (expression matrix, mapping, signature file) is malformed.

    ``file`` names the table, ``row`` and ``column`` the offending cell or label when
    one is to blame, ``line`` the 1-based line of a text file when it is known.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: object = None,
        column: object = None,
        line: int | None = None,
    ) -> None:
        self.file = file
        self.row = row
        self.column = column
        self.line = line
        self.reason = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row!r}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        head = self.file or "<table>"
        if where:
            head += f" ({', '.join(where)})"
        return f"{head}: {self.reason}"

    def __reduce__(self):  # keep the attributes through pickling (Ray workers)
        return (
            _rebuild_table_error,
            (type(self), self.reason, self.file, self.row, self.column, self.line),
        )


def _rebuild_table_error(cls, message, file, row, column, line):
    return cls(message, file=file, row=row, column=column, line=line)


class MappingError(OmicsTableError):
    """A sample → patient → slide mapping is missing or contradicts itself."""


class SignatureError(OmicsError, ValueError):
    """A signature is unknown or its definition is invalid."""


class InsufficientGenesError(SignatureError):
    """Too few of a signature's genes are present in the expression matrix to score it."""

    def __init__(
        self,
        signature: str,
        present: Sequence[str],
        missing: Sequence[str],
        required: int,
        hint: str = "",
    ) -> None:
        self.signature = signature
        self.present = tuple(present)
        self.missing = tuple(missing)
        self.required = required
        self.hint = hint
        total = len(self.present) + len(self.missing)
        message = (
            f"signature {signature!r}: only {len(self.present)} of {total} genes present "
            f"(need {required}); missing {', '.join(self.missing)}"
        )
        super().__init__(message + (f". {hint}" if hint else ""))

    def __reduce__(self):
        return (
            type(self),
            (self.signature, self.present, self.missing, self.required, self.hint),
        )
