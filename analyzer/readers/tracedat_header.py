"""trace.dat metadata: initial header, v6 blocks / v7 sections, OPTIONS chain, format files.

Everything here is small (kilobytes to a few MB of kallsyms), so it is parsed eagerly with
`struct`; the per-event data is left to tracedat_pages.  Every read is bounds-checked so a
truncated or corrupted file becomes a TraceFormatError naming the section and byte offset,
never an IndexError/struct.error.
"""
from __future__ import annotations

import builtins
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field

from ..errors import TraceFormatError
from .base import EventFormat, FieldFormat

MAGIC = b"\x17\x08\x44tracing"

# v7 option / section ids (trace-cmd-private.h, trace-cmd.dat.v7(5))
OPT_DONE, OPT_DATE, OPT_CPUSTAT, OPT_BUFFER, OPT_TRACECLOCK, OPT_UNAME = 0, 1, 2, 3, 4, 5
OPT_OFFSET, OPT_CPUCOUNT, OPT_VERSION, OPT_TSC2NSEC = 7, 8, 9, 14
OPT_HEADER_INFO, OPT_FTRACE_EVENTS, OPT_EVENT_FORMATS = 16, 17, 18
OPT_KALLSYMS, OPT_PRINTK, OPT_CMDLINES, OPT_BUFFER_TEXT = 19, 20, 21, 22

SECTION_COMPRESSED = 1
MAX_DECOMPRESSED = 1 << 30     # one section or chunk; trace-cmd writes 10-page chunks


@dataclass
class CpuData:
    """Where one CPU's ring-buffer pages are.  `chunked`: v7 compressed chunk stream."""

    cpu: int
    offset: int
    size: int
    chunked: bool = False


@dataclass
class BufferInfo:
    name: str                       # "" = top-level buffer, else the instance name
    clock: str | None
    page_size: int
    cpus: list[CpuData] = field(default_factory=list)
    section_offset: int | None = None   # v7: file offset of the BUFFER (flyrecord) section


@dataclass
class PageHeader:
    """Layout of a ring-buffer page, from the header_page format text."""

    ts_size: int = 8
    commit_offset: int = 8
    commit_size: int = 8
    data_offset: int = 16


@dataclass
class Header:
    """Everything in a trace.dat except the event data itself."""

    version: int
    endian: str
    long_size: int
    page_size: int
    compression: str = "none"
    compression_version: str = ""
    page_header: PageHeader = field(default_factory=PageHeader)
    formats: dict[str, EventFormat] = field(default_factory=dict)
    by_id: dict[int, EventFormat] = field(default_factory=dict)
    common: dict[str, FieldFormat] = field(default_factory=dict)
    cmdlines: dict[int, str] = field(default_factory=dict)
    buffers: list[BufferInfo] = field(default_factory=list)
    options: dict[str, object] = field(default_factory=dict)
    cpus: int | None = None
    ts_offset: int = 0
    raw: dict = field(default_factory=dict)   # verbatim metadata blocks (used by the test writer, tests/support/tracedat_write.py)


