"""Walk the trace.dat structure (v6 sequential blocks, v7 sections + OPTIONS chain) into a Header.

v6 and v7 carry the same payloads (header_page, formats, cmdlines, options); v7 only moves
them into optionally compressed sections reached through the OPTIONS chain.  Both paths end
in the same `Header`, so the page reader never needs to know the file version.
"""
from __future__ import annotations

import re

from ..errors import TraceFormatError
from .tracedat_header import (
    MAGIC, OPT_BUFFER, OPT_BUFFER_TEXT, OPT_CMDLINES, OPT_CPUCOUNT, OPT_DATE, OPT_DONE,
    OPT_EVENT_FORMATS, OPT_FTRACE_EVENTS, OPT_HEADER_INFO, OPT_OFFSET, OPT_TRACECLOCK,
    OPT_TSC2NSEC, OPT_UNAME, OPT_VERSION, SECTION_COMPRESSED, BufferInfo, CpuData, Cursor,
    Decompressor, Header, LazyEventFormat, parse_cmdlines, parse_header_page,
)

SUPPORTED_VERSIONS = (6, 7)
MAX_OPTION_SECTIONS = 4096


def parse(path: str, data) -> Header:
    """Parse all metadata of the trace.dat whose bytes (mmap or bytes) are `data`."""
    if len(data) == 0:
        raise TraceFormatError(path, "file", 0, "empty file")
    c = Cursor(path, data, 0, "little", "header")
    if bytes(data[:len(MAGIC)]) != MAGIC:
        c.fail("bad trace.dat magic", 0)
    c.pos = len(MAGIC)
    vs = c.cstr(16)
    if not vs.isdigit() or int(vs) not in SUPPORTED_VERSIONS:
        c.fail(f"unsupported trace.dat version {vs!r} (supported: 6, 7)", len(MAGIC))
    version = int(vs)
    endian_b, long_size = c.unpack("BB")
    if endian_b not in (0, 1):
        c.fail(f"bad endian flag {endian_b}", c.pos - 2)
    if long_size not in (4, 8):
        c.fail(f"bad long size {long_size}", c.pos - 1)
    endian = "big" if endian_b else "little"
    c.e = ">" if endian_b else "<"
    page_size = c.u32()
    if page_size < 64 or page_size > (1 << 27) or page_size % 4:
        c.fail(f"implausible page size {page_size}", c.pos - 4)
    h = Header(version=version, endian=endian, long_size=long_size, page_size=page_size)
    if version == 6:
        _parse_v6(h, c)
    else:
        _parse_v7(h, c)
    _index_formats(h, path)
    return h


# ---------------------------------------------------------------------------------------------
# payloads shared by v6 and v7

def _header_info(h: Header, c: Cursor) -> None:
    c.section = "header_page"
    c.tag(b"header_page\0")
    n = c.u64()
    at = c.base + c.pos
    h.raw["header_page"] = c.bytes(n)
    h.page_header = parse_header_page(c.path, h.raw["header_page"].decode("latin-1"), h.long_size, at)
    c.section = "header_event"
    c.tag(b"header_event\0")
    h.raw["header_event"] = c.bytes(c.u64())


def _ftrace_formats(h: Header, c: Cursor) -> None:
    c.section = "ftrace formats"
    h.raw["ftrace"] = [_add_format(h, c, "ftrace") for _ in range(c.u32())]


def _event_formats(h: Header, c: Cursor) -> None:
    c.section = "event formats"
    h.raw["events"] = []
    for _ in range(c.u32()):
        system = c.cstr(4096)
        h.raw["events"].append((system, [_add_format(h, c, system) for _ in range(c.u32())]))


def _add_format(h: Header, c: Cursor, system: str) -> bytes:
    n = c.u64()
    raw = c.bytes(n)
    ev = LazyEventFormat(system, raw.decode("utf-8", "replace"))
    if ev.name:
        h.formats[ev.full_name] = ev
        if not h.common and ev.common_fields:
            h.common = {f.name: f for f in ev.common_fields}
    return raw


def _cmdlines(h: Header, c: Cursor) -> None:
    c.section = "cmdlines"
    h.raw["cmdlines"] = c.bytes(c.u64())
    h.cmdlines = parse_cmdlines(h.raw["cmdlines"].decode("utf-8", "replace"))


