"""trace-cmd trace.dat reader (file versions 6 and 7) -> per-event Arrow tables.

Why it is built this way:
* The file is mmap-ed; per-CPU page data is walked in bounded blocks (8 MB of pages, or a
  group of decompressed zstd/zlib chunks of v7), and walked pages are dropped from RSS.
* Two passes.  Pass 1 walks the records for merge keys and event types only; the merge then
  gives every record its `seq` and its row in its event's table.  Pass 2 walks again and
  writes each record straight into preallocated columns at that row: no concatenation, no
  sort, peak memory = the tables plus 8 bytes per record.
* `seq` is the order `trace-cmd report` prints: a k-way merge of the per-CPU streams picking
  the smallest timestamp, ties to the lower CPU (then buffer order).  A greedy merge of
  streams equals a stable sort by each stream's running-maximum timestamp, which is what
  the merge (C heap merge, or numpy searchsorted) uses.
* The walks are C (`_walk.c`, optional, drops the GIL; streams run in threads) or numpy (a
  "lockstep" walker advancing all pages of a block at once); tests check both agree.
* Fields are read at the offsets/sizes of the trace's own format files, never constants.
* Instances (BUFFER options) are read like the top buffer; when more than one buffer holds
  records, tables get an extra `buffer` string column (instance name, "" = top buffer) right
  after `comm`, and `meta.buffers` lists the names.  Streams are ordered (buffer, cpu).
  A format field whose name equals a common column (e.g. `cpu`) becomes `cpu_`.
* `lost`: one row per page whose commit word has RB_MISSED_EVENTS; count from the value
  stored after the data (RB_MISSED_STORED) or -1; window = last record before the page on
  that CPU (or the page's first record when there is none) .. first record of the page.
* Timestamps are the ring-buffer clock, scaled by the TSC2NSEC option's mult/shift when the
  file has one (as trace-cmd 3.1.6 does), plus the OFFSET and DATE options (trace-cmd report
  adds both).  TIME_SHIFT (guest/host sync of several files) is not applied.
"""
from __future__ import annotations

import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (Array.take imports it lazily; keep that out of the timed path)

from ..errors import TraceFormatError, UnknownEventError
from .base import COMMON_SCHEMA, LOST_SCHEMA, EventFormat, Trace, TraceMeta
from . import tracedat_fields as tf
from . import tracedat_pages as tp
from .tracedat_header import BufferInfo, CpuData, Decompressor, Header
from .tracedat_sections import parse


@dataclass
class _Stream:
    """One (buffer, cpu) record stream."""

    index: int
    buffer: str
    cpu: int
    buf: BufferInfo | None = None
    cd: CpuData | None = None
    nrec: int = 0

    @property
    def where(self) -> str:
        return f"buffer {self.buffer!r} cpu {self.cpu}"


class _Columns:
    """Output columns of one event type: numeric ones preallocated and filled by row position."""

    def __init__(self, ev: EventFormat, n: int, multi: bool):
        self.ev, self.n, self.multi = ev, n, multi
        self.seq = np.empty(n, np.int64)   # filled by the merge, before the other columns exist
        self.ts: np.ndarray | None = None
        self.cpu: np.ndarray | None = None
        self.pid: np.ndarray | None = None
        self.stream: np.ndarray | None = None
        self.num: dict[str, np.ndarray] = {}
        self.other: dict[str, list] = {}   # name -> list of (rows, arrow array)
        self.need = max((f.offset + (4 if (f.data_loc or f.rel_loc) else f.size) for f in ev.fields), default=0)

    def alloc(self) -> "_Columns":
        n = self.n
        self.ts = np.empty(n, np.int64)
        self.cpu = np.empty(n, np.int32)
        self.pid = np.empty(n, np.int32)
        self.stream = np.empty(n, np.int32) if self.multi else None
        for f in self.ev.fields:
            if tf.field_kind(f) == "int":
                self.num[f.name] = np.empty(n, np.dtype(f"{'i' if f.signed else 'u'}{f.size}"))
            else:
                self.other[f.name] = []
        return self