class Decompressor:
    """zstd / zlib / none, selected by the name in the v7 initial header."""

    def __init__(self, path: str, name: str):
        self.path, self.name = path, name
        self._local = threading.local()     # a ZstdDecompressor must not be shared by threads
        if name == "zstd":
            import zstandard
            self._zstd = zstandard
        elif name not in ("zlib", "none"):
            raise TraceFormatError(path, "header", None, f"unknown compression algorithm {name!r}")

    def into(self, data, out: memoryview, section: str, offset: int) -> None:
        """Decompress `data` exactly into `out` (no intermediate bytes object for zstd)."""
        usize = len(out)
        if self.name != "zstd":
            out[:] = self(bytes(data), usize, section, offset)
            return
        z = getattr(self._local, "z", None)
        if z is None:
            z = self._local.z = self._zstd.ZstdDecompressor()
        try:
            got = 0
            with z.stream_reader(data) as r:
                while got < usize:
                    k = r.readinto(out[got:])
                    if not k:
                        break
                    got += k
                extra = r.read(1) if got == usize else b""
        except Exception as e:
            raise TraceFormatError(self.path, section, offset, f"corrupt zstd data: {e}") from None
        if got != usize or extra:
            raise TraceFormatError(self.path, section, offset,
                                   f"decompressed {'more than ' if extra else ''}{got} bytes, header says {usize}")

    def __call__(self, data: bytes, usize: int, section: str, offset: int) -> bytes:
        if usize > MAX_DECOMPRESSED:
            raise TraceFormatError(self.path, section, offset, f"implausible uncompressed size {usize}")
        try:
            if self.name == "zstd":
                # trace-cmd's frames carry no content size: the stored usize is the bound.
                z = getattr(self._local, "z", None)
                if z is None:
                    z = self._local.z = self._zstd.ZstdDecompressor()
                out = z.decompress(data, max_output_size=max(usize, 1))
            elif self.name == "zlib":
                out = zlib.decompress(data)
            else:
                raise TraceFormatError(self.path, section, offset, "compressed data in a file with compression 'none'")
        except TraceFormatError:
            raise
        except Exception as e:  # zstd.ZstdError, zlib.error, MemoryError on absurd sizes
            raise TraceFormatError(self.path, section, offset, f"corrupt {self.name} data: {e}") from None
        if len(out) != usize:
            raise TraceFormatError(self.path, section, offset,
                                   f"decompressed {len(out)} bytes, header says {usize}")
        return out


class Cursor:
    """Bounds-checked reader over a bytes-like object in the file's byte order."""

    def __init__(self, path: str, data, pos: int, endian: str, section: str, base: int = 0):
        self.path, self.data, self.pos, self.section = path, data, pos, section
        self.e = "<" if endian == "little" else ">"
        self.base = base  # file offset of data[0] (for messages on decompressed sections)

    def fail(self, msg: str, at: int | None = None):
        raise TraceFormatError(self.path, self.section, self.base + (self.pos if at is None else at), msg)

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.data):
            self.fail(f"truncated: need {n} bytes, {max(len(self.data) - self.pos, 0)} left")

    def unpack(self, fmt: str):
        n = struct.calcsize(self.e + fmt)
        self.need(n)
        v = struct.unpack_from(self.e + fmt, self.data, self.pos)
        self.pos += n
        return v

    def u16(self) -> int: return self.unpack("H")[0]
    def u32(self) -> int: return self.unpack("I")[0]
    def u64(self) -> int: return self.unpack("Q")[0]

    def bytes(self, n: int) -> builtins.bytes:
        self.need(n)
        b = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return b

    def cstr(self, limit: int = 1 << 20) -> str:
        end = self.data.find(b"\0", self.pos, min(len(self.data), self.pos + limit))
        if end < 0:
            self.fail("unterminated string")
        s = bytes(self.data[self.pos:end]).decode("utf-8", "replace")
        self.pos = end + 1
        return s

    def tag(self, expect: builtins.bytes) -> None:   # `bytes` is the method above here
        got = self.bytes(len(expect))
        if got != expect:
            self.fail(f"expected {expect!r}, found {got!r}", self.pos - len(expect))


# ---------------------------------------------------------------------------------------------
# format files

_FIELD_RE = re.compile(r"field:(?P<decl>[^;]*);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);(?:\s*signed:(?P<sig>-?\d+);)?")
_DECL_RE = re.compile(r"^(?P<type>.*?)\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<arr>\[[^\]]*\])?\s*$")


def parse_field(decl: str, off: int, size: int, signed: bool) -> FieldFormat:
    """`unsigned long pfn` / `char comm[16]` / `__data_loc char[] name` -> FieldFormat."""
    decl = decl.strip()
    data_loc = decl.startswith("__data_loc")
    rel_loc = decl.startswith("__rel_loc")
    m = _DECL_RE.match(decl)
    if not m:
        return FieldFormat(name=decl, type=decl, offset=off, size=size, signed=signed)
    typ, name, arr = m.group("type").strip(), m.group("name"), m.group("arr")
    array_len = None
    if arr is not None and not (data_loc or rel_loc):
        inner = arr[1:-1].strip()
        array_len = int(inner) if inner.isdigit() else 0
        typ = f"{typ}[]"
    elif data_loc or rel_loc:
        typ = f"{typ}{arr or ''}" if "[" not in typ else typ
    return FieldFormat(name=name, type=typ, offset=off, size=size, signed=signed,
                       array_len=array_len, data_loc=data_loc, rel_loc=rel_loc)


