"""The kernel's own text output: /sys/kernel/tracing/trace and trace_pipe.

Layout (kernel/trace/trace_output.c): `"%16s-%-7d "` comm-pid (`%-5d` on old
kernels), an optional `"(%7d) "` TGID column (option record-tgid, `(-------)`
when unknown), `"[%03d] "`, the irq-info flags when that option is on (4, 5 or
more characters), `" %5lu.%06lu: "` µs time (raw counts for counter clocks),
the event name without its system, and the pretty-printed body.  Markers:
`CPU:N [LOST N EVENTS]` before the first record after a gap, and with option
annotate `##### CPU N buffer started ####` when a CPU's oldest data was
overwritten.  The kernel hashes `%p` values, so pointer fields are null here.
"""
from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from . import known_events as ke
from .text_common import LINE_END, Marker, TextTrace, _map_strings

LINE_RE = (
    r"^(?P<comm>.*)-(?P<pid>\d+)\s+"
    r"(?:\(\s*(?P<tgid>-+|\d+)\)\s+)?"
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s\d]\S*)\s+)?"
    r"(?P<ts_s>\d+)(?:\.(?P<ts_f>\d+))?:"
    r"\s(?P<event>[^\s:]+):" + LINE_END
)

FAST_RE = LINE_RE.replace(r"^(?P<comm>.*)-", r"^(?P<comm>.{16})-", 1)
assert FAST_RE != LINE_RE

_LOST = re.compile(r"^CPU:(?P<cpu>\d+) \[LOST (?P<n>\d+) EVENTS\]\s*$")
_STARTED = re.compile(r"^##### CPU (?P<cpu>\d+) buffer started ####\s*$")
_NCPU = re.compile(r"#P:(?P<n>\d+)")
_ENTRIES = re.compile(r"entries-in-buffer/entries-written: (?P<a>\d+)/(?P<b>\d+)")
_TRACER = re.compile(r"^# tracer: (?P<t>\S+)")


class FtraceText(TextTrace):
    FORMAT = "ftrace-text"
    LINE_RE = LINE_RE
    FAST_RE = FAST_RE
    HASHED_POINTERS = True

    def __init__(self, path: str):
        super().__init__(path)
        g = self._groups
        self.meta.extra["irq_info"] = bool(g["flags"].null_count < len(g["flags"]))
        self.meta.extra["tgid_column"] = bool(g["tgid"].null_count < len(g["tgid"]))
        self.meta.extra["source"] = "trace" if "tracer" in self.meta.extra else "trace_pipe (no header)"

    def other_line(self, text: str, lineno: int) -> Marker | None:
        if not text.strip():
            return None
        m = _LOST.match(text)
        if m:
            return Marker(lineno, "lost", int(m["cpu"]), int(m["n"]))
        m = _STARTED.match(text)
        if m:
            return Marker(lineno, "buffer-started", int(m["cpu"]))
        if text.startswith("#"):
            if (m := _TRACER.match(text)):
                self.meta.extra["tracer"] = m["t"]
            if (m := _NCPU.search(text)):
                self.meta.cpus = int(m["n"])
            if (m := _ENTRIES.search(text)):
                in_buf, written = int(m["a"]), int(m["b"])
                self.meta.extra["entries_in_buffer"] = in_buf
                self.meta.extra["entries_written"] = written
            return None
        if self.continuation(text):
            return None
        raise self.bad_line(lineno, text, "not a kernel trace line")

    def rename_events(self, events: pa.Array, bodies: pa.Array):
        """trace_marker records print as `tracing_mark_write: text`: make them ftrace:print."""
        names = events.unique().to_pylist()
        is_print = pc.is_in(events, value_set=pa.array(sorted(ke.PRINT_ALIASES), type=events.type))
        if pc.any(is_print).as_py():
            fixed = pc.binary_join_element_wise(events, pc.utf8_ltrim_whitespace(bodies), pa.scalar(": ", events.type))
            bodies = pc.if_else(is_print, fixed, bodies)
        mapping = {n: ("ftrace:print" if n in ke.PRINT_ALIASES else ke.full_name(n)) for n in names}
        return _map_strings(events, mapping), bodies