def _option(h: Header, c: Cursor, oid: int, body: bytes, at: int, sections: dict[int, int]) -> None:
    """Interpret one option (v6 and v7 share ids and payloads)."""
    def text() -> str:
        return body.split(b"\0", 1)[0].decode("utf-8", "replace")

    h.raw.setdefault("options", []).append((oid, body))

    if oid == OPT_DATE:
        # `record --date`: offset of the trace clock to wall time, ASCII, in microseconds;
        # trace-cmd report adds it to every timestamp (checked on written files)
        t = text().strip()
        h.options["date"] = t
        try:
            us = int(t, 0)
            if abs(us) >= 1 << 52:
                raise ValueError
        except ValueError:
            raise TraceFormatError(c.path, "options", at, f"bad DATE option {t!r}") from None
        h.ts_offset += us * 1000
    elif oid == OPT_TRACECLOCK:
        t = text()
        m = re.search(r"\[(\S+)\]", t)
        h.options["trace_clock"] = m.group(1) if m else t.strip()
    elif oid == OPT_UNAME:
        h.options["uname"] = text()
    elif oid == OPT_VERSION:
        h.options["tracer_version"] = text()
    elif oid == OPT_OFFSET:
        t = text().strip()
        try:
            v = int(t, 0)
            if abs(v) >= 1 << 62:
                raise ValueError
            h.ts_offset += v
        except ValueError:
            raise TraceFormatError(c.path, "options", at, f"bad OFFSET option {t!r}") from None
        h.options["ts_offset"] = v
    elif oid == OPT_CPUCOUNT and len(body) >= 4:
        h.cpus = Cursor(c.path, body, 0, h.endian, "options", at).u32()
    elif oid == OPT_TSC2NSEC and len(body) >= 16:
        mult, shift, off = Cursor(c.path, body, 0, h.endian, "options", at).unpack("IIQ")
        h.options["tsc2nsec"] = {"mult": mult, "shift": shift, "offset": off}
    elif oid == OPT_BUFFER:
        h.buffers.append(_buffer_option(h, c.path, body, at))
    elif oid == OPT_BUFFER_TEXT:
        h.options["latency_buffer"] = True
    elif OPT_HEADER_INFO <= oid <= OPT_CMDLINES and h.version >= 7:
        sections[oid] = Cursor(c.path, body, 0, h.endian, "options", at).u64()


def _buffer_option(h: Header, path: str, body: bytes, at: int) -> BufferInfo:
    b = Cursor(path, body, 0, h.endian, "BUFFER option", at)
    offset = b.u64()
    name = b.cstr(4096)
    if h.version == 6:
        # v6: only offset + name; the block at `offset` holds the per-CPU table.
        return BufferInfo(name=name, clock=None, page_size=h.page_size, cpus=[CpuData(-1, offset, 0)])
    clock = b.cstr(4096)
    rest = len(body) - b.pos
    # trace-cmd >= 3.? inserts a u32 sub-buffer size before the CPU count; tell by length.
    page_size = h.page_size
    if rest >= 8 and (rest - 8) % 20 == 0 and (rest - 4) % 20 != 0:
        page_size = b.u32()
    elif rest >= 8 and (rest - 8) % 20 == 0 and (rest - 4) % 20 == 0:
        pass  # ambiguous cannot happen (20 | 4 and 20 | 8 never both hold)
    n = b.u32()
    if n > 1 << 16:
        b.fail(f"implausible CPU count {n}")
    cpus = []
    for _ in range(n):
        cpu, off, size = b.unpack("IQQ")
        cpus.append(CpuData(cpu, off, size))
    if page_size < 64 or page_size % 4:
        b.fail(f"implausible page size {page_size}")
    return BufferInfo(name=name, clock=clock or None, page_size=page_size, cpus=cpus, section_offset=offset)


# ---------------------------------------------------------------------------------------------
# v6

def _parse_v6(h: Header, c: Cursor) -> None:
    _header_info(h, c)
    _ftrace_formats(h, c)
    _event_formats(h, c)
    c.section = "kallsyms"
    c.bytes(c.u32())
    c.section = "printk formats"
    h.raw["printk"] = c.bytes(c.u32())
    _cmdlines(h, c)
    c.section = "cpus"
    ncpu = c.u32()
    if ncpu > 1 << 16:
        c.fail(f"implausible CPU count {ncpu}", c.pos - 4)
    h.cpus = h.cpus or ncpu
    sections: dict[int, int] = {}
    while True:
        c.section = "data tag"
        tag = c.bytes(10)
        if tag == b"options  \0":
            c.section = "options"
            for _ in range(1 << 20):
                at = c.pos
                oid = c.u16()
                if oid == OPT_DONE:
                    break
                body = c.bytes(c.u32())
                _option(h, c, oid, body, at, sections)
            continue
        if tag == b"latency  \0":
            c.fail("latency (text) traces are not supported; record with flyrecord", c.pos - 10)
        if tag != b"flyrecord\0":
            c.fail(f"unknown data tag {tag!r}", c.pos - 10)
        break
    c.section = "flyrecord"
    clock = h.options.get("trace_clock")
    top = BufferInfo(name="", clock=str(clock) if clock is not None else None, page_size=h.page_size,
                     cpus=[CpuData(i, *c.unpack("QQ")) for i in range(ncpu)])
    instances = h.buffers
    for inst in instances:
        off = inst.cpus[0].offset
        ic = Cursor(c.path, c.data, off, h.endian, f"buffer {inst.name!r}")
        if bytes(c.data[off:off + 10]) == b"flyrecord\0":
            ic.pos += 10
        inst.cpus = [CpuData(i, *ic.unpack("QQ")) for i in range(ncpu)]
        inst.clock = top.clock
    h.buffers = [top] + instances
    _check_cpu_ranges(h, c, len(c.data))


