"""perf.data reader (tracepoint samples) -> per-event Arrow tables, equal to `perf script`.

Why it is built this way:
* The record walk is C (`_perfwalk.c`; Python fallback in perfdata_walk with the same
  output): a sample's RAW payload is the ftrace entry, whose fields sit at the offsets of
  the embedded format files.  With the C module the walk keeps only offset, time and attr
  per sample, perf's order merges the per-CPU time runs, and one fill pass in that order
  writes every table's columns and comm codes into one huge-page arena (page faults cost
  as much as the decode otherwise); without it, numpy gathers do the same.
* File mode, pipe mode (`-o -`) and `-z`: the payloads of COMPRESSED / COMPRESSED2 records
  form ONE zstd stream (a record may straddle two of them), decoded in order.  With libzstd
  in the C module (zwalk) each record is walked as soon as it is decoded, while it is in
  cache, and a sample keeps only a compact row (tid, cpu, the RAW bytes its fields need:
  about 40% of perf's record) that the fill pass reads instead of the record;
  without it the stream is decompressed into one buffer walked like the data section.
* Columns follow `perf script`: `pid` is the sample's tid (what perf prints), `comm` the
  thread's comm as perf tracks it from COMM/FORK records in time order (":tid" when perf
  never learnt it), `ts` the sample time in ns.  `seq` is perf's processing order: sample
  time, ties in file order.
* `lost`: one row per PERF_RECORD_LOST ("lost N chunks"; CPU and time of its sample_id),
  plus per CPU the rest up to the kernel's own lost-sample counters, which perf >= 6.0
  stores at the end as LOST_SAMPLES records (read_format LOST) spanning the whole trace;
  the two count the same losses, so they are never added up.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import TraceFormatError, UnknownEventError
from . import perfdata_header as ph
from . import perfdata_walk as pw
from . import tracedat_fields as tf
from .base import COMMON_SCHEMA, LOST_SCHEMA, EventFormat, Trace, TraceMeta

MAX_INFLATE = 1024          # decompressed bytes per compressed byte beyond which input is refused
MAX_DECOMPRESSED = 1 << 36


@dataclass
class _Segment:
    """One walked buffer: the data section / pipe stream, or the decompressed -z stream."""

    name: str
    buf: Any          # mmap or bytes
    base: int          # file offset of buf[0] (None-like -1 for decompressed data)
    w: pw.Walk
    start: int = 0     # the walked range of buf
    end: int = 0
    compact: bool = False   # buf holds zwalk's compact sample rows (and the other records verbatim)


def is_perf_data(head: bytes) -> bool:
    return head[:8] in (ph.PERF_MAGIC, ph.PERF_MAGIC_BE)


class PerfData(Trace):
    """A perf.data file of tracepoint samples.  Construct with `PerfData(path)`."""

    def __init__(self, path: str | os.PathLike, compiled: bool | None = None):
        self.path = os.fspath(path)
        self._compiled = pw.use_compiled() if compiled is None else compiled
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise TraceFormatError(self.path, "file", 0, "empty file")
                self._mm = _map(f.fileno(), size)
        except OSError as e:
            raise TraceFormatError(self.path, "file", None, e.strerror or str(e)) from None
        head = bytes(self._mm[:16])
        if head[:8] == ph.PERF_MAGIC_BE:
            raise TraceFormatError(self.path, "header", 0, "big-endian perf.data is not supported")
        if head[:8] != ph.PERF_MAGIC or len(head) < 16:
            raise TraceFormatError(self.path, "header", 0, "bad perf.data magic")
        hsize = struct.unpack_from("<Q", head, 8)[0]
        if hsize == ph.PIPE_HEADER_SIZE:
            self.h = ph.PerfHeader(pipe=True)
            start = self._pipe_prefix()
            end = len(self._mm)
        else:
            self.h = ph.parse_file_header(self.path, self._mm)
            start, end = self.h.data_offset, self.h.data_offset + self.h.data_size
        self._lay = self._layout()
        self._ids_s, self._owner_s = self._id_map()
        segs = [self._walk("data", self._mm, start, end, 0)]
        zseg = self._compressed(segs[0])
        if zseg is not None:
            segs.append(zseg)
        self._segs = segs
        self._tables: dict[str, pa.Table] | None = None
        self._build_index()
        h = self.h
        rel = ph.feature_string(h, ph.FEAT_OSRELEASE)
        host, arch = ph.feature_string(h, ph.FEAT_HOSTNAME), ph.feature_string(h, ph.FEAT_ARCH)
        tr = h.tracing
        self.meta = TraceMeta(
            path=self.path, format="perf.data", file_version=2,
            compression="zstd" if h.compressed or zseg is not None else "none",
            kernel_release=rel, uname=" ".join(x for x in ("Linux", host, rel, arch) if x) if rel else None,
            clock="perf", cpus=ph.nr_cpus(h), page_size=tr.page_size if tr else None,
            long_size=tr.long_size if tr else None, endian="little", buffers=[],
            extra={"pipe": h.pipe, "walker": "c" if self._compiled else "python",
                   "perf_version": ph.feature_string(h, ph.FEAT_VERSION), "hostname": host, "arch": arch,
                   "lost_chunks": self._lost_chunks, "lost_samples": self._lost_samples,
                   "non_tracepoint_samples": self._other_samples},
        )

    # -- metadata ---------------------------------------------------------------------------
    def _pipe_prefix(self) -> int:
        """Read the header records that precede the data in pipe mode; returns where data starts."""
        mm, r, end = self._mm, ph.PIPE_HEADER_SIZE, len(self._mm)
        while r + 8 <= end:
            typ, _misc, size = struct.unpack_from("<IHH", mm, r)
            if typ not in (ph.REC_HEADER_ATTR, ph.REC_HEADER_FEATURE, ph.REC_HEADER_TRACING_DATA, 65, 67, 69,
                           73, 74, 78, 79, 82) or size < 8 or r + size > end:
                break
            extra = 0
            if typ == ph.REC_HEADER_TRACING_DATA:
                if size < 12:
                    raise TraceFormatError(self.path, "HEADER_TRACING_DATA record", r, "record too short")
                extra = struct.unpack_from("<I", mm, r + 8)[0]
                if r + size + extra > end:
                    raise TraceFormatError(self.path, "HEADER_TRACING_DATA record", r,
                                           "tracing data runs past the end of the file")
            ph.add_pipe_record(self.path, self.h, mm, r, typ, size)
            r += size + extra
        return r

    def _layout(self) -> pw.Layout:
        """Sample layout(s) from the attrs: one sample type, or one per event picked by IDENTIFIER."""
        attrs = self.h.attrs
        if not attrs:
            raise TraceFormatError(self.path, "attrs", None, "no event attrs")
        a0 = attrs[0]
        lay = pw.Layout.of(a0.sample_type, a0.read_format, a0.sample_id_all)
        for a in attrs[1:]:
            other = pw.Layout.of(a.sample_type, a.read_format, a.sample_id_all)
            if (other.sid_size, other.sid_time, other.sid_cpu) != (lay.sid_size, lay.sid_time, lay.sid_cpu):
                raise TraceFormatError(self.path, "attrs", None, "events disagree on the sample_id layout")
        if len(attrs) > 1 and not all(a.sample_type & pw.S_IDENTIFIER for a in attrs) and (
                any(a.sample_type != a0.sample_type or a.read_format != a0.read_format for a in attrs)
                or not a0.sample_type & pw.S_ID):
            raise TraceFormatError(self.path, "attrs", None,
                                       "several events whose samples cannot be told apart (no IDENTIFIER)")
        if any(a.read_format != a0.read_format for a in attrs) and any(a.sample_type & pw.S_READ for a in attrs):
            raise TraceFormatError(self.path, "attrs", None, "events with different read formats are not supported")
        if any(a.sample_type != a0.sample_type for a in attrs):
            pairs = sorted((i, a.sample_type) for a in attrs for i in a.ids)
            ids = np.array([p[0] for p in pairs], np.uint64)
            if _has_dup(ids):
                raise TraceFormatError(self.path, "attrs", None, "a sample id belongs to two events")
            lay.ids, lay.types = ids, np.array([p[1] for p in pairs], np.uint64)
        for a in attrs:
            if a.type == ph.PERF_TYPE_TRACEPOINT:
                if not a.sample_type & pw.S_RAW:
                    raise TraceFormatError(self.path, "attrs", None, "tracepoint samples without RAW data "
                                           "(perf record -e sys:event sets it)")
                if self.h.tracing is None:
                    raise TraceFormatError(self.path, "header", None, "no tracing data (event formats) in the file")
        return lay

    def _id_map(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted sample ids and the attr index of each (empty for a single attr: all samples are attr 0)."""
        ids: list[int] = []
        owner: list[int] = []
        for i, a in enumerate(self.h.attrs):
            ids += a.ids
            owner += [i] * len(a.ids)
        ids_a = np.array(ids, np.uint64)
        order = np.argsort(ids_a, kind="stable")
        return ids_a[order], np.array(owner, np.int64)[order]

    def _lean_ok(self) -> bool:
        """Whether the id map tells every sample's attr (then compiled walks can be lean)."""
        return self._compiled and (len(self.h.attrs) == 1 or bool(len(self._ids_s) and not _has_dup(self._ids_s)))

    def _walk(self, name: str, buf, start: int, end: int, base: int, lean: bool | None = None) -> _Segment:
        """Walk one buffer.  Compiled walks are lean (offset, time, attr per sample) when the
        id map tells every sample's attr; _unlean walks again in full where a later step needs it."""
        if lean is None:
            lean = self._lean_ok()
        amap = (self._ids_s, self._owner_s.astype(np.int32)) if lean and len(self.h.attrs) > 1 else None
        try:
            w = pw.walk(buf, start, end, self._lay, compiled=self._compiled, lean=lean, amap=amap)
        except pw.WalkError as e:
            raise TraceFormatError(self.path, name, e.at if base >= 0 else None,
                                   e.msg + ("" if base >= 0 else f" (at byte {e.at} of the decompressed data)")) \
                from None
        return _Segment(name, buf, base, w, start, end)

    def _unlean(self) -> None:
        """Full walks (every s_* column) for the paths that read them: numpy gathers, errors."""
        for s in self._segs:
            if s.compact and s.w.lean:
                s.w = _unlean_rows(s.buf, s.w)
            elif s.w.lean:
                s.w = pw.walk(s.buf, s.start, s.end, self._lay, compiled=self._compiled)

    def _compressed_parts(self, seg: _Segment) -> np.ndarray:
        """(offset, length) in the file of every COMPRESSED(2) payload, in file order."""
        w, mm = seg.w, self._mm
        sel = np.flatnonzero((w.o_type == ph.REC_COMPRESSED) | (w.o_type == ph.REC_COMPRESSED2))
        parts = np.empty((len(sel), 2), np.int64)
        for k, i in enumerate(sel.tolist()):
            off, typ, size = int(w.o_off[i]), int(w.o_type[i]), int(w.o_size[i])
            if typ == ph.REC_COMPRESSED:
                parts[k] = (off + 8, size - 8)
            else:
                if size < 16:
                    raise TraceFormatError(self.path, "COMPRESSED2 record", off, "record too short")
                n = struct.unpack_from("<Q", mm, off + 8)[0]
                if n > size - 16:
                    raise TraceFormatError(self.path, "COMPRESSED2 record", off,
                                           f"data size {n} larger than its record ({size} bytes)")
                parts[k] = (off + 16, n)
        return parts

    def _compressed(self, seg: _Segment) -> _Segment | None:
        """The segment of the -z stream.  The compiled module with libzstd decodes and walks it
        in one pass (zwalk): into compact sample rows when every sample's attr follows from
        its id, else in place into one buffer; without libzstd (or address space for that
        buffer) the stream is decompressed by the zstandard module and walked like the data
        section."""
        cw = pw._cwalk if self._compiled else None
        if cw is None or not hasattr(cw, "zwalk"):
            z = self._decompress(seg)
            return None if z is None else self._walk("compressed data", z, 0, len(z), -1)
        parts = self._compressed_parts(seg)
        if not len(parts):
            return None
        at0 = int(seg.w.o_off[np.argmax((seg.w.o_type == ph.REC_COMPRESSED) | (seg.w.o_type == ph.REC_COMPRESSED2))])
        cap = min(MAX_DECOMPRESSED, MAX_INFLATE * int(parts[:, 1].sum()) + (64 << 20))
        lay = self._lay
        amap = (self._ids_s, self._owner_s.astype(np.int32)) if len(self.h.attrs) > 1 else \
            (np.zeros(0, np.uint64), np.zeros(0, np.int32))
        # compact rows (tid, cpu and the RAW bytes the fields need) when every sample's
        # attr is known from its id: about half the bytes of perf's records to write and re-read
        keep = self._row_keep() if self._lean_ok() else None
        try:       # MemoryError (no address space for the reservation): the buffered path below
            (data, s_off, s_time, s_attr, o_off, o_type, o_size, o_time, o_cpu) = cw.zwalk(
                self._mm, parts.reshape(-1), cap, lay.sample_type, lay.read_fixed, lay.read_entry, lay.sid_size,
                lay.sid_tid, lay.sid_time, lay.sid_cpu, np.ascontiguousarray(lay.ids, np.uint64),
                np.ascontiguousarray(lay.types, np.uint64), np.ascontiguousarray(amap[0], np.uint64),
                np.ascontiguousarray(amap[1], np.int32), keep)
        except ValueError as e:
            msg, _, at = str(e).rpartition(" @")
            if msg.startswith("corrupt zstd data"):
                raise TraceFormatError(self.path, "compressed data", at0, msg) from None
            if msg.startswith("decompresses to more than"):
                raise TraceFormatError(self.path, "compressed data", at0,
                                       f"decompresses to more than {cap} bytes; refusing") from None
            raise TraceFormatError(self.path, "compressed data", None,
                                   f"{msg} (at byte {at} of the decompressed data)") from None
        except MemoryError:
            z = self._decompress(seg)
            return None if z is None else self._walk("compressed data", z, 0, len(z), -1)
        empty = np.zeros(0, np.int64)
        w = pw.Walk(s_off, s_time, empty.astype(np.int32), empty.astype(np.int32), empty.astype(np.int32),
                    empty.astype(np.uint64), empty, empty, o_off, o_type, o_size, o_time, o_cpu,
                    s_attr=s_attr, lean=True)
        zseg = _Segment("compressed data", data, -1, w, 0, len(data), compact=keep is not None)
        if keep is None and not self._lean_ok():
            zseg.w = pw.walk(data, 0, len(data), lay, compiled=True)
        return zseg

    def _row_keep(self) -> np.ndarray:
        """RAW bytes a compact row keeps per attr: up to the end of the last field when all
        are numbers (the fill pass copies those), all of them otherwise (-1; strings and arrays
        are decoded from the bytes later), none for samples that are not tracepoints."""
        keep = np.zeros(len(self.h.attrs), np.int64)
        tr = self.h.tracing
        for i, a in enumerate(self.h.attrs):
            if a.type != ph.PERF_TYPE_TRACEPOINT:
                continue
            ev = tr.by_id.get(a.config) if tr else None
            if ev is None or any(tf.field_kind(f) != "int" for f in ev.fields):
                keep[i] = -1
            else:
                keep[i] = max((f.offset + f.size for f in ev.fields), default=0)
        return keep

    def _decompress(self, seg: _Segment) -> np.ndarray | None:
        """Concatenate the decompressed payloads of all COMPRESSED(2) records (one zstd stream)."""
        parts = self._compressed_parts(seg)
        if not len(parts):
            return None
        w = seg.w
        sel = np.flatnonzero((w.o_type == ph.REC_COMPRESSED) | (w.o_type == ph.REC_COMPRESSED2))
        mv = memoryview(self._mm)    # slices of it: the payloads are copied once, by the join
        views: list[memoryview] = []
        try:
            views += [mv[o:o + n] for o, n in parts.tolist()]
            comp = b"".join(views)
        finally:
            for v in views:
                v.release()
            mv.release()
        import io

        import zstandard
        cap = min(MAX_DECOMPRESSED, MAX_INFLATE * len(comp) + (64 << 20))
        # decompressed straight into one growing numpy buffer (huge pages, no chunk copies):
        # perf's records compress ~12x, so 16x is usually the only allocation
        out = _huge_empty(min(cap, max(1 << 16, 16 * len(comp))))
        n = 0
        try:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(comp), read_across_frames=True) as r:
                while True:
                    if n == len(out):
                        if n >= cap:
                            if not r.read(1):
                                break
                            raise TraceFormatError(self.path, "compressed data", int(w.o_off[sel[0]]),
                                                   f"decompresses to more than {cap} bytes; refusing")
                        grown = _huge_empty(min(cap, 2 * len(out)))
                        grown[:n] = out[:n]
                        out = grown
                    got = r.readinto(out[n:].data)
                    if not got:
                        break
                    n += got
        except zstandard.ZstdError as e:
            raise TraceFormatError(self.path, "compressed data", int(w.o_off[sel[0]]),
                                   f"corrupt zstd data: {e}") from None
        return out[:n]

    # -- index: event of every sample, seq, comm, lost ---------------------------------------
    def _build_index(self) -> None:
        h = self.h
        ids_s, owner_s = self._ids_s, self._owner_s
        if any(s.w.lean and len(h.attrs) > 1 and len(s.w.s_attr) and int(s.w.s_attr.min()) < 0
               for s in self._segs):
            self._unlean()          # an id no attr has: the full walk names it below
        fmt_of_attr: list[EventFormat | None] = []
        for a in h.attrs:
            ev = h.tracing.by_id.get(a.config) if (a.type == ph.PERF_TYPE_TRACEPOINT and h.tracing) else None
            if a.type == ph.PERF_TYPE_TRACEPOINT and ev is None:
                raise TraceFormatError(self.path, "attrs", None, f"tracepoint id {a.config} has no format in the file")
            fmt_of_attr.append(ev)
        n_ev = len(h.attrs)
        cw = pw._cwalk if self._compiled else None
        times, attr_of = [], []
        for s in self._segs:
            w = s.w
            if w.lean:
                ai = w.s_attr if len(h.attrs) > 1 else np.zeros(len(w.s_off), np.int32)
            elif len(h.attrs) == 1 or not len(w.s_id):
                ai = np.zeros(len(w.s_id), np.int32)
            elif cw is not None and len(ids_s):
                try:
                    ai = cw.attr_of(w.s_id, ids_s, owner_s.astype(np.int32))
                except ValueError as e:
                    i = int(str(e).rpartition(" @")[2])
                    raise TraceFormatError(self.path, s.name, int(w.s_off[i]) if s.base >= 0 else None,
                                           f"sample with id {int(w.s_id[i])}, which no event attr has") from None
            else:
                j = np.searchsorted(ids_s, w.s_id)
                jc = np.minimum(j, max(len(ids_s) - 1, 0))
                bad = (j >= len(ids_s)) | (ids_s[jc] != w.s_id) if len(ids_s) else np.ones(len(j), bool)
                if bad.any():
                    i = int(np.argmax(bad))
                    raise TraceFormatError(self.path, s.name, int(w.s_off[i]) if s.base >= 0 else None,
                                           f"sample with id {int(w.s_id[i])}, which no event attr has")
                ai = owner_s[jc].astype(np.int32)
            times.append(w.s_time)
            attr_of.append(ai)
        # samples in one segment (what perf record writes, -z included): its arrays as they
        # are, no concatenated copies
        full = [k for k, t in enumerate(times) if len(t)]
        if len(full) == 1:
            t_u, a_all = times[full[0]], attr_of[full[0]]
        else:
            t_u = np.concatenate(times) if times else np.zeros(0, np.uint64)
            a_all = np.concatenate(attr_of) if attr_of else np.zeros(0, np.int32)
        t_all = t_u.view(np.int64)
        is_tp = np.array([f is not None for f in fmt_of_attr], bool)
        if cw is not None:
            cnt = cw.counts(np.ascontiguousarray(a_all, np.int32), n_ev)
        else:
            cnt = np.bincount(a_all, minlength=n_ev) if len(a_all) else np.zeros(n_ev, np.int64)
        self._cnt = cnt
        self._other_samples = int(cnt[~is_tp].sum())
        # perf's order: time, then file order (a stable sort; the compiled one merges the per-CPU runs)
        self._order = cw.time_order(t_u) if cw is not None else np.argsort(t_all, kind="stable")
        self._t_all, self._a_all, self._fmt_of_attr, self._n_ev = t_all, a_all, fmt_of_attr, n_ev
        self._seg_lens = [len(t) for t in times]
        self._seg_lo = np.cumsum([0] + self._seg_lens)
        counts: dict[str, int] = {}
        for i, f in enumerate(fmt_of_attr):
            if f is not None and cnt[i]:
                counts[f.full_name] = counts.get(f.full_name, 0) + int(cnt[i])
        self._counts = dict(sorted(counts.items()))
        self._lost_table()

    def _side_records(self) -> list[tuple[int, int, int, int, int, int]]:
        """(time, segment, offset, type, size, cpu) of COMM/FORK records, in perf's processing order."""
        out = []
        for k, s in enumerate(self._segs):
            w = s.w
            sel = np.flatnonzero((w.o_type == ph.REC_COMM) | (w.o_type == ph.REC_FORK))
            for i in sel.tolist():
                out.append((int(w.o_time[i]), k, int(w.o_off[i]), int(w.o_type[i]), int(w.o_size[i]),
                            int(w.o_cpu[i])))
        out.sort(key=lambda r: (r[0], r[1], r[2]))
        return out

    def _comm_changes(self) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], list[str]]:
        """Replay COMM/FORK as perf's thread table does: (tid, time, ord, name index) per change."""
        cur: dict[int, str] = {}
        names: list[str] = []
        index: dict[str, int] = {}
        c_tid, c_time, c_ord, c_name = [], [], [], []
        sid = self._lay.sid_size if self._lay.sid_size else 0
        for t, k, off, typ, size, _cpu in self._side_records():
            buf = self._segs[k].buf
            body_end = off + size - (sid if size >= 8 + sid else 0)
            if typ == ph.REC_COMM:
                if size < 16:
                    continue
                _pid, tid = struct.unpack_from("<ii", buf, off + 8)
                raw = bytes(buf[off + 16:body_end])
                name = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            else:
                if size < 24:
                    continue
                _pid, _ppid, tid, ptid = struct.unpack_from("<iiii", buf, off + 8)
                parent = cur.get(ptid)
                if parent is None:     # perf copies the parent's comm only when it was set
                    cur.pop(tid, None)
                    name = f":{tid}"
                    ni = index.setdefault(name, len(names))
                    if ni == len(names):
                        names.append(name)
                    c_tid.append(tid); c_time.append(t); c_ord.append((k << 48) | off); c_name.append(ni)
                    continue
                name = parent
            cur[tid] = name
            ni = index.setdefault(name, len(names))
            if ni == len(names):
                names.append(name)
            c_tid.append(tid); c_time.append(t); c_ord.append((k << 48) | off); c_name.append(ni)
        return (np.array(c_tid, np.int64), np.array(c_time, np.int64), np.array(c_ord, np.int64),
                np.array(c_name, np.int64)), names

    def _comm_all(self) -> None:
        """comm code of every sample (in seq order) and the name table, computed once for all events."""
        (c_tid, _, _, c_name), names = self._changes
        n = len(self._order)
        tids = self._tid_all[self._order].astype(np.int64)
        rows = np.arange(n, dtype=np.int64)
        code = np.full(n, -1, np.int64)
        if len(c_tid):
            pos = self._chg_pos
            key = c_tid * (n + 1) + pos
            o = np.argsort(key, kind="stable")
            ks, ns_, kt = key[o], c_name[o], c_tid[o]
            general = np.ones(n, bool)
            lo = int(min(tids.min(initial=0), c_tid.min()))
            hi = int(max(tids.max(initial=0), c_tid.max()))
            if hi - lo < (1 << 23):
                # a sample after its thread's last comm change (most of them) takes that name from a
                # lookup table; only samples between two changes of their thread need a search
                last = np.r_[kt[1:] != kt[:-1], True]
                first = np.r_[True, kt[1:] != kt[:-1]]
                code_lut = np.full(hi - lo + 1, -1, np.int64)
                pos_lut = np.full(hi - lo + 1, np.iinfo(np.int64).max, np.int64)
                first_lut = np.full(hi - lo + 1, np.iinfo(np.int64).max, np.int64)
                code_lut[kt[last] - lo] = ns_[last]
                pos_lut[kt[last] - lo] = ks[last] - kt[last] * (n + 1)
                first_lut[kt[first] - lo] = ks[first] - kt[first] * (n + 1)
                ti = tids - lo
                after_last = pos_lut[ti] <= rows
                code = np.where(after_last, code_lut[ti], -1)
                general = ~after_last & (first_lut[ti] <= rows)     # between the first and the last change
            if general.any():
                gt, gr = tids[general], rows[general]
                j = np.searchsorted(ks, gt * (n + 1) + gr, side="right") - 1
                jj = np.maximum(j, 0)
                ok = (j >= 0) & (kt[jj] == gt)
                code[general] = np.where(ok, ns_[jj], -1)
        miss = code < 0
        out_names = list(names)
        if miss.any():            # threads perf never saw a COMM for: ":tid"
            ut, inv = np.unique(tids[miss], return_inverse=True)
            base = len(out_names)
            out_names += [f":{int(t)}" for t in ut.tolist()]
            code[miss] = base + inv
        self._comm_code = code.astype(np.int32)
        self._comm_names = pa.array(out_names, pa.string())

    def _change_positions(self) -> None:
        """For every comm change: how many samples precede it in perf's order (its seq position)."""
        (_, c_time, c_ord, _), _ = self._changes
        full = [k for k, sg in enumerate(self._segs) if len(sg.w.s_off)]
        cw = pw._cwalk if self._compiled else None
        if cw is not None and len(full) == 1:
            sg = self._segs[full[0]]
            try:       # one merge walk along perf's order (changes sorted as the sort compares)
                self._chg_pos = cw.change_pos(sg.w.s_time, sg.w.s_off, full[0] << 48, self._order, c_time, c_ord)
                return
            except ValueError:
                pass
        ts_sorted = self._t_all[self._order]
        lo = np.searchsorted(ts_sorted, c_time, side="left")
        hi = np.searchsorted(ts_sorted, c_time, side="right")
        pos = lo.copy()
        if np.any(hi > lo):      # same timestamp as samples: file order decides
            ords = self._sample_ords()
            for i in np.flatnonzero(hi > lo).tolist():
                pos[i] = lo[i] + int(np.sum(ords[self._order[lo[i]:hi[i]]] < c_ord[i]))
        self._chg_pos = pos.astype(np.int64)

    def _sample_ords(self) -> np.ndarray:
        return np.concatenate([(np.int64(k) << 48) | s.w.s_off for k, s in enumerate(self._segs)]) \
            if self._segs else np.zeros(0, np.int64)

    def _id_cpu(self) -> dict[int, int]:
        """Sample id -> CPU for system-wide recordings: perf stores an event's ids CPU by CPU."""
        b = self.h.features.get(ph.FEAT_NRCPUS)
        online = struct.unpack_from("<I", b, 4)[0] if b and len(b) >= 8 else None
        return {i: k for a in self.h.attrs if len(a.ids) == online for k, i in enumerate(a.ids)}

    def _lost_table(self) -> None:
        """Lost events per CPU: PERF_RECORD_LOST rows (perf's "lost N chunks"), topped up to the
        kernel's own per-event counters when perf stored them (LOST_SAMPLES, read_format LOST)."""
        rows = []
        chunks = 0
        kernel: dict[int, int] = {}
        id_cpu = self._id_cpu()
        for s in self._segs:
            w = s.w
            for i in np.flatnonzero((w.o_type == ph.REC_LOST) | (w.o_type == ph.REC_LOST_SAMPLES)).tolist():
                off, typ, size = int(w.o_off[i]), int(w.o_type[i]), int(w.o_size[i])
                at = off + (16 if typ == ph.REC_LOST else 8)
                if size < at - off + 8:
                    raise TraceFormatError(self.path, "LOST record", off if s.base >= 0 else None, "record too short")
                n = min(struct.unpack_from("<Q", s.buf, at)[0], (1 << 62))
                t = int(w.o_time[i])
                if typ == ph.REC_LOST:
                    rows.append((int(w.o_cpu[i]), t, t, n))
                    chunks += 1
                else:
                    sid = self._lay.sid_size
                    ident = struct.unpack_from("<Q", s.buf, off + size - 8)[0] \
                        if sid and self._lay.sample_type & pw.S_IDENTIFIER and size >= 16 + sid else None
                    cpu = id_cpu.get(ident, -1) if ident is not None else -1
                    kernel[cpu] = kernel.get(cpu, 0) + n
        self._lost_chunks, self._lost_samples = chunks, sum(kernel.values())
        if kernel:
            t0 = int(self._t_all.min()) if len(self._t_all) else 0
            t1 = int(self._t_all.max()) if len(self._t_all) else 0
            for cpu, n in sorted(kernel.items()):
                rest = n - sum(r[3] for r in rows if r[0] == cpu)
                if rest > 0:
                    rows.append((cpu, t0, t1, rest))
        self._lost = pa.Table.from_arrays(
            [_arrow(np.array([r[i] for r in rows], LOST_SCHEMA.field(i).type.to_pandas_dtype())) for i in range(4)],
            schema=LOST_SCHEMA)

    # -- contract ---------------------------------------------------------------------------
    def formats(self) -> dict[str, EventFormat]:
        return self.h.tracing.formats if self.h.tracing else {}

    def events(self) -> dict[str, int]:
        return dict(self._counts)

    @property
    def lost(self) -> pa.Table:
        return self._lost

    def _table(self, full_name: str, columns: list[str] | None) -> pa.Table:
        if full_name not in self.formats():
            raise UnknownEventError(f"{self.path}: no event {full_name!r} in this trace")
        if self._tables is None:
            self._decode_all()
        assert self._tables is not None
        t = self._tables.get(full_name)
        if t is None:
            t = self._schema(self.formats()[full_name]).empty_table()
        return t.select(columns) if columns else t

    def _schema(self, ev: EventFormat) -> pa.Schema:
        return pa.schema(list(COMMON_SCHEMA) + tf.schema_fields(ev, {f.name for f in COMMON_SCHEMA}))

    def _decode_all(self) -> None:
        self._changes = self._comm_changes()
        self._change_positions()
        self._tables = {}
        if self._decode_c():
            return
        self._unlean()
        self._tid_all = np.concatenate([sg.w.s_tid for sg in self._segs])
        self._comm_all()
        order = self._order
        a_sorted = self._a_all[order]
        by_name: dict[str, list[int]] = {}
        for i, f in enumerate(self._fmt_of_attr):
            if f is not None:
                by_name.setdefault(f.full_name, []).append(i)
        for name, attr_ids in by_name.items():
            m = np.isin(a_sorted, attr_ids) if len(attr_ids) > 1 else a_sorted == attr_ids[0]
            rows = np.flatnonzero(m)
            if len(rows):
                self._tables[name] = self._table_of(self.formats()[name], rows, order[rows])

    def _decode_c(self) -> bool:
        """All tables in one compiled pass over the samples in seq order (see _perfwalk.c fill).

        Used when the samples sit in one buffer and every event has one attr (what perf
        record writes); otherwise the numpy gathers of _table_of do the same.  The comm of
        every row comes out of the same pass (the changes replayed in seq order into a tid
        table) and its string column is assembled in C: per-sample numpy lookups and an
        Arrow take cost more than the decode itself."""
        with_samples = [k for k, sg in enumerate(self._segs) if len(sg.w.s_off)]
        names = [f.full_name for f in self._fmt_of_attr if f is not None]
        cw = pw._cwalk
        if cw is None or not self._compiled or len(with_samples) != 1 or len(names) != len(set(names)):
            return False
        sg = self._segs[with_samples[0]]
        w = sg.w
        cnt = self._cnt
        made: list[tuple[int, EventFormat, dict[str, np.ndarray], dict[str, np.ndarray]]] = []
        plan: list[tuple[int, EventFormat, int, list[tuple[str, np.dtype]]]] = []
        total = 0
        for a, ev in enumerate(self._fmt_of_attr):
            if ev is None or not cnt[a]:
                continue
            n = int(cnt[a])
            kinds = {f.name: tf.field_kind(f) for f in ev.fields}
            n_idx = n if any(k != "int" for k in kinds.values()) else 0    # rows of non-numeric fields
            specs: list[tuple[str, np.dtype]] = [("seq", np.dtype(np.int64)), ("ts", np.dtype(np.int64)), ("cpu", np.dtype(np.int32)),
                     ("pid", np.dtype(np.int32)), ("comm", np.dtype(np.int32))]
            specs += [(f"f:{f.name}", np.dtype(f"<{'i' if f.signed else 'u'}{f.size}"))
                      for f in ev.fields if kinds[f.name] == "int"]
            total += sum(-(-n * dt.itemsize // 64) * 64 for _, dt in specs) + 2 * (-(-n_idx * 8 // 64) * 64)
            plan.append((a, ev, n_idx, specs))
        # every output column is a view of ONE allocation: numpy backs allocations of 4 MB and
        # more with transparent huge pages, so the fill pass takes a few hundred page faults
        # instead of one per 4 kB of output (those cost as much as the decode itself)
        arena = cw.huge_empty(total)
        used = 0

        def carve(n: int, dt: np.dtype) -> np.ndarray:
            nonlocal used
            col = arena[used:used + n * dt.itemsize].view(dt)
            used += -(-n * dt.itemsize // 64) * 64
            return col

        by_attr: dict[int, tuple] = {}
        for a, ev, n_idx, specs in plan:
            n = int(cnt[a])
            cols: dict[str, np.ndarray] = {k: carve(n, dt) for k, dt in specs[:5]}
            nums = {k[2:]: carve(n, dt) for k, dt in specs[5:]}
            cols["raw"], cols["rawlen"] = carve(n_idx, np.dtype(np.int64)), carve(n_idx, np.dtype(np.int64))
            need = max((f.offset + (4 if (f.data_loc or f.rel_loc) else f.size) for f in ev.fields), default=0)
            by_attr[a] = (cols["seq"], cols["ts"], cols["cpu"], cols["pid"], cols["comm"],
                          cols["raw"] if n_idx else None, cols["rawlen"] if n_idx else None,
                          need, [(f.offset, f.size, nums[f.name]) for f in ev.fields if f.name in nums])
            made.append((a, ev, cols, nums))
        groups = [by_attr.get(a) for a in range(len(self._fmt_of_attr))]
        (c_tid, _, _, c_name), names = self._changes
        co = np.argsort(self._chg_pos, kind="stable")
        try:
            lay = self._lay
            got = cw.fill(sg.buf, w.s_off, self._a_all, self._order, groups, self._chg_pos[co],
                          c_tid[co].astype(np.int32), c_name[co].astype(np.int32), lay.sample_type, lay.read_fixed,
                          lay.read_entry, np.ascontiguousarray(lay.ids, np.uint64),
                          np.ascontiguousarray(lay.types, np.uint64), sg.compact, w.s_time)
        except ValueError as e:
            msg, _, at = str(e).rpartition(" @")
            i = int(at) if at.isdigit() else 0
            raise TraceFormatError(self.path, sg.name, int(w.s_off[i]) if sg.base >= 0 and i < len(w.s_off) else None,
                                   f"sample: {msg}") from None
        buf = np.frombuffer(sg.buf, np.uint8)
        assert self._tables is not None
        miss = [cols["pid"][cols["comm"] < 0] for _, _, cols, _ in made]    # pid column = the tid
        out_names = list(names)
        extra = np.zeros(0, np.int32)
        if any(len(m) for m in miss):       # threads perf never saw a COMM for: ":tid"
            extra = _sorted_set(np.concatenate(miss))
            out_names += [f":{int(t)}" for t in extra.tolist()]
        enc = [x.encode() for x in out_names]
        name_off = np.zeros(len(enc) + 1, np.int32)
        np.cumsum([len(x) for x in enc], out=name_off[1:])
        name_data = b"".join(enc)
        for a, _ev, cols, _nums in made:
            if int(got[a]) != int(cnt[a]):
                raise TraceFormatError(self.path, sg.name, None, "sample count changed during the decode")
            code = cols["comm"]
            bad = code < 0
            if bad.any():
                code[bad] = len(names) + np.searchsorted(extra, cols["pid"][bad])
        comm_cols = cw.take_strings(name_off, name_data, [cols["comm"] for _, _, cols, _ in made])
        for (_a, ev, cols, nums), (off, data) in zip(made, comm_cols):
            schema = self._schema(ev)
            code = cols["comm"]
            comm = pa.Array.from_buffers(pa.string(), len(code), [None, pa.py_buffer(off), pa.py_buffer(data)])
            arrays = {"seq": _arrow(cols["seq"]), "ts": _arrow(cols["ts"]), "cpu": _arrow(cols["cpu"]),
                      "pid": _arrow(cols["pid"]), "comm": comm}
            taken = set(arrays)
            for f in ev.fields:
                name = tf.column_name(f, taken)
                if f.name in nums:
                    arrays[name] = _arrow(nums[f.name])
                else:
                    arrays[name] = tf.column(buf, cols["raw"], cols["rawlen"], f, False, self.path, sg.name, 0)
            self._tables[ev.full_name] = pa.Table.from_arrays([arrays[nm] for nm in schema.names], schema=schema)
        return True

    def _table_of(self, ev: EventFormat, rows: np.ndarray, idx: np.ndarray) -> pa.Table:
        """Table of one event: `rows` = seq positions, `idx` = global sample indices (both in seq order)."""
        schema = self._schema(ev)
        n = len(idx)
        seg = np.repeat(np.arange(len(self._seg_lens), dtype=np.int8), self._seg_lens)[idx]
        ts = self._t_all[idx]
        cpu = np.empty(n, np.int32)
        tid = np.empty(n, np.int32)
        raw = np.empty(n, np.int64)
        rawlen = np.empty(n, np.int64)
        parts = []
        for k, s in enumerate(self._segs):
            sel = np.flatnonzero(seg == k)
            if not len(sel):
                continue
            li = idx[sel] - self._seg_lo[k]
            cpu[sel], tid[sel] = s.w.s_cpu[li], s.w.s_tid[li]
            raw[sel], rawlen[sel] = s.w.s_raw[li], s.w.s_rawlen[li]
            parts.append((k, sel))
        need = max((f.offset + (4 if (f.data_loc or f.rel_loc) else f.size) for f in ev.fields), default=0)
        short = rawlen < need
        if short.any():
            i = int(np.argmax(short))
            raise TraceFormatError(self.path, "sample", None,
                                   f"{ev.full_name} raw data of {int(rawlen[i])} bytes is shorter than its format "
                                   f"({need} bytes)")
        arrays = {"seq": pa.array(rows.astype(np.int64)), "ts": pa.array(ts), "cpu": pa.array(cpu),
                  "pid": pa.array(tid), "comm": self._comm_names.take(pa.array(self._comm_code[rows]))}
        taken = set(arrays)
        for f in ev.fields:
            name = tf.column_name(f, taken)
            kind = tf.field_kind(f)
            if len(parts) == 1:
                k, sel = parts[0]
                buf = np.frombuffer(self._segs[k].buf, np.uint8)
                col = _gather(buf, raw + f.offset, f.size, f.signed) if kind == "int" else \
                    tf.column(buf, raw, rawlen, f, False, self.path, self._segs[k].name, 0)
                arrays[name] = pa.array(col) if kind == "int" else col
                continue
            pieces, poss = [], []
            for k, sel in parts:
                buf = np.frombuffer(self._segs[k].buf, np.uint8)
                col = _gather(buf, raw[sel] + f.offset, f.size, f.signed) if kind == "int" else \
                    tf.column(buf, raw[sel], rawlen[sel], f, False, self.path, self._segs[k].name, 0)
                pieces.append(pa.array(col) if kind == "int" else col)
                poss.append(sel)
            pos = np.concatenate(poss)
            arrays[name] = pa.concat_arrays(pieces).take(pa.array(np.argsort(pos, kind="stable")))
        return pa.Table.from_arrays([arrays[nm] for nm in schema.names], schema=schema)


POPULATE_MAX = 1 << 30


def _map(fd: int, size: int) -> mmap.mmap:
    """The file, read-only; page tables filled at once (MAP_POPULATE) up to POPULATE_MAX: every
    page is read anyway, and for a -z file of a few MB the faults one by one cost more than
    the walk of its data section."""
    pop = getattr(mmap, "MAP_POPULATE", 0) if size <= POPULATE_MAX else 0
    if pop:
        return mmap.mmap(fd, 0, flags=mmap.MAP_SHARED | pop, prot=mmap.PROT_READ)
    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)


def _unlean_rows(buf: np.ndarray, w: pw.Walk) -> pw.Walk:
    """The full sample columns of a compact-row segment (zwalk), for the numpy path: each row
    is tid i32, cpu i32, raw length u32 and the RAW bytes (see _perfwalk.c zconsume; the time
    is s_time).  Rows are 4-aligned, so every part is one u32 gather."""
    u = buf[:len(buf) // 4 * 4].view("<u4")
    i = w.s_off >> 2
    tid = u[i].view(np.int32)
    return pw.Walk(w.s_off, w.s_time, tid.copy(), tid, u[i + 1].view(np.int32), np.zeros(len(i), np.uint64),
                   w.s_off + 12, u[i + 2].astype(np.int64), w.o_off, w.o_type, w.o_size, w.o_time, w.o_cpu,
                   s_attr=w.s_attr, lean=False)


def _sorted_set(a: np.ndarray) -> np.ndarray:
    """np.unique(a) without np.unique: its first call imports numpy.ma (10-20 ms, more than
    reading a perf.data file of 400k samples takes otherwise)."""
    s = np.sort(a)
    return s[np.r_[True, s[1:] != s[:-1]]] if len(s) else s


def _has_dup(a: np.ndarray) -> bool:
    """Whether a has a value twice (see _sorted_set)."""
    return len(_sorted_set(a)) != len(a)


def _huge_empty(n: int) -> np.ndarray:
    """n uninitialised bytes, on huge-page boundaries when the compiled module is there."""
    return pw._cwalk.huge_empty(n) if pw._cwalk is not None else np.empty(n, np.uint8)


def _arrow(a: np.ndarray) -> pa.Array:
    """A numeric Arrow array over a contiguous numpy column, without copying.

    Arrow's own conversion (pa.array) first initialises its pandas detection, a one-off
    cost per process (milliseconds) larger than building a lost table or a column."""
    a = np.ascontiguousarray(a)
    return pa.Array.from_buffers(pa.from_numpy_dtype(a.dtype), len(a), [None, pa.py_buffer(a)])


def _gather(b: np.ndarray, at: np.ndarray, size: int, signed: bool) -> np.ndarray:
    """Little-endian ints at byte offsets `at` (bounds checked by the caller).

    RAW payloads start 4 bytes into an 8-aligned record, so 8-byte fields are 4-aligned:
    two u32 gathers instead of a byte-matrix gather (5x faster).
    """
    dt = np.dtype(f"<{'i' if signed else 'u'}{size}")
    if size == 1:
        return b[at].view(dt)
    if len(at) and not np.any(at & 3):
        w = b[:len(b) // 4 * 4].view("<u4")
        i = at >> 2
        if size == 4:
            return w[i].view(dt)
        if size == 8:
            return (w[i].astype(np.uint64) | (w[i + 1].astype(np.uint64) << np.uint64(32))).view(dt)
    return tf.gather_int(b, at, size, signed, False)
