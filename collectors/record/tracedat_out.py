"""Write a trace-cmd trace.dat (version 6, flyrecord) from raw ring-buffer pages.

The pages are what per_cpu/cpuN/trace_pipe_raw gave, byte for byte; the metadata is what
tracefs says about them (header_page, header_event, the formats of the enabled events,
saved_cmdlines, trace_clock, uname, per-CPU stats).  v6 keeps the writer simple and every
trace-cmd since 2010 reads it (`trace-cmd report` is the judge in the tests).
"""
from __future__ import annotations

import os
import platform
import shutil
import struct

MAGIC = b"\x17\x08\x44tracing"
OPT_CPUSTAT, OPT_TRACECLOCK, OPT_UNAME, OPT_CPUCOUNT = 2, 4, 5, 8


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _block64(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def uname_line() -> str:
    """`uname -s -n -r -v -m`, what trace-cmd stores in its UNAME option."""
    u = platform.uname()
    return f"{u.system} {u.node} {u.release} {u.version} {u.machine}"


def metadata(root: str, inst: str, events: list[str], page_size: int, ncpu: int, stats: dict[int, str]) -> bytes:
    """Everything before the page data: header, formats, cmdlines, options, flyrecord tag."""
    out = bytearray(MAGIC + b"6\0" + bytes([0, struct.calcsize("l")]) + struct.pack("<I", page_size))
    evdir = os.path.join(inst, "events")
    out += b"header_page\0" + _block64(_read(os.path.join(evdir, "header_page")))
    out += b"header_event\0" + _block64(_read(os.path.join(evdir, "header_event")))
    fdir = os.path.join(evdir, "ftrace")
    ftrace = [os.path.join(fdir, e, "format") for e in sorted(os.listdir(fdir))
              if os.path.isfile(os.path.join(fdir, e, "format"))] if os.path.isdir(fdir) else []
    out += struct.pack("<I", len(ftrace))
    for p in ftrace:
        out += _block64(_read(p))
    systems: dict[str, list[str]] = {}
    for ev in events:
        s, _, n = ev.partition(":")
        systems.setdefault(s, []).append(n)
    out += struct.pack("<I", len(systems))
    for s, names in systems.items():
        out += s.encode() + b"\0" + struct.pack("<I", len(names))
        for n in names:
            out += _block64(_read(os.path.join(evdir, s, n, "format")))
    out += struct.pack("<I", 0)                       # kallsyms: not needed for raw fields
    out += struct.pack("<I", 0)                       # printk formats
    try:
        cmdlines = _read(os.path.join(root, "saved_cmdlines"))
    except OSError:
        cmdlines = b""
    out += _block64(cmdlines)
    out += struct.pack("<I", ncpu)
    out += b"options  \0"
    opts = [(OPT_UNAME, uname_line().encode() + b"\0"),
            (OPT_TRACECLOCK, _read(os.path.join(inst, "trace_clock"))),
            (OPT_CPUCOUNT, struct.pack("<I", ncpu))]
    for cpu in sorted(stats):
        opts.append((OPT_CPUSTAT, f"CPU: {cpu}\n{stats[cpu]}".encode() + b"\0"))
    for oid, body in opts:
        out += struct.pack("<HI", oid, len(body)) + body
    out += struct.pack("<H", 0)
    out += b"flyrecord\0"
    return bytes(out)


def write(path: str, meta: bytes, raw_files: list[str], page_size: int) -> None:
    """meta + per-CPU (offset, size) table + page-aligned per-CPU page data, into `path` (new file)."""
    sizes = [os.path.getsize(p) for p in raw_files]      # whole pages (pages.py pads short reads)
    pos = len(meta) + 16 * len(raw_files)
    offsets = []
    for s in sizes:
        pos = -(-pos // page_size) * page_size
        offsets.append(pos)
        pos += s
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(meta)
        for o, s in zip(offsets, sizes):
            f.write(struct.pack("<QQ", o, s))
        for o, _s, p in zip(offsets, sizes, raw_files):
            f.write(b"\0" * (o - f.tell()))
            with open(p, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
