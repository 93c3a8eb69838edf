"""Helpers for the text-reader tests: real `trace-cmd report` outputs and table comparison.

The line generators below follow the printf formats of the tools (trace-cmd
trace-read.c `"%16s-%-5d [%03d]"`, kernel trace_output.c `"%16s-%-7d "`, perf
builtin-script.c `"%16s %5d [%03d]"`); test_text_* checks them against real
output of those tools before using them for layouts we cannot produce here.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pyarrow as pa

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CAPTURES_DIR = os.path.join(ROOT, "fixtures", "captures")
TEXT_DIR = os.path.join(ROOT, "fixtures", "text")
CAPTURES = ["custom-6.1-x86_64-cmadebugfs", "debian-6.12-arm64-cma-churn", "debian-6.1-arm64-cma-churn"]
REPORT_VARIANTS = {"default": [], "R": ["-R"], "tR": ["-t", "-R"]}

# Fields that text output prints symbolically, so a text table has null there.
SYMBOLIC = {("ftrace:print", "ip"), ("kmem:mm_page_alloc", "gfp_flags")}


def have_tracecmd() -> bool:
    return shutil.which("trace-cmd") is not None


def capture(name: str) -> str:
    return os.path.join(CAPTURES_DIR, name, "trace.dat")


def report(dat: str, out: str, opts: list[str]) -> str:
    with open(out, "wb") as f:
        subprocess.run(["trace-cmd", "report", *opts, "-i", dat], stdout=f, stderr=subprocess.DEVNULL, check=True)
    return out


def assert_same_as_binary(text_trace, bin_trace, ts_tol: int) -> dict:
    """Every event's rows equal the trace.dat reader's: seq, ts (within ts_tol), cpu, pid, comm, fields.

    A text value may be null only where the reader reported it unparsed (and only
    for fields that text prints symbolically).  Returns counts for the caller.
    """
    assert text_trace.events() == bin_trace.events()
    notes = text_trace.notes()
    checked = {"records": 0, "values": 0}
    for ev, n in text_trace.events().items():
        ta, tb = text_trace.table(ev), bin_trace.table(ev)
        assert ta.schema.names == tb.schema.names, ev
        assert ta.schema.types == tb.schema.types, ev
        unparsed = (notes.get(ev) or {}).get("unparsed_fields", {})
        for col in ta.schema.names:
            x, y = ta.column(col), tb.column(col)
            if col == "ts":
                d = np.abs(x.to_numpy().astype(np.int64) - y.to_numpy().astype(np.int64))
                assert int(d.max()) <= ts_tol, (ev, int(d.max()))
                continue
            ok = x.is_valid().to_numpy(zero_copy_only=False)
            nulls = int((~ok).sum())
            if nulls:
                assert (ev, col) in SYMBOLIC, (ev, col, nulls)
                assert unparsed[col]["count"] == nulls
            xv = x.filter(pa.array(ok)).to_pylist()
            yv = y.filter(pa.array(ok)).to_pylist()
            if col == "buf":       # trace-cmd drops the trailing newline of trace_marker text
                yv = [v.rstrip("\n") for v in yv]
            assert xv == yv, (ev, col, next((a, b) for a, b in zip(xv, yv) if a != b))
            checked["values"] += len(xv)
        checked["records"] += n
    return checked


# -- line generators (printf formats of the real tools) ---------------------------------------

def _us(ts: int) -> tuple[int, int]:
    us = (ts + 500) // 1000
    return us // 1_000_000, us % 1_000_000


def report_line(comm: str, pid: int, cpu: int, ts: int, name: str, body: str, *,
                ns: bool = False, flags: str | None = None, rflags: int | None = None,
                raw: bool = False) -> str:
    """trace-cmd report: 3.1 layout, or 3.3 with `flags` (default) / `rflags` (-R, glued)."""
    head = f"{comm:>16}-{pid:<5} [{cpu:03d}]"
    if rflags is not None:
        head += f"-0x{rflags:x}"
    elif flags is not None:
        head += f" {flags}"
    if ns:
        t = f" {ts // 1_000_000_000:5d}.{ts % 1_000_000_000:09d}:"
    else:
        s, us = _us(ts)
        t = f" {s:5d}.{us:06d}:"
    return head + t + f" {name + ':':<21} " + (" " if raw else "") + body


def kernel_line(comm: str, pid: int, cpu: int, ts: int, name: str, body: str, *,
                flags: str | None = "....", tgid: int | None | str = "none") -> str:
    """/sys/kernel/tracing/trace: `%16s-%-7d `, optional `(%7d) `, `[%03d] `, flags, ` %5lu.%06lu: `."""
    s, us = _us(ts)
    line = f"{comm:>16}-{pid:<7} "
    if tgid != "none":
        line += "(-------) " if tgid is None else f"({tgid:>7}) "
    line += f"[{cpu:03d}] " + (flags or "") + f" {s:5d}.{us:06d}: {name}: {body}"
    return line


def perf_line(comm: str, tid: int, cpu: int, ts: int, event: str, body: str, *, ns: bool = False,
              tid_width: int = 5) -> str:
    """perf script (6.1: tid %5d; >= 6.5: %7d), no dash between comm and tid."""
    if ns:
        t = f"{ts // 1_000_000_000:5d}.{ts % 1_000_000_000:09d}"
    else:                       # perf truncates to µs (trace-cmd and the kernel round)
        t = f"{ts // 1_000_000_000:5d}.{ts % 1_000_000_000 // 1000:06d}"
    return f"{comm:>16} {tid:>{tid_width}} [{cpu:03d}] {t}: {event}: {body}"
