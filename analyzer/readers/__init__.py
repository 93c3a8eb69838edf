"""Trace readers: pick the reader by content (magic bytes / first lines), never by file name."""
from __future__ import annotations

import os

from ..errors import TraceFormatError
from .base import COMMON_COLUMNS, EventFormat, FieldFormat, Trace, TraceMeta
from .tracedat_header import MAGIC as TRACEDAT_MAGIC
PERF_MAGIC, PERF_MAGIC_BE = b"PERFILE2", b"2ELIFREP"     # perf.data (file and pipe mode)

__all__ = ["load", "sniff", "Trace", "TraceMeta", "EventFormat", "FieldFormat", "COMMON_COLUMNS"]


def sniff(path: str) -> str:
    """Return the format name of `path`: "trace.dat", "perf.data", "ftrace-text", "trace-cmd-report",
    "perf-script"."""
    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
    except IsADirectoryError:
        raise TraceFormatError(path, "file", None, "is a directory, not a trace file") from None
    except OSError as e:
        raise TraceFormatError(path, "file", None, e.strerror or str(e)) from None
    if not head:
        raise TraceFormatError(path, "file", 0, "empty file")
    if head.startswith(TRACEDAT_MAGIC):
        return "trace.dat"
    if head[:8] in (PERF_MAGIC, PERF_MAGIC_BE):
        return "perf.data"
    if head[:3] == TRACEDAT_MAGIC[:3]:
        raise TraceFormatError(path, "header", 0, "bad trace.dat magic")
    from . import textsniff
    kind = textsniff.sniff_text(head)
    if kind is None:
        raise TraceFormatError(path, "file", 0, "not a trace.dat, ftrace text, trace-cmd report, perf script or perf.data file")
    return kind


def load(path: str | os.PathLike) -> Trace:
    """Open a trace of any supported format."""
    path = os.fspath(path)
    kind = sniff(path)
    if kind == "trace.dat":
        from .tracedat import TraceDat
        return TraceDat(path)
    if kind == "perf.data":
        from .perfdata import PerfData
        return PerfData(path)
    if kind == "ftrace-text":
        from .ftrace_text import FtraceText
        return FtraceText(path)
    if kind == "trace-cmd-report":
        from .report_text import ReportText
        return ReportText(path)
    if kind == "perf-script":
        from .perf_script import PerfScript
        return PerfScript(path)
    raise TraceFormatError(path, "file", 0, f"no reader for {kind}")
