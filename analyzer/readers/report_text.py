"""`trace-cmd report` text (trace-cmd 3.1 and 3.3 layouts, default / -t / -R).

Line layout (tracecmd/trace-read.c `trace_show_data`): optional `"%*s: "`
instance/file prefix, `"%16s-%-5d [%03d]"` comm-pid-cpu, then since 3.3 the
latency flags (`" d..1."`, or `-0x%x` glued to the CPU with -R), the time
(`" %6.1000d:"` seconds.µs, `-t` nanoseconds, raw counts for counter clocks),
the event name without its system, and the body: pretty print, or `name=value`
per field with -R.  A `CPU:N [K EVENTS DROPPED]` line precedes the first record
after a gap.  On arm64 the kmem print formats use `memstart_addr`, which
trace-cmd cannot evaluate: it prints `[FAILED TO PARSE]` followed by the raw
fields, which we read like -R output and count in `notes()`.
"""
from __future__ import annotations

import re

import numpy as np

from .text_common import LINE_END, Marker, TextTrace

LINE_RE = (
    r"^(?:\s*(?P<inst>[^\s:]+): )?"
    r"(?P<comm>.*)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]"
    r"(?:-0x(?P<rflags>[0-9a-fA-F]+))?"
    r"(?:\s+(?P<flags>[^\s\d]\S*))?"
    r"\s+(?P<ts_s>\d+)(?:\.(?P<ts_f>\d+))?:"
    r"\s+(?P<event>[^\s:]+):" + LINE_END
)

# comm is at most 15 bytes (TASK_COMM_LEN) printed %16s, so without an instance
# prefix it fills exactly 16 columns: a fixed-width comm makes RE2 about twice as
# fast; misses (prefixes, multi-byte comms) are retried with LINE_RE.
FAST_RE = LINE_RE.replace(r"^(?:\s*(?P<inst>[^\s:]+): )?(?P<comm>.*)-", r"^(?P<inst>)(?P<comm>.{16})-", 1)
assert FAST_RE != LINE_RE

_PREFIX = r"^(?:\s*(?P<inst>[^\s:]+): )?\s*"
_CPUS = re.compile(_PREFIX + r"cpus=(?P<n>\d+)\s*$")
_DROPPED = re.compile(_PREFIX + r"CPU:(?P<cpu>\d+) \[(?:(?P<n>\d+) )?EVENTS DROPPED\]\s*$")
_SUBBUF = re.compile(_PREFIX + r"CPU:(?P<cpu>\d+) \[SUBBUFFER START\]")


class ReportText(TextTrace):
    FORMAT = "trace-cmd-report"
    LINE_RE = LINE_RE
    FAST_RE = FAST_RE

    def __init__(self, path: str):
        self._cpus: list[int] = []
        self._instances: list[str] = []
        super().__init__(path)
        g = self._groups
        if self._cpus:
            self.meta.cpus = max(self._cpus)
        has_flags = bool(g["flags"].null_count < len(g["flags"])) or bool(g["rflags"].null_count < len(g["rflags"]))
        self.meta.extra["report_layout"] = "3.3 (flags column)" if has_flags else "3.1 (no flags column)"
        inst = [x for x in g["inst"].unique().to_pylist() if x]
        self.meta.buffers = sorted(set(inst) | set(self._instances))
        self.meta.extra["dropped_markers"] = int(sum(1 for m in self.markers if m.kind == "lost"))
        if len(np.unique(self._cpu)) and self.meta.cpus and int(self._cpu.max()) >= self.meta.cpus:
            raise self.bad_line(int(self._line_no[int(np.argmax(self._cpu))]), None,
                                f"CPU {int(self._cpu.max())} but the header says cpus={self.meta.cpus}")

    def other_line(self, text: str, lineno: int) -> Marker | None:
        if not text.strip():
            return None
        m = _CPUS.match(text)
        if m:
            self._cpus.append(int(m["n"]))
            if m["inst"]:
                self._instances.append(m["inst"])
            return None
        m = _DROPPED.match(text)
        if m:
            return Marker(lineno, "lost", int(m["cpu"]), int(m["n"]) if m["n"] else -1)
        m = _SUBBUF.match(text)
        if m:
            return Marker(lineno, "subbuffer-start", int(m["cpu"]))
        if text.startswith("version = ") or self.continuation(text):
            return None
        raise self.bad_line(lineno, text, "not a trace-cmd report line")
