"""`perf script` text for tracepoints (Debian bookworm's perf 6.1 layout).

Default tracepoint fields (tools/perf/builtin-script.c): comm `"%16s "`, tid
`"%5d "` (perf >= 6.5: `%7d`) — no dash between them —, `-F pid,tid` gives
`pid/tid`, `"[%03d] "`, time `secs.µs:` (`--ns`: 9 digits), the event as
`system:name:`, then libtraceevent's pretty print of the body (the same text
trace-cmd prints).  comm may contain blanks, so the tid is anchored from the
right against ` [cpu] time: sys:event:`.
"""
from __future__ import annotations

import pyarrow as pa

from . import known_events as ke
from .text_common import LINE_END, Marker, TextTrace, _map_strings

LINE_RE = (
    r"^(?P<comm>.*)\s(?P<pid>\d+)(?:/(?P<tid>\d+))?\s+"
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?P<ts_s>\d+)(?:\.(?P<ts_f>\d+))?:"
    r"\s+(?P<event>[^\s:]+:[^\s:]+):" + LINE_END
)

FAST_RE = LINE_RE.replace(r"^(?P<comm>.*)\s", r"^(?P<comm>.{16})\s", 1)
assert FAST_RE != LINE_RE


class PerfScript(TextTrace):
    FORMAT = "perf-script"
    LINE_RE = LINE_RE
    FAST_RE = FAST_RE

    def __init__(self, path: str):
        super().__init__(path)
        self.meta.extra["pid_tid_column"] = bool(self._groups["tid"].null_count < len(self._groups["tid"]))

    def other_line(self, text: str, lineno: int) -> Marker | None:
        if not text.strip() or text.startswith("#"):
            return None        # `perf script --header` lines
        raise self.bad_line(lineno, text, "not a perf script tracepoint line")

    def rename_events(self, events: pa.Array, bodies: pa.Array):
        names = events.unique().to_pylist()
        mapping = {}
        for n in names:
            known = ke.lookup(n)
            mapping[n] = known.full_name if known else n
        return _map_strings(events, mapping), bodies