def parse_format(text: str, system_hint: str | None = None) -> tuple[EventFormat, list[FieldFormat]]:
    """One `events/<sys>/<ev>/format` text -> (EventFormat of non-common fields, common fields)."""
    name = re.search(r"^name:\s*(\S+)", text, re.M)
    ident = re.search(r"^ID:\s*(\d+)", text, re.M)
    pf = re.search(r"^print fmt:\s*(.*)$", text, re.M | re.S)
    fields: list[FieldFormat] = []
    common: list[FieldFormat] = []
    seen: set[str] = set()
    for m in _FIELD_RE.finditer(text):
        sig = m.group("sig")
        f = parse_field(m.group("decl"), int(m.group("off")), int(m.group("size")), bool(sig and int(sig)))
        if f.name in seen:      # a corrupt format; the first definition wins
            continue
        seen.add(f.name)
        (common if f.name.startswith("common_") else fields).append(f)
    fields.sort(key=lambda f: f.offset)
    ev = EventFormat(system=system_hint or "ftrace", name=name.group(1) if name else "",
                     id=int(ident.group(1)) if ident else None, fields=fields,
                     print_fmt=pf.group(1).strip() if pf else "")
    return ev, common


_NAME_RE = re.compile(r"^name:\s*(\S+)", re.M)
_ID_RE = re.compile(r"^ID:\s*(\d+)", re.M)


class LazyEventFormat(EventFormat):
    """EventFormat whose fields are parsed on first use.

    A trace.dat carries ~1000-1300 format files and a page-allocator analysis touches about
    ten; parsing them all costs a third of the load time of a 4 M-event file.
    """

    def __init__(self, system: str, text: str):
        self.system = system
        self._text = text
        m, i = _NAME_RE.search(text), _ID_RE.search(text)
        self.name = m.group(1) if m else ""
        self.id = int(i.group(1)) if i else None
        self._parsed: tuple[list[FieldFormat], list[FieldFormat], str] | None = None

    def _parse(self) -> tuple[list[FieldFormat], list[FieldFormat], str]:
        if self._parsed is None:
            ev, common = parse_format(self._text, self.system)
            self._parsed = (ev.fields, common, ev.print_fmt)
        return self._parsed

    @property
    def fields(self) -> list[FieldFormat]:
        return self._parse()[0]

    @fields.setter
    def fields(self, v: list[FieldFormat]) -> None:
        self._parsed = (v, self._parse()[1], self._parse()[2])

    @property
    def common_fields(self) -> list[FieldFormat]:
        return self._parse()[1]

    @property
    def print_fmt(self) -> str:
        return self._parse()[2]

    @print_fmt.setter
    def print_fmt(self, v: str) -> None:
        f, c, _ = self._parse()
        self._parsed = (f, c, v)


def parse_header_page(path: str, text: str, long_size: int, offset: int) -> PageHeader:
    ph = PageHeader(commit_size=long_size, data_offset=8 + long_size)
    for m in _FIELD_RE.finditer(text):
        f = parse_field(m.group("decl"), int(m.group("off")), int(m.group("size")), False)
        if f.name == "timestamp":
            ph.ts_size = f.size
        elif f.name == "commit":
            ph.commit_offset, ph.commit_size = f.offset, f.size
        elif f.name == "data":
            ph.data_offset = f.offset
    if ph.commit_size not in (4, 8) or ph.ts_size != 8 or ph.data_offset < ph.commit_offset + ph.commit_size:
        raise TraceFormatError(path, "header_page", offset, f"unsupported ring-buffer page header: {text[:200]!r}")
    return ph


def parse_cmdlines(text: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for line in text.splitlines():
        pid, _, comm = line.strip().partition(" ")
        if pid.isdigit():
            out[int(pid)] = comm
    return out
