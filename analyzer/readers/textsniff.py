"""Tell the text trace formats apart from their first lines (content, never the file name).

Decisive signs, checked line by line: `cpus=N` (trace-cmd report's first line),
`# tracer:` / `#P:` headers (kernel trace file), perf's `# perf version` header
or an event written `system:name:` with no dash before the pid (perf script),
an instance prefix or 9-digit time (report -t) or `[001]-0x1` flags (report -R
3.3), a `(TGID)` column or `[LOST N EVENTS]` / `buffer started` markers (kernel).
Headerless `comm-pid [cpu] time: event:` lines are trace_pipe output.
"""
from __future__ import annotations

import re

_PERF = re.compile(r"^.*\s\d+(?:/\d+)?\s+\[\d+\]\s+\d+(?:\.\d+)?:\s+[^\s:]+:[^\s:]+:")
_COMMON = r"^(?:\s*(?P<inst>[^\s:]+): )?(?P<comm>.*)-\d+\s+(?P<tgid>\(\s*(?:-+|\d+)\)\s+)?\[\d+\](?P<rflags>-0x[0-9a-fA-F]+)?(?:\s+[^\s\d]\S*)?\s+\d+(?P<frac>\.\d+)?:\s+[^\s:]+:"
_EVENT = re.compile(_COMMON)


def sniff_text(head: bytes) -> str | None:
    """"ftrace-text", "trace-cmd-report", "perf-script", or None if none of them."""
    if b"\0" in head:
        return None
    text = head.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if len(head) >= 64 * 1024 and len(lines) > 1:
        lines = lines[:-1]         # last line may be cut by the read size
    ftrace_lines = 0
    for line in lines[:400]:
        line = line.rstrip("\r")
        s = line.strip()
        if not s:
            continue
        if re.match(r"^(?:\S+: )?cpus=\d+$", s):
            return "trace-cmd-report"
        if s.startswith("#"):
            if s.startswith("# tracer:") or "#P:" in s or "entries-in-buffer" in s or s.startswith("#####"):
                return "ftrace-text"
            if "perf version" in s or s.startswith("# captured on") or s.startswith("# ========"):
                return "perf-script"
            continue
        if re.match(r"^CPU:\d+ \[LOST \d+ EVENTS\]$", s):
            return "ftrace-text"
        if re.match(r"^(?:\S+: )?CPU:\d+ \[(?:\d+ )?EVENTS DROPPED\]$", s):
            return "trace-cmd-report"
        m = _EVENT.match(line)
        if m:
            if m["inst"] or m["rflags"] or (m["frac"] and len(m["frac"]) == 10):
                return "trace-cmd-report"
            if m["tgid"]:
                return "ftrace-text"
            ftrace_lines += 1
            if ftrace_lines >= 3:
                break
            continue
        if _PERF.match(line):
            return "perf-script"
        return None
    return "ftrace-text" if ftrace_lines else None