class TraceDat(Trace):
    """A trace-cmd trace.dat file.  Construct with `TraceDat(path)`; decoding is lazy."""

    def __init__(self, path: str | os.PathLike, compiled: bool | None = None):
        self.path = os.fspath(path)
        self._compiled = tp.use_compiled() if compiled is None else compiled
        try:
            fd = open(self.path, "rb")
        except OSError as e:
            raise TraceFormatError(self.path, "file", None, e.strerror or str(e)) from None
        with fd:
            size = os.fstat(fd.fileno()).st_size
            if size == 0:
                raise TraceFormatError(self.path, "file", 0, "empty file")
            self._mm = mmap.mmap(fd.fileno(), 0, access=mmap.ACCESS_READ)
        self.h: Header = parse(self.path, self._mm)
        h = self.h
        self._dec = Decompressor(self.path, h.compression) if h.version >= 7 else None
        self._big = h.endian == "big"
        uname = str(h.options["uname"]) if h.options.get("uname") else None
        parts = uname.split() if uname else []
        self.meta = TraceMeta(
            path=self.path, format="trace.dat", file_version=h.version, compression=h.compression,
            kernel_release=parts[2] if len(parts) >= 3 else None, uname=uname,
            clock=str(h.options.get("trace_clock") or "") or (h.buffers[0].clock if h.buffers else None),
            cpus=h.cpus, page_size=h.page_size, long_size=h.long_size, endian=h.endian,
            buffers=[b.name for b in h.buffers],
            extra={k: v for k, v in h.options.items() if k not in ("uname", "trace_clock")}
            | {"page_sizes": {b.name: b.page_size for b in h.buffers},
               "kernel_long_size": h.page_header.commit_size,
               "walker": "c" if self._compiled else "numpy"},
        )
        self._streams = [
            _Stream(i, b.name, cd.cpu, b, cd) for i, (b, cd) in enumerate((b, cd) for b in h.buffers for cd in b.cpus)
        ]
        self._tables: dict[str, pa.Table] | None = None
        self._lost: pa.Table | None = None
        self._counts: dict[str, int] | None = None
        self._pos: list[np.ndarray] | None = None
        self._block_bytes = tp.BLOCK_BYTES
        t2n: Any = h.options.get("tsc2nsec")
        self._tsc = (t2n["mult"], t2n["shift"]) if t2n and t2n["mult"] and t2n["shift"] <= 32 else None
        self._local = threading.local()
        self._cols: dict[int, _Columns] | None = None

    # -- contract ---------------------------------------------------------------------------
    def formats(self) -> dict[str, EventFormat]:
        return self.h.formats

    def events(self) -> dict[str, int]:
        if self._counts is None:
            self._index()
        return dict(self._counts)

    @property
    def lost(self) -> pa.Table:
        if self._lost is None:
            self._index()
        return self._lost

    def _table(self, full_name: str, columns: list[str] | None) -> pa.Table:
        if full_name not in self.h.formats:
            raise UnknownEventError(f"{self.path}: no event {full_name!r} in this trace")
        self._decode_all()
        t = self._tables.get(full_name)
        if t is None:
            t = self._schema(self.h.formats[full_name]).empty_table()
        return t.select(columns) if columns else t

    # -- decoding ---------------------------------------------------------------------------
    def _multi_buffer(self) -> bool:
        return sum(1 for b in self.h.buffers if any(cd.size for cd in b.cpus)) > 1

    def _schema(self, ev: EventFormat) -> pa.Schema:
        fields = list(COMMON_SCHEMA)
        if self._multi_buffer():
            fields.append(pa.field("buffer", pa.string()))
        return pa.schema(fields + tf.schema_fields(ev, {f.name for f in fields}))

    def _common(self) -> tp.Common:
        ct, cp = self.h.common.get("common_type"), self.h.common.get("common_pid")
        if ct is None or cp is None or ct.size not in (1, 2, 4) or cp.size != 4:
            raise TraceFormatError(self.path, "event formats", None, "no usable common_type/common_pid fields")
        return tp.Common(ct.offset, ct.size, cp.offset)

    # -- passes ---------------------------------------------------------------------------------
    def _stream_blocks(self, s: _Stream) -> Iterator[tuple[np.ndarray, int]]:
        return tp.iter_blocks(self.path, self._mm, s.buf, s.cd, self._dec, self.h.endian, self._block_bytes)

    def _pmap(self, fn, items: list) -> list:
        """fn over items, in threads when the C code (which drops the GIL) does the work."""
        n = min(len(items), os.cpu_count() or 1)
        if self._compiled and n > 1:
            with ThreadPoolExecutor(n) as ex:
                return list(ex.map(fn, items))
        return [fn(x) for x in items]

    def _conv(self, raw: np.ndarray) -> np.ndarray:
        """Ring-buffer clock -> trace time without the OFFSET: TSC2NSEC's (ts * mult) >> shift.

        trace-cmd 3.1.6 applies mult/shift whenever the option is present and ignores its
        offset field (checked with `trace-cmd report` on written files); exact like its
        mul_u64_u32_shr: the high and low 32 bits are scaled separately.
        """
        if self._tsc is None:
            return raw.astype(np.int64, copy=False)
        mult, shift = self._tsc
        u = raw.astype(np.uint64)
        hi, lo = u >> np.uint64(32), u & np.uint64(0xFFFFFFFF)
        m = np.uint64(mult)
        out = ((hi * m) << np.uint64(32 - shift)) + ((lo * m) >> np.uint64(shift))
        return out.view(np.int64)

    def _scratch(self, spec: tp.BlockSpec) -> np.ndarray | None:
        """Per-thread buffer for decompressed blocks (no fresh 8 MB allocation per block)."""
        if spec.chunks is None:
            return None
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < spec.size:
            buf = self._local.buf = np.empty(spec.size, np.uint8)
        return buf

    def _index_block(self, task: "_Task"):
        """Pass 1 of one block (independent of the other blocks, so blocks run in parallel)."""
        s, spec = task.s, task.spec
        block = tp.load_block(self.path, self._mm, spec, self._dec, s.where, self._scratch(spec))
        try:
            return tp.index(block, s.buf.page_size, self.h.page_header, self._cm, self._big, self.path, s.where,
                            spec.offset, -(1 << 63), compiled=self._compiled)
        finally:
            tp.done_block(self._mm, spec)

    def _index(self) -> None:
        """Pass 1: merge keys, types, counts and lost events; allocates each table's seq column."""
        if self._counts is not None:
            return
        self._cm = self._common() if any(cd.size for b in self.h.buffers for cd in b.cpus) else tp.Common()
        tasks = [_Task(s, spec) for s in self._streams
                 for spec in tp.block_specs(self.path, self._mm, s.buf, s.cd, self._dec, self.h.endian,
                                            self._block_bytes)]
        res = self._pmap(self._index_block, tasks)
        keys: list[list[Any]] = [[] for _ in self._streams]
        types: list[list[Any]] = [[] for _ in self._streams]
        carry = [-(1 << 63)] * len(self._streams)
        last_ts: list[int | None] = [None] * len(self._streams)
        done = [0] * len(self._streams)
        lost_rows: list = []
        for task, (k, ty, nrec, pfirst, plast, plost, _) in zip(tasks, res):
            i = task.s.index
            task.lo, task.n = done[i], len(k)
            done[i] += len(k)
            if len(k):
                if carry[i] > k[0]:
                    np.maximum(k, carry[i], out=k)     # continue the running max across blocks
                carry[i] = int(k[-1])
                keys[i].append(k)
                types[i].append(ty)
            last_ts[i] = self._lost_rows(task.s, nrec, pfirst, plast, plost, last_ts[i], lost_rows)
        del res
        self._tasks = tasks
        kk = [self._conv(np.concatenate(k)) if k else np.zeros(0, np.int64) for k in keys]
        tt = [np.concatenate(t) if t else np.zeros(0, np.int32) for t in types]
        del keys, types
        counts = np.zeros(1 << 16, np.int64)
        for s, t in zip(self._streams, tt):
            bad = (t < 0) | (t >= 1 << 16)
            if bad.any():
                raise TraceFormatError(self.path, s.where, None, f"event type id {int(t[bad][0])} out of range")
            counts += np.bincount(t, minlength=1 << 16)
        for tid in np.flatnonzero(counts).tolist():
            if tid not in self.h.by_id:
                raise TraceFormatError(self.path, "event data", None,
                                       f"{int(counts[tid])} records of event type {tid}, which has no format in the file")
        multi = self._multi_buffer()
        self._cols = {t: _Columns(self.h.by_id[t], int(counts[t]), multi) for t in np.flatnonzero(counts).tolist()}
        self._pos = tp.merge(kk, tt, {t: c.seq for t, c in self._cols.items()}, compiled=self._compiled)
        del kk, tt
        self._counts = dict(sorted((c.ev.full_name, c.n) for c in self._cols.values()))
        self._lost = pa.table([pa.array([r[i] for r in lost_rows], LOST_SCHEMA.field(i).type) for i in range(4)],
                              schema=LOST_SCHEMA)

    def _lost_rows(self, s: _Stream, nrec, pfirst, plast, plost, last_ts: int | None, rows: list) -> int | None:
        """Lost-event rows of one block; returns the stream's last record ts so far."""
        off = self.h.ts_offset
        pfirst, plast = self._conv(pfirst), self._conv(plast)
        lost_pages = np.flatnonzero(plost)
        if len(lost_pages):
            idx = np.where(nrec > 0, np.arange(len(nrec)), -1)
            prev = np.maximum.accumulate(idx)                  # last non-empty page at or before p
            for p in lost_pages.tolist():
                q = int(prev[p - 1]) if p > 0 else -1
                before = int(plast[q]) + off if q >= 0 else last_ts
                after = int(pfirst[p]) + off
                rows.append((s.cpu, after if before is None else before, after, int(plost[p])))
        nz = np.flatnonzero(nrec)
        return int(plast[nz[-1]]) + off if len(nz) else last_ts

    def _fill(self, cols: _Columns, s: _Stream, block: np.ndarray, off: int, w: tp.Walk,
              sel: np.ndarray, P: np.ndarray) -> None:
        """numpy pass 2: write records `sel` of this block (one event type) into rows `P`."""
        ro, rl = w.rec_off[sel], w.rec_len[sel]
        if cols.need and len(rl) and int(rl.min()) < cols.need:
            i = int(np.argmax(rl < cols.need))
            raise TraceFormatError(self.path, s.where, off + int(ro[i]),
                                   f"{cols.ev.full_name} record of {int(rl[i])} bytes is shorter than its format "
                                   f"({cols.need} bytes)")
        cols.ts[P] = self._conv(w.ts[sel]) + self.h.ts_offset
        cols.cpu[P] = s.cpu
        cols.pid[P] = w.pid[sel]
        if cols.stream is not None:
            cols.stream[P] = s.index
        for f in cols.ev.fields:
            if f.name in cols.num:
                tp.scatter(block, ro, f.offset, f.size, f.signed, self._big, P, cols.num[f.name])
            else:
                cols.other[f.name].append((P, tf.column(block, ro, rl, f, self._big, self.path, s.where, off)))

    def _fill_block_numpy(self, task: "_Task") -> None:
        s, spec = task.s, task.spec
        block = tp.load_block(self.path, self._mm, spec, self._dec, s.where, self._scratch(spec))
        try:
            w = tp.walk(block, s.buf.page_size, self.h.page_header, self._cm, self._big, self.path, s.where,
                        spec.offset, compiled=False)
            n = len(w.rec_off)
            if n != task.n:
                raise TraceFormatError(self.path, s.where, spec.offset, "record count changed between passes")
            pos_b = self._pos[s.index][task.lo:task.lo + n]
            for t in np.flatnonzero(np.bincount(w.type)).tolist() if n else []:
                sel = np.flatnonzero(w.type == t)
                self._fill(self._cols[t], s, block, spec.offset, w, sel, pos_b[sel])
        finally:
            tp.done_block(self._mm, spec)

    def _fill_block_c(self, task: "_Task") -> None:
        """C pass 2 of one block: its records land in their table rows in one call."""
        s, spec = task.s, task.spec
        cm, ph, off = self._cm, self.h.page_header, spec.offset
        block = tp.load_block(self.path, self._mm, spec, self._dec, s.where, self._scratch(spec))
        try:
            try:
                fo, fl, fr, ft, used = tp._cwalk.fill(
                    block, s.buf.page_size, ph.commit_offset, ph.commit_size, ph.data_offset, int(self._big),
                    cm.type_off, cm.type_size, cm.pid_off, 0 if self._tsc else self.h.ts_offset, s.cpu, s.index,
                    self._pos[s.index][task.lo:task.lo + task.n], self._slot, self._groups)
            except ValueError as e:
                raise tp._cerr(e, self.path, s.where, off) from None
            if used != task.n:
                raise TraceFormatError(self.path, s.where, off, "record count changed between passes")
            for t in np.unique(ft).tolist() if len(fo) else []:
                c, sel = self._cols[int(t)], ft == t
                for f in c.ev.fields:
                    if f.name in c.other:
                        c.other[f.name].append(
                            (fr[sel], tf.column(block, fo[sel], fl[sel], f, self._big, self.path, s.where, off)))
        finally:
            tp.done_block(self._mm, spec)

    def _decode_all(self) -> None:
        """Pass 2: fill every event table at the rows pass 1 assigned (no concatenation, no sort)."""
        if self._tables is not None:
            return
        self._index()
        for c in self._cols.values():
            c.alloc()
        if self._compiled:
            self._slot = np.full(1 << 16, -1, np.int32)
            self._groups: list[tuple[Any, ...]] | None = []
            for tid, c in self._cols.items():
                self._slot[tid] = len(self._groups)
                fields = [(f.offset, f.size, c.num[f.name]) for f in c.ev.fields if f.name in c.num]
                self._groups.append((c.ts, c.cpu, c.pid, c.stream, c.need, int(bool(c.other)), fields))
            self._pmap(self._fill_block_c, self._tasks)
            self._slot = self._groups = None
            if self._tsc is not None:           # C wrote raw clock values
                for c in self._cols.values():
                    c.ts[:] = self._conv(c.ts) + self.h.ts_offset
        else:
            for task in self._tasks:
                self._fill_block_numpy(task)
        self._pos = self._tasks = None
        self._tables = {c.ev.full_name: self._table_of(c) for c in self._cols.values()}
        self._cols = None                     # the tables own the arrays now

    def _comm(self, pids: np.ndarray) -> pa.Array:
        """comm of every row: saved cmdlines, "<idle>" for pid 0, "<...>" when unknown."""
        if not len(pids):
            return pa.array([], pa.string())
        lo, hi = int(pids.min()), int(pids.max())
        cl = self.h.cmdlines
        if hi - lo < (1 << 24):
            present = np.zeros(hi - lo + 1, bool)
            present[pids - lo] = True
            uniq = np.flatnonzero(present) + lo
            names = ["<idle>" if p == 0 else cl.get(int(p), "<...>") for p in uniq.tolist()]
            lut = (np.cumsum(present, dtype=np.int32) - 1).astype(np.int32)
            if self._compiled:
                offs, data = tp._cwalk.strings(np.ascontiguousarray(pids, np.int32), lo, lut,
                                               [n.encode() for n in names])
                return pa.StringArray.from_buffers(len(pids), pa.py_buffer(offs), pa.py_buffer(data))
            inv = lut[pids - lo]
        else:
            uniq, inv = np.unique(pids, return_inverse=True)
            inv = inv.astype(np.int32)
            names = ["<idle>" if p == 0 else cl.get(int(p), "<...>") for p in uniq.tolist()]
        return pa.array(names, pa.string()).take(pa.array(inv))

    def _table_of(self, c: _Columns) -> pa.Table:
        schema = self._schema(c.ev)
        arrays = {"seq": pa.array(c.seq), "ts": pa.array(c.ts), "cpu": pa.array(c.cpu), "pid": pa.array(c.pid),
                  "comm": self._comm(c.pid)}
        if c.stream is not None:
            names = pa.array([s.buffer for s in self._streams], pa.string())
            arrays["buffer"] = names.take(pa.array(c.stream))
        taken = set(arrays)
        for f in c.ev.fields:
            name = tf.column_name(f, taken)
            if f.name in c.num:
                arrays[name] = pa.array(c.num[f.name])
                continue
            parts = c.other[f.name]
            if not parts:
                arrays[name] = pa.array([], schema.field(name).type)
                continue
            pos = np.concatenate([p for p, _ in parts])
            vals = pa.concat_arrays([v for _, v in parts])
            arrays[name] = vals.take(pa.array(np.argsort(pos, kind="stable")))
        return pa.Table.from_arrays([arrays[n] for n in schema.names], schema=schema)

    # -- streaming --------------------------------------------------------------------------
    @property
    def streams(self) -> bool:
        return True

    def iter_batches(self, events: list[str] | None = None,
                     max_rows: int = 1 << 20) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Stream (event, batch) pairs holding one block of pages per CPU stream, nothing per record.

        A streaming k-way merge: with one block loaded per stream, every record whose
        (merge key, stream) is not after the smallest block-end (key, stream) precedes all
        records not loaded yet, so those get their final `seq` now and are decoded and
        yielded; then the stream that ran out loads its next block.  Memory is bounded by
        streams x block size, so a trace.dat larger than RAM can be converted.  Batches come
        out roughly in time order; sort by `seq` for the exact order.
        """
        if self._tables is not None:
            yield from super().iter_batches(events, max_rows)
            return
        want = {self.resolve(e) for e in events} if events else None
        self._cm = self._common() if any(cd.size for b in self.h.buffers for cd in b.cpus) else tp.Common()
        multi = self._multi_buffer()
        live = []
        for s in self._streams:
            cur = _Cursor(s, self._stream_blocks(s))
            if self._advance(cur):
                live.append(cur)
        base = 0
        while live:
            f = min(live, key=lambda c: (int(c.keys[-1]), c.s.index))
            K = int(f.keys[-1])
            ends = {}
            for c in live:
                if c is f:
                    e = len(c.keys)
                else:
                    e = int(np.searchsorted(c.keys, K, side="right" if c.s.index < f.s.index else "left"))
                ends[c.s.index] = max(e, c.pos)
            parts = [(c, c.keys[c.pos:ends[c.s.index]]) for c in live]
            for c, k in parts:
                seq = base + np.arange(len(k), dtype=np.int64)
                for d, kd in parts:
                    if d is not c and len(kd):
                        seq += np.searchsorted(kd, k, side="right" if d.s.index < c.s.index else "left")
                lo, hi = c.pos, ends[c.s.index]
                yield from self._emit(c, lo, hi, seq, want, multi, max_rows)
                c.pos = hi
            base += sum(len(k) for _, k in parts)
            live = [c for c in live if c.pos < len(c.keys) or self._advance(c)]

    def _advance(self, c: "_Cursor") -> bool:
        """Load the stream's next non-empty block; False at its end."""
        for block, off in c.blocks:
            w = tp.walk(block, c.s.buf.page_size, self.h.page_header, self._cm, self._big, self.path, c.s.where,
                        off, compiled=self._compiled)
            if not len(w.rec_off):
                continue
            keys = self._conv(w.ts).copy()
            keys[0] = max(int(keys[0]), c.carry)
            np.maximum.accumulate(keys, out=keys)
            c.carry = int(keys[-1])
            c.block, c.off, c.w, c.keys, c.pos = block, off, w, keys, 0
            return True
        return False

    def _emit(self, c: "_Cursor", lo: int, hi: int, seq: np.ndarray, want, multi: bool,
              max_rows: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        if hi <= lo:
            return
        ty = c.w.type[lo:hi]
        for t in np.flatnonzero(np.bincount(ty)).tolist():
            ev = self.h.by_id.get(t)
            if ev is None:
                raise TraceFormatError(self.path, c.s.where, c.off + int(c.w.rec_off[lo + int(np.argmax(ty == t))]),
                                       f"record of event type {t}, which has no format in the file")
            if want is not None and ev.full_name not in want:
                continue
            m = np.flatnonzero(ty == t)
            cols = _Columns(ev, len(m), multi)
            cols.seq = seq[m]
            self._fill(cols.alloc(), c.s, c.block, c.off, c.w, lo + m, np.arange(len(m)))
            for b in self._table_of(cols).to_batches(max_chunksize=max_rows):
                yield ev.full_name, b


@dataclass
class _Task:
    """One block of one stream; lo/n = its records' range in the stream (set by pass 1)."""

    s: _Stream
    spec: tp.BlockSpec
    lo: int = 0
    n: int = 0


@dataclass
class _Cursor:
    """Streaming position in one stream: its loaded block and merge keys."""

    s: _Stream
    blocks: Iterator
    carry: int = -(1 << 63)
    block: np.ndarray | None = None
    off: int = 0
    w: tp.Walk | None = None
    keys: np.ndarray | None = None
    pos: int = 0
