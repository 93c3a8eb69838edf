"""`perf script` text for tracepoints (Debian bookworm's perf 6.1 layout).

Default tracepoint fields (tools/perf/builtin-script.c): comm `"%16s "`, tid
`"%5d "` (perf >= 6.5: `%7d`) — no dash between them —, `-F pid,tid` gives
`pid/tid`, `"[%03d] "`, time `secs.µs:` (`--ns`: 9 digits), the event as
`system:name:`, then libtraceevent's pretty print of the body (the same text
trace-cmd prints).  comm may contain blanks, so the tid is anchored from the
right against ` [cpu] time: sys:event:`.  A sample perf cannot tie to a thread prints comm
`:-1` and tid `-1` (seen on real captures under heavy churn): pid -1, like perf.data's.
"""
from __future__ import annotations

import re

import pyarrow as pa

from . import known_events as ke
from .text_common import LINE_END, Marker, TextTrace, _map_strings

LINE_RE = (
    r"^(?P<comm>.*)\s(?P<pid>-?\d+)(?:/(?P<tid>-?\d+))?\s+"
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?P<ts_s>\d+)(?:\.(?P<ts_f>\d+))?:"
    r"\s+(?P<event>[^\s:]+:[^\s:]+):" + LINE_END
)

FAST_RE = LINE_RE.replace(r"^(?P<comm>.*)\s", r"^(?P<comm>.{16})\s", 1)
assert FAST_RE != LINE_RE


_LOST_RE = re.compile(r"^(?P<comm>.*)\s(?P<pid>-?\d+)(?:/-?\d+)?\s+\[(?P<cpu>\d+)\]\s+[\d.]+:\s+"
                      r"PERF_RECORD_LOST lost (?P<n>\d+)\s*$")
_CHUNKS_RE = re.compile(r"^Processed (?P<ev>\d+) events and lost (?P<n>\d+) chunks!")
_PCT_RE = re.compile(r"^Processed (?P<ev>\d+) samples and lost (?P<pct>[\d.]+)\s*%!")
_WARN_LINES = ("Warning:", "Check IO/CPU overload!")


class PerfScript(TextTrace):
    FORMAT = "perf-script"
    LINE_RE = LINE_RE
    FAST_RE = FAST_RE

    def __init__(self, path: str):
        self._summary: list[tuple[int, str, float]] = []    # (line, "chunks" | "percent", value)
        super().__init__(path)
        self.meta.extra["pid_tid_column"] = bool(self._groups["tid"].null_count < len(self._groups["tid"]))
        chunk_lines = sum(1 for m in self.markers if m.kind == "lost")
        self.meta.extra["lost_chunk_lines"] = chunk_lines
        for _, kind, v in self._summary:
            self.meta.extra["perf_lost_chunks" if kind == "chunks" else "perf_lost_percent"] = v
        said_chunks = max((v for _, k, v in self._summary if k == "chunks"), default=0)
        if (said_chunks > chunk_lines or any(k == "percent" for _, k, _v in self._summary)) and not chunk_lines:
            line = self._summary[0][0]
            self.markers.append(Marker(line, "lost", -1, -1))
            self._lost = self._lost_table()

    def other_line(self, text: str, lineno: int) -> Marker | None:
        if not text.strip() or text.startswith("#"):
            return None        # `perf script --header` lines
        m = _LOST_RE.match(text)
        if m:
            return Marker(lineno, "lost", int(m["cpu"]), int(m["n"]))
        s = text.strip()
        m = _CHUNKS_RE.match(s)
        if m:
            self._summary.append((lineno, "chunks", int(m["n"])))
            return None
        m = _PCT_RE.match(s)
        if m:
            if float(m["pct"]) > 0:
                self._summary.append((lineno, "percent", float(m["pct"])))
            return None
        if s in _WARN_LINES:
            return None
        raise self.bad_line(lineno, text, "not a perf script tracepoint line")

    def rename_events(self, events: pa.Array, bodies: pa.Array):
        names = events.unique().to_pylist()
        mapping = {}
        for n in names:
            known = ke.lookup(n)
            mapping[n] = known.full_name if known else n
        return _map_strings(events, mapping), bodies
