"""The perf.data record walk: compiled (_perfwalk.c) or Python, with identical output.

The walk finds every record of a data region and, for samples, the parts the reader needs
(time, pid/tid, cpu, id, RAW offset/length); for other records their type, size and the
time/cpu of their trailing sample_id.  The Python path exists for installs without a
compiler: it walks the header chain with struct, then gathers fixed-layout sample parts
with numpy (per record only when callchains or group reads make the layout variable).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ..cext import load as load_cext

_cwalk = load_cext("analyzer.readers._perfwalk")

S_IP, S_TID, S_TIME, S_ADDR, S_READ, S_CALLCHAIN = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5
S_ID, S_CPU, S_PERIOD, S_STREAM_ID, S_RAW, S_IDENTIFIER = 1 << 6, 1 << 7, 1 << 8, 1 << 9, 1 << 10, 1 << 16

REC_SAMPLE, REC_TRACING_DATA, REC_AUXTRACE = 9, 66, 71


class WalkError(ValueError):
    """A malformed record; `at` is the byte offset in the walked buffer."""

    def __init__(self, msg: str, at: int):
        super().__init__(msg)
        self.msg, self.at = msg, at


@dataclass
class Layout:
    """Where things are in samples and in the sample_id of other records (from the attrs)."""

    sample_type: int
    read_fixed: int = 0        # bytes of the READ part, or its fixed part for group reads
    read_entry: int = -1       # bytes per group member (group reads), -1 = not a group read
    sid_size: int = 0          # trailing sample_id size (0 = sample_id_all off)
    sid_tid: int = -1
    sid_time: int = -1
    sid_cpu: int = -1
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))     # sorted sample ids and
    types: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))   # their sample types

    @classmethod
    def of(cls, sample_type: int, read_format: int, sample_id_all: bool) -> Layout:
        """Derive the layout as the kernel writes it (perf_output_sample / __perf_event_header__init_id)."""
        rf_fixed = 8 * sum(bool(read_format & b) for b in (1, 2))      # TOTAL_TIME_ENABLED / RUNNING
        entry = 8 * (1 + bool(read_format & 4) + bool(read_format & 16))  # value, ID, LOST
        if read_format & 8:                                             # GROUP
            lay = cls(sample_type, rf_fixed, entry)
        else:
            lay = cls(sample_type, rf_fixed + entry, -1)
        if sample_id_all:
            pos = 0
            for bit in (S_TID, S_TIME, S_ID, S_STREAM_ID, S_CPU, S_IDENTIFIER):
                if sample_type & bit:
                    if bit == S_TID:
                        lay.sid_tid = pos
                    elif bit == S_TIME:
                        lay.sid_time = pos
                    elif bit == S_CPU:
                        lay.sid_cpu = pos
                    pos += 8
            lay.sid_size = pos
        return lay


@dataclass
class Walk:
    """Samples (s_*) and other records (o_*) of one buffer, in file order."""

    s_off: np.ndarray
    s_time: np.ndarray
    s_pid: np.ndarray
    s_tid: np.ndarray
    s_cpu: np.ndarray
    s_id: np.ndarray
    s_raw: np.ndarray
    s_rawlen: np.ndarray
    o_off: np.ndarray
    o_type: np.ndarray
    o_size: np.ndarray
    o_time: np.ndarray
    o_cpu: np.ndarray
    s_attr: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    lean: bool = False          # only s_off, s_time and s_attr filled (the other s_* are empty)


def use_compiled() -> bool:
    return _cwalk is not None


def walk(buf, start: int, end: int, lay: Layout, compiled: bool | None = None,
         lean: bool = False, amap: tuple[np.ndarray, np.ndarray] | None = None) -> Walk:
    """Walk the records of buf[start:end]; raises WalkError on malformed data.

    lean (compiled only): keep per sample only its offset, time and attr index (from
    amap = (sorted sample ids u64, attr index i32 of each); -1 = an id no attr has; without
    amap every sample is attr 0).  The compiled fill pass re-reads the rest from the record,
    so the walk does not write 40 bytes per sample that only one later pass reads."""
    if compiled is None:
        compiled = _cwalk is not None
    if compiled:
        if _cwalk is None:
            raise RuntimeError("compiled perf.data walker requested but not built")
        ids, own = amap if amap is not None else (np.zeros(0, np.uint64), np.zeros(0, np.int32))
        try:
            r = _cwalk.walk(buf, start, end, lay.sample_type, lay.read_fixed, lay.read_entry,
                            lay.sid_size, lay.sid_tid, lay.sid_time, lay.sid_cpu,
                            np.ascontiguousarray(lay.ids, np.uint64), np.ascontiguousarray(lay.types, np.uint64),
                            int(lean), np.ascontiguousarray(ids, np.uint64), np.ascontiguousarray(own, np.int32))
        except ValueError as e:
            msg, _, at = str(e).rpartition(" @")
            raise WalkError(msg, int(at) if at.isdigit() else start) from None
        (s_off, s_time, s_pid, s_tid, s_cpu, s_id, s_raw, s_rawlen, o_off, o_type, o_size, o_time, o_cpu,
         s_attr) = r
        return Walk(s_off, s_time, s_pid, s_tid, s_cpu, s_id, s_raw, s_rawlen, o_off, o_type, o_size, o_time, o_cpu,
                    s_attr=s_attr, lean=lean)
    return _walk_python(buf, start, end, lay)


def _chain(mv: memoryview, start: int, end: int) -> tuple[list[int], list[int], list[int]]:
    """Offsets, types and sizes of the records in mv[start:end] (the sequential part)."""
    offs, types, sizes = [], [], []
    hdr = struct.Struct("<IHH")
    r = start
    while r < end:
        if end - r < 8:
            raise WalkError("truncated record header", r)
        typ, _misc, size = hdr.unpack_from(mv, r)
        if size < 8:
            raise WalkError("record size smaller than its header", r)
        if size > end - r:
            raise WalkError("record runs past the end of the data", r)
        extra = 0
        if typ == REC_TRACING_DATA:
            if size < 12:
                raise WalkError("tracing data record too short", r)
            extra = struct.unpack_from("<I", mv, r + 8)[0]
        elif typ == REC_AUXTRACE:
            if size < 16:
                raise WalkError("auxtrace record too short", r)
            extra = struct.unpack_from("<Q", mv, r + 8)[0]
            if extra > end - r - size:
                raise WalkError("auxtrace data runs past the end of the data", r)
        if extra > end - r - size:
            raise WalkError("record payload runs past the end of the data", r)
        offs.append(r)
        types.append(typ)
        sizes.append(size)
        r += size + extra
    return offs, types, sizes


def _walk_python(buf, start: int, end: int, lay: Layout) -> Walk:
    if start < 0 or start > end or end > len(buf):
        raise WalkError("data range outside the buffer", 0)
    mv = memoryview(buf).cast("B")
    offs, types, sizes = _chain(mv, start, end)
    off = np.array(offs, np.int64)
    typ = np.array(types, np.uint32).view(np.int32)
    size = np.array(sizes, np.int64)
    isS = typ == REC_SAMPLE
    s_off, s_size = off[isS], size[isS]
    o_off, o_type, o_size = off[~isS], typ[~isS], size[~isS]
    b = np.frombuffer(mv, np.uint8)
    n = len(s_off)
    cols: list[np.ndarray] = [np.zeros(n, np.uint64), np.full(n, -1, np.int32), np.full(n, -1, np.int32), np.zeros(n, np.uint64),
            np.full(n, -1, np.int32), np.full(n, -1, np.int64), np.zeros(n, np.int64)]
    if len(lay.ids) and n:        # per-event sample types, picked by each sample's leading IDENTIFIER
        short = s_size < 16
        if short.any():
            raise WalkError("sample record truncated", int(s_off[np.argmax(short)]))
        first = _u64(b, s_off + 8)
        j = np.minimum(np.searchsorted(lay.ids, first), len(lay.ids) - 1)
        bad = lay.ids[j] != first
        if bad.any():
            raise WalkError("sample with an id no event attr has", int(s_off[np.argmax(bad)]))
        st_of = lay.types[j]
        groups = [(int(t), np.flatnonzero(st_of == t)) for t in np.unique(st_of).tolist()]
    else:
        groups = [(lay.sample_type, np.arange(n))]
    for st, sel in groups:
        part = _samples(b, mv, s_off[sel], s_size[sel], st, lay)
        for c, v in zip(cols, part):
            c[sel] = v
    s_id, s_pid, s_tid, s_time, s_cpu, s_raw, s_rawlen = cols
    o_time = np.zeros(len(o_off), np.uint64)
    o_cpu = np.full(len(o_off), -1, np.int32)
    if lay.sid_size:
        has = (o_type.view(np.uint32) < 64) & (o_size >= 8 + lay.sid_size)
        sid = o_off[has] + o_size[has] - lay.sid_size
        if lay.sid_time >= 0:
            o_time[has] = _u64(b, sid + lay.sid_time)
        if lay.sid_cpu >= 0:
            o_cpu[has] = _u32(b, sid + lay.sid_cpu).view(np.int32)
    return Walk(s_off, s_time, s_pid, s_tid, s_cpu, s_id, s_raw, s_rawlen, o_off, o_type, o_size, o_time, o_cpu)


def _u64(b: np.ndarray, at: np.ndarray) -> np.ndarray:
    return b[at[:, None] + np.arange(8)].reshape(-1).view("<u8").copy() if len(at) else np.zeros(0, np.uint64)


def _u32(b: np.ndarray, at: np.ndarray) -> np.ndarray:
    return b[at[:, None] + np.arange(4)].reshape(-1).view("<u4").copy() if len(at) else np.zeros(0, np.uint32)


def _samples(b: np.ndarray, mv: memoryview, s_off: np.ndarray, s_size: np.ndarray, st: int,
             lay: Layout) -> list[np.ndarray]:
    """(id, pid, tid, time, cpu, raw offset, raw length) of samples that share one sample type."""
    n = len(s_off)
    if st & S_CALLCHAIN or (st & S_READ and lay.read_entry >= 0):     # variable layout: per record
        one = Layout(st, lay.read_fixed, lay.read_entry)
        parts = [_sample_python(mv, r, sz, one) for r, sz in zip(s_off.tolist(), s_size.tolist())]
        dts = (np.uint64, np.int32, np.int32, np.uint64, np.int32, np.int64, np.int64)
        return [np.array(c, dt) for c, dt in zip(zip(*parts), dts)] if parts else [np.zeros(0, dt) for dt in dts]
    ident, t = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    pid, tid, cpu = np.full(n, -1, np.int32), np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    raw, rawlen = np.full(n, -1, np.int64), np.zeros(n, np.int64)
    p = 8
    at: dict[int, int] = {}
    for bit, width in ((S_IDENTIFIER, 8), (S_IP, 8), (S_TID, 8), (S_TIME, 8), (S_ADDR, 8), (S_ID, 8),
                       (S_STREAM_ID, 8), (S_CPU, 8), (S_PERIOD, 8), (S_READ, lay.read_fixed)):
        if st & bit:
            at[bit] = p
            p += width
    short = s_size < p + (4 if st & S_RAW else 0)
    if short.any():
        raise WalkError("sample record truncated", int(s_off[np.argmax(short)]))
    if S_IDENTIFIER in at:
        ident = _u64(b, s_off + at[S_IDENTIFIER])
    if S_TID in at:
        pid = _u32(b, s_off + at[S_TID]).view(np.int32)
        tid = _u32(b, s_off + at[S_TID] + 4).view(np.int32)
    if S_TIME in at:
        t = _u64(b, s_off + at[S_TIME])
    if S_ID in at:
        ident = _u64(b, s_off + at[S_ID])
    if S_CPU in at:
        cpu = _u32(b, s_off + at[S_CPU]).view(np.int32)
    if st & S_RAW:
        rl = _u32(b, s_off + p).astype(np.int64)
        bad = rl > s_size - p - 4
        if bad.any():
            raise WalkError("sample raw data runs past its record", int(s_off[np.argmax(bad)]))
        raw, rawlen = s_off + p + 4, rl
    return [ident, pid, tid, t, cpu, raw, rawlen]


def _sample_python(mv: memoryview, r: int, size: int, lay: Layout) -> tuple[int, int, int, int, int, int, int]:
    """One sample with variable parts: (id, pid, tid, time, cpu, raw offset, raw length)."""
    end, p, st = r + size, r + 8, lay.sample_type
    ident = t = 0
    pid = tid = cpu = -1

    def need(k: int) -> None:
        if k < 0 or p + k > end:
            raise WalkError("sample record truncated", r)

    def q(at: int) -> int:
        return struct.unpack_from("<Q", mv, at)[0]

    if st & S_IDENTIFIER:
        need(8); ident = q(p); p += 8
    if st & S_IP:
        need(8); p += 8
    if st & S_TID:
        need(8); pid, tid = struct.unpack_from("<ii", mv, p); p += 8
    if st & S_TIME:
        need(8); t = q(p); p += 8
    if st & S_ADDR:
        need(8); p += 8
    if st & S_ID:
        need(8); ident = q(p); p += 8
    if st & S_STREAM_ID:
        need(8); p += 8
    if st & S_CPU:
        need(8); cpu = struct.unpack_from("<i", mv, p)[0]; p += 8
    if st & S_PERIOD:
        need(8); p += 8
    if st & S_READ:
        if lay.read_entry >= 0:
            need(8)
            nr = q(p)
            p += 8
            if nr > (end - p) // max(lay.read_entry, 1):
                raise WalkError("sample read group truncated", r)
            need(nr * lay.read_entry + lay.read_fixed)
            p += nr * lay.read_entry + lay.read_fixed
        else:
            need(lay.read_fixed)
            p += lay.read_fixed
    if st & S_CALLCHAIN:
        need(8)
        nr = q(p)
        p += 8
        if nr > (end - p) // 8:
            raise WalkError("sample callchain truncated", r)
        p += nr * 8
    raw, rawlen = -1, 0
    if st & S_RAW:
        need(4)
        k = struct.unpack_from("<I", mv, p)[0]
        p += 4
        if k > end - p:
            raise WalkError("sample raw data runs past its record", r)
        raw, rawlen = p, k
    return ident, pid, tid, t, cpu, raw, rawlen
