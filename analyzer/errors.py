"""Errors that the CLI turns into one line and exit code 2 (never a traceback)."""
from __future__ import annotations


class MtauditError(Exception):
    """Base class: anything the user can fix (bad input, bad usage, missing tool)."""


class TraceFormatError(MtauditError):
    """A trace file is malformed or unsupported.

    Carries the file, the section being read and the byte offset, because a kernel
    developer handed a broken trace.dat wants to know *where* it broke.
    """

    def __init__(self, path: str, section: str, offset: int | None, message: str):
        self.path = str(path)
        self.section = section
        self.offset = offset
        self.message = message
        where = f"{section}" + (f" at byte {offset}" if offset is not None else "")
        super().__init__(f"{self.path}: {where}: {message}")


class UnknownEventError(MtauditError, KeyError):
    """The trace has no format for the requested event."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want plain text
        return str(self.args[0]) if self.args else "unknown event"
