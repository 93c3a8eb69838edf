"""perf.data metadata: file header, attrs, feature sections, pipe-mode header records.

perf writes two layouts (tools/perf/Documentation/perf.data-file-format.txt):
* file mode: a 104-byte header with {offset, size} of the attrs and the data, and after the
  data one {offset, size} per feature bit set in the header's 256-bit bitmap;
* pipe mode (`perf record -o -`): a 16-byte header, then records only; attrs, features and
  the tracing data arrive as user records (HEADER_ATTR, HEADER_FEATURE, HEADER_TRACING_DATA).
Both end in the same `PerfHeader`.  The tracing data (format files of the recorded events)
has the layout of the start of a trace.dat v6, so the trace.dat parsers read it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import TraceFormatError
from . import tracedat_sections as ts
from .tracedat_header import MAGIC as TRACING_MAGIC
from .tracedat_header import Cursor, Header

PERF_MAGIC = b"PERFILE2"
PERF_MAGIC_BE = b"2ELIFREP"
FILE_HEADER_SIZE = 104
PIPE_HEADER_SIZE = 16

# user record types (tools/lib/perf/include/perf/event.h)
REC_LOST, REC_COMM, REC_EXIT, REC_FORK, REC_SAMPLE, REC_LOST_SAMPLES = 2, 3, 4, 7, 9, 13
REC_HEADER_ATTR, REC_HEADER_TRACING_DATA, REC_FINISHED_ROUND = 64, 66, 68
REC_HEADER_FEATURE, REC_COMPRESSED, REC_COMPRESSED2 = 80, 81, 83

# feature bits (tools/perf/util/header.h)
FEAT_TRACING_DATA, FEAT_HOSTNAME, FEAT_OSRELEASE, FEAT_VERSION, FEAT_ARCH, FEAT_NRCPUS = 1, 3, 4, 5, 6, 7
FEAT_CMDLINE, FEAT_CLOCKID, FEAT_COMPRESSED = 11, 23, 27

PERF_TYPE_TRACEPOINT = 2
ATTR_FLAG_SAMPLE_ID_ALL = 1 << 18
MAX_ATTRS = 1 << 16
MAX_IDS = 1 << 24


@dataclass
class Attr:
    """The parts of a perf_event_attr the reader uses, and the sample ids that name it."""

    type: int
    config: int
    sample_type: int
    read_format: int
    sample_id_all: bool
    ids: list[int] = field(default_factory=list)


@dataclass
class PerfHeader:
    pipe: bool
    attrs: list[Attr] = field(default_factory=list)
    data_offset: int = 0
    data_size: int = 0
    features: dict[int, bytes] = field(default_factory=dict)
    tracing: Header | None = None
    compressed: dict | None = None       # HEADER_COMPRESSED: version, type, level, ratio, mmap_len


def parse_attr(path: str, data, at: int, size: int, where: str) -> Attr:
    """A perf_event_attr of `size` bytes at `at` (only fields of the first 48 bytes are used)."""
    if size < 48 or at + size > len(data):
        raise TraceFormatError(path, where, at, f"perf_event_attr of {size} bytes is truncated (need 48)")
    typ, _sz, config, _period, st, rf, flags = struct.unpack_from("<IIQQQQQ", data, at)
    return Attr(typ, config, st, rf, bool(flags & ATTR_FLAG_SAMPLE_ID_ALL))


def _ids(path: str, data, off: int, size: int, where: str) -> list[int]:
    if size % 8 or size // 8 > MAX_IDS or off + size > len(data) or off < 0:
        raise TraceFormatError(path, where, off, f"bad sample id table ({size} bytes at {off})")
    return list(struct.unpack_from(f"<{size // 8}Q", data, off))


def parse_file_header(path: str, data) -> PerfHeader:
    """File mode: header, attrs with their ids, feature sections (the data is walked later)."""
    if len(data) < FILE_HEADER_SIZE:
        raise TraceFormatError(path, "header", 0, "truncated perf.data header")
    hsize, attr_size, a_off, a_size, d_off, d_size = struct.unpack_from("<QQQQQQ", data, 8)
    if hsize != FILE_HEADER_SIZE:
        raise TraceFormatError(path, "header", 8, f"unsupported perf.data header size {hsize}")
    flen = len(data)
    for name, o, s in (("attrs", a_off, a_size), ("data", d_off, d_size)):
        if o > flen or s > flen - o:
            raise TraceFormatError(path, name, o, f"section ({s} bytes) extends beyond end of file ({flen} bytes)")
    if attr_size < 64 or attr_size > 4096 or a_size % attr_size or a_size // attr_size > MAX_ATTRS:
        raise TraceFormatError(path, "attrs", a_off, f"bad attr size {attr_size} for an attr section of {a_size} bytes")
    h = PerfHeader(pipe=False, data_offset=d_off, data_size=d_size)
    for i in range(a_size // attr_size):
        at = a_off + i * attr_size
        a = parse_attr(path, data, at, attr_size - 16, f"attr {i}")
        ids_off, ids_size = struct.unpack_from("<QQ", data, at + attr_size - 16)
        a.ids = _ids(path, data, ids_off, ids_size, f"attr {i} ids")
        h.attrs.append(a)
    bits = int.from_bytes(bytes(data[72:104]), "little")
    feats = [b for b in range(256) if bits >> b & 1]
    table = d_off + d_size
    if table + 16 * len(feats) > flen:
        raise TraceFormatError(path, "feature sections", table, "feature table extends beyond end of file")
    for k, b in enumerate(feats):
        o, s = struct.unpack_from("<QQ", data, table + 16 * k)
        if o > flen or s > flen - o:
            raise TraceFormatError(path, f"feature {b}", o, f"section ({s} bytes) extends beyond end of file")
        h.features[b] = bytes(data[o:o + s])
    if FEAT_TRACING_DATA in h.features:
        body = h.features[FEAT_TRACING_DATA]
        off = struct.unpack_from("<Q", data, table + 16 * feats.index(FEAT_TRACING_DATA))[0]
        h.tracing = parse_tracing_data(path, body, off)
    _compressed(path, h)
    return h


def add_pipe_record(path: str, h: PerfHeader, data, off: int, typ: int, size: int) -> None:
    """Take one pipe-mode header record (HEADER_ATTR / HEADER_FEATURE / HEADER_TRACING_DATA)."""
    if typ == REC_HEADER_ATTR:
        if size < 8 + 48:
            raise TraceFormatError(path, "HEADER_ATTR record", off, "record too short for an attr")
        asz = struct.unpack_from("<I", data, off + 8 + 4)[0]
        if asz < 48 or asz > size - 8:
            raise TraceFormatError(path, "HEADER_ATTR record", off, f"attr size {asz} does not fit its record")
        a = parse_attr(path, data, off + 8, asz, "HEADER_ATTR record")
        a.ids = _ids(path, data, off + 8 + asz, (size - 8 - asz) // 8 * 8, "HEADER_ATTR ids")
        if len(h.attrs) >= MAX_ATTRS:
            raise TraceFormatError(path, "HEADER_ATTR record", off, "too many attrs")
        h.attrs.append(a)
    elif typ == REC_HEADER_FEATURE:
        if size < 16:
            raise TraceFormatError(path, "HEADER_FEATURE record", off, "record too short")
        fid = struct.unpack_from("<Q", data, off + 8)[0]
        if fid < 256:
            h.features[fid] = bytes(data[off + 16:off + size])
            if fid == FEAT_COMPRESSED:
                _compressed(path, h)
    elif typ == REC_HEADER_TRACING_DATA:
        n = struct.unpack_from("<I", data, off + 8)[0]
        h.tracing = parse_tracing_data(path, bytes(data[off + size:off + size + n]), off + size)


def _compressed(path: str, h: PerfHeader) -> None:
    b = h.features.get(FEAT_COMPRESSED)
    if b is None:
        return
    if len(b) < 20:
        raise TraceFormatError(path, "HEADER_COMPRESSED", None, "feature section too short")
    v, t, lvl, ratio, mlen = struct.unpack_from("<IIIII", b, 0)
    h.compressed = {"version": v, "type": t, "level": lvl, "ratio": ratio, "mmap_len": mlen}


def feature_string(h: PerfHeader, fid: int) -> str | None:
    """A string feature (do_write_string: u32 length incl. padding, then NUL-padded text)."""
    b = h.features.get(fid)
    if b is None or len(b) < 4:
        return None
    n = struct.unpack_from("<I", b, 0)[0]
    return b[4:4 + n].split(b"\0", 1)[0].decode("utf-8", "replace")


def nr_cpus(h: PerfHeader) -> int | None:
    b = h.features.get(FEAT_NRCPUS)
    return struct.unpack_from("<I", b, 0)[0] if b and len(b) >= 8 else None


def parse_tracing_data(path: str, body: bytes, file_off: int) -> Header:
    """HEADER_TRACING_DATA: `\\x17\\x08\\x44tracing`, version "0.5"/"0.6", then trace.dat v6 blocks."""
    c = Cursor(path, body, 0, "little", "tracing data", base=file_off)
    if body[:len(TRACING_MAGIC)] != TRACING_MAGIC:
        c.fail("bad tracing data magic", 0)
    c.pos = len(TRACING_MAGIC)
    vs = c.cstr(16)
    try:
        version = float(vs)
    except ValueError:
        c.fail(f"unsupported tracing data version {vs!r}")
    endian_b, long_size = c.unpack("BB")
    if endian_b not in (0, 1) or long_size not in (4, 8):
        c.fail(f"bad endian flag {endian_b} or long size {long_size}", c.pos - 2)
    endian = "big" if endian_b else "little"
    c.e = ">" if endian_b else "<"
    page_size = c.u32()
    h = Header(version=6, endian=endian, long_size=long_size, page_size=page_size)
    ts._header_info(h, c)
    ts._ftrace_formats(h, c)
    ts._event_formats(h, c)
    c.section = "kallsyms"
    c.bytes(c.u32())
    c.section = "printk formats"
    h.raw["printk"] = c.bytes(c.u32())
    if version >= 0.6:      # kept raw: perf's comm comes from COMM/FORK records, not saved cmdlines
        c.section = "cmdlines"
        h.raw["cmdlines"] = c.bytes(c.u64())
    ts._index_formats(h, path)
    return h