# ---------------------------------------------------------------------------------------------
# v7

def _section(h: Header, c: Cursor, dec: Decompressor, off: int, want: int | None, name: str) -> Cursor:
    """Read a v7 section at `off` (decompressing it) and return a cursor over its body."""
    s = Cursor(c.path, c.data, off, h.endian, name)
    sid, flags, _strid, size = s.unpack("HHIQ")
    if want is not None and sid != want:
        s.fail(f"section id {sid}, expected {want}", off)
    if flags & SECTION_COMPRESSED:
        csize, usize = s.unpack("II")
        if csize > size:
            s.fail(f"compressed size {csize} larger than section size {size}")
        body_at = s.pos
        body = dec(s.bytes(csize), usize, name, body_at)
        return Cursor(c.path, body, 0, h.endian, name, base=body_at)
    s.need(size)
    return Cursor(c.path, bytes(c.data[s.pos:s.pos + size]), 0, h.endian, name, base=s.pos)


def _parse_v7(h: Header, c: Cursor) -> None:
    h.compression = c.cstr(64)
    h.compression_version = c.cstr(64)
    dec = Decompressor(c.path, h.compression)
    opt_off = c.u64()
    sections: dict[int, int] = {}
    seen = set()
    for _ in range(MAX_OPTION_SECTIONS):
        if opt_off == 0:
            break
        if opt_off in seen:
            c.fail("OPTIONS chain loops", opt_off)
        seen.add(opt_off)
        s = _section(h, c, dec, opt_off, 0, "options")
        nxt = 0
        while True:
            at = s.base + s.pos
            oid = s.u16()
            size = s.u32()
            body = s.bytes(size)
            if oid == OPT_DONE:
                if size >= 8:
                    nxt = Cursor(c.path, body, 0, h.endian, "options", at).u64()
                break
            _option(h, s, oid, body, at, sections)
        opt_off = nxt
    for oid, fn, name in ((OPT_HEADER_INFO, _header_info, "header info"),
                          (OPT_FTRACE_EVENTS, _ftrace_formats, "ftrace formats"),
                          (OPT_EVENT_FORMATS, _event_formats, "event formats"),
                          (OPT_CMDLINES, _cmdlines, "cmdlines")):
        if oid in sections:
            fn(h, _section(h, c, dec, sections[oid], oid, name))
        elif oid == OPT_HEADER_INFO:
            c.fail("no HEADER_INFO section (ring-buffer page layout unknown)", 0)
    if not h.buffers and h.options.get("latency_buffer"):
        c.fail("latency (text) traces are not supported; record with flyrecord", 0)
    for b in h.buffers:
        # The BUFFER option's offset points at the flyrecord section header; its flags
        # say whether the per-CPU data is a stream of compressed chunks.
        s = Cursor(c.path, c.data, b.section_offset or 0, h.endian, f"buffer {b.name!r}")
        sid, flags, _strid, _size = s.unpack("HHIQ")
        if sid != OPT_BUFFER:
            s.fail(f"section id {sid}, expected {OPT_BUFFER} (flyrecord)", b.section_offset)
        for cd in b.cpus:
            cd.chunked = bool(flags & SECTION_COMPRESSED)
    if h.cpus is None:
        h.cpus = max((len(b.cpus) for b in h.buffers), default=0)
    _check_cpu_ranges(h, c, len(c.data))


def _check_cpu_ranges(h: Header, c: Cursor, flen: int) -> None:
    for b in h.buffers:
        for cd in b.cpus:
            if cd.offset > flen or (not cd.chunked and cd.offset + cd.size > flen):
                raise TraceFormatError(c.path, f"buffer {b.name!r} cpu {cd.cpu}", cd.offset,
                                       f"data ({cd.size} bytes) extends beyond end of file ({flen} bytes): truncated")


def _index_formats(h: Header, path: str) -> None:
    for ev in h.formats.values():
        if ev.id is not None:
            h.by_id[ev.id] = ev
    if h.buffers and "common_type" not in h.common and h.formats:
        raise TraceFormatError(path, "event formats", None, "no common_type field in the event formats")
