"""trace-cmd trace.dat reader (file versions 6 and 7) -> per-event Arrow tables.

Why it is built this way:
* The file is mmap-ed; per-CPU page data is walked in bounded blocks (16 MB of pages, or
  the decompressed zstd/zlib chunks of v7) so memory is the decoded columns plus one block.
* The record walk is the only sequential part.  A small C extension (`_walk.c`) does it when
  built; otherwise a numpy "lockstep" walker advances all pages of a block together.
* Fields are vectorised gathers at the offsets/sizes of the trace's own format files.
* `seq` is the order `trace-cmd report` prints: a k-way merge of the per-CPU streams picking
  the smallest timestamp, ties to the lower CPU (then buffer order).  A greedy merge of
  streams equals a stable sort by each stream's running-maximum timestamp, so seq is computed
  with `searchsorted` on those keys, no per-record merge loop.
* Instances (BUFFER options) are read like the top buffer; when more than one buffer holds
  records, tables get an extra `buffer` string column (instance name, "" = top buffer) right
  after `comm`, and `meta.buffers` lists the names.  Streams are ordered (buffer, cpu).
* Timestamps are the ring-buffer clock plus the file's OFFSET option.  TSC2NSEC / TIME_SHIFT
  (guest/host sync) are not applied; they are reported in meta.extra.
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa

from ..errors import TraceFormatError, UnknownEventError
from .base import COMMON_SCHEMA, LOST_SCHEMA, EventFormat, Trace, TraceMeta
from . import tracedat_fields as tf
from . import tracedat_pages as tp
from .tracedat_header import Decompressor, Header
from .tracedat_sections import parse


@dataclass
class _Stream:
    """One (buffer, cpu) record stream."""

    index: int
    buffer: str
    cpu: int
    nrec: int = 0
    keys: list = field(default_factory=list)       # per block: running-max ts (int64)


@dataclass
class _Piece:
    """Records of one event type found in one block of one stream."""

    stream: int
    local: np.ndarray                   # index of each record in its stream
    ts: np.ndarray
    pid: np.ndarray
    cols: dict


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
        uname = h.options.get("uname")
        parts = str(uname).split() if uname else []
        self.meta = TraceMeta(
            path=self.path, format="trace.dat", file_version=h.version, compression=h.compression,
            kernel_release=parts[2] if len(parts) >= 3 else None, uname=uname,
            clock=h.options.get("trace_clock") or (h.buffers[0].clock if h.buffers else None),
            cpus=h.cpus, page_size=h.page_size, long_size=h.long_size, endian=h.endian,
            buffers=[b.name for b in h.buffers],
            extra={k: v for k, v in h.options.items() if k not in ("uname", "trace_clock")}
            | {"page_sizes": {b.name: b.page_size for b in h.buffers},
               "kernel_long_size": h.page_header.commit_size,
               "walker": "c" if self._compiled else "numpy"},
        )
        self._streams = [
            _Stream(i, b.name, cd.cpu) for i, (b, cd) in enumerate((b, cd) for b in h.buffers for cd in b.cpus)
        ]
        self._tables: dict[str, pa.Table] | None = None
        self._lost: pa.Table | None = None
        self._counts: dict[str, int] | None = None

    # -- contract ---------------------------------------------------------------------------
    def formats(self) -> dict[str, EventFormat]:
        return self.h.formats

    def events(self) -> dict[str, int]:
        self._decode_all()
        return dict(self._counts)

    @property
    def lost(self) -> pa.Table:
        self._decode_all()
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
        names = {f.name for f in fields}
        return pa.schema(fields + [f for f in tf.schema_fields(ev) if f.name not in names])

    def _stream_blocks(self) -> Iterator[tuple[_Stream, np.ndarray, int, tp.Walk, str]]:
        """Walk every block of every stream, in (buffer, cpu) order."""
        it = iter(self._streams)
        for b in self.h.buffers:
            for cd in b.cpus:
                s = next(it)
                where = f"buffer {b.name!r} cpu {cd.cpu}"
                for block, off in tp.iter_blocks(self.path, self._mm, b, cd, self._dec, self.h.endian):
                    w = tp.walk(block, b.page_size, self.h.page_header, self._big, self.path, where, off,
                                compiled=self._compiled)
                    yield s, block, off, w, where

    def _split(self, s: _Stream, block: np.ndarray, off: int, w: tp.Walk, where: str,
               with_fields: bool = True) -> list[tuple[EventFormat, _Piece]]:
        """Group one block's records by event type and gather their columns."""
        h = self.h
        ct, cp = h.common.get("common_type"), h.common.get("common_pid")
        n = len(w.rec_off)
        if n == 0:
            return []
        if ct is None or cp is None:
            raise TraceFormatError(self.path, "event formats", None, "no common_type/common_pid in the formats")
        short = w.rec_len < max(ct.offset + ct.size, cp.offset + cp.size)
        if short.any():
            i = int(np.argmax(short))
            raise TraceFormatError(self.path, where, off + int(w.rec_off[i]),
                                   f"record of {int(w.rec_len[i])} bytes too short for the common header")
        types = tf.gather_int(block, w.rec_off + ct.offset, ct.size, False, self._big)
        pids = tf.gather_int(block, w.rec_off + cp.offset, cp.size, True, self._big).astype(np.int32)
        ts = w.ts.astype(np.int64) + self.h.ts_offset
        out = []
        uniq = np.unique(types)
        for t in uniq.tolist():
            ev = h.by_id.get(int(t))
            sel = np.flatnonzero(types == t)
            if ev is None:
                raise TraceFormatError(self.path, where, off + int(w.rec_off[sel[0]]),
                                       f"record of event type {t} has no format in the file")
            ro, rl = w.rec_off[sel], w.rec_len[sel]
            cols = {}
            if with_fields:
                for f in ev.fields:
                    cols[f.name] = tf.column(block, ro, rl, f, self._big, self.path, where, off)
            out.append((ev, _Piece(s.index, s.nrec + sel, ts[sel], pids[sel], cols)))
        return out

    def _lost_rows(self, s: _Stream, w: tp.Walk, last_ts: int | None, rows: list) -> int | None:
        """Lost-event rows of one block; returns the last record ts of the stream so far."""
        ts = w.ts.astype(np.int64) + self.h.ts_offset
        first = np.concatenate([[0], np.cumsum(w.page_nrec)[:-1]]).astype(np.int64)
        for p in np.flatnonzero(w.page_lost).tolist():
            page_ts = int(w.page_ts[p]) + self.h.ts_offset
            before = int(ts[first[p] - 1]) if first[p] > 0 else last_ts
            after = int(ts[first[p]]) if w.page_nrec[p] else page_ts
            rows.append((s.cpu, page_ts if before is None else before, after, int(w.page_lost[p])))
        return int(ts[-1]) if len(ts) else last_ts

    def _decode_all(self) -> None:
        if self._tables is not None:
            return
        pieces: dict[str, list[_Piece]] = {}
        lost_rows: list = []
        for s in self._streams:
            s.nrec, s.keys = 0, []
        last = {}
        for s, block, off, w, where in self._stream_blocks():
            for ev, pc in self._split(s, block, off, w, where):
                pieces.setdefault(ev.full_name, []).append(pc)
            last[s.index] = self._lost_rows(s, w, last.get(s.index), lost_rows)
            if len(w.ts):
                s.keys.append(np.maximum.accumulate(w.ts.astype(np.int64)))
            s.nrec += len(w.ts)
        keys = self._finish_keys()
        self._tables = {name: self._build(self.h.formats[name], pcs, keys) for name, pcs in pieces.items()}
        self._counts = {name: t.num_rows for name, t in sorted(self._tables.items())}
        self._lost = pa.table([pa.array([r[i] for r in lost_rows], LOST_SCHEMA.field(i).type) for i in range(4)],
                              schema=LOST_SCHEMA)

    def _finish_keys(self) -> list[np.ndarray]:
        """Per stream: running-max timestamps over the whole stream (merge keys)."""
        keys = []
        for s in self._streams:
            k = np.concatenate(s.keys) if s.keys else np.zeros(0, np.int64)
            if len(k):
                np.maximum.accumulate(k, out=k)
            keys.append(k)
            s.keys = []
        return keys

    def _seq(self, stream: int, local: np.ndarray, keys: list[np.ndarray]) -> np.ndarray:
        """Global position of records `local` of `stream` in trace-cmd's merge order."""
        k = keys[stream][local]
        seq = local.astype(np.int64).copy()
        for j, kj in enumerate(keys):
            if j != stream and len(kj):
                seq += np.searchsorted(kj, k, side="right" if j < stream else "left")
        return seq

    def _comm(self, pids: np.ndarray) -> pa.Array:
        uniq, inv = np.unique(pids, return_inverse=True)
        cl = self.h.cmdlines
        names = pa.array(["<idle>" if p == 0 else cl.get(int(p), "<...>") for p in uniq.tolist()], pa.string())
        return names.take(pa.array(inv.astype(np.int32)))

    def _build(self, ev: EventFormat, pcs: list[_Piece], keys: list[np.ndarray]) -> pa.Table:
        schema = self._schema(ev)
        seq = np.concatenate([self._seq(p.stream, p.local, keys) for p in pcs])
        order = np.argsort(seq, kind="stable")
        if np.all(order[1:] > order[:-1]) if len(order) > 1 else True:
            order = None

        def fin(parts):
            if isinstance(parts[0], np.ndarray):
                a = np.concatenate(parts)
                return a if order is None else a[order]
            a = pa.concat_arrays(parts)
            return a if order is None else a.take(pa.array(order))

        cols = {"seq": seq if order is None else seq[order]}
        cols["ts"] = fin([p.ts for p in pcs])
        cols["cpu"] = fin([np.full(len(p.local), self._streams[p.stream].cpu, np.int32) for p in pcs])
        pid = fin([p.pid for p in pcs])
        cols["pid"] = pid
        cols["comm"] = self._comm(pid)
        if "buffer" in schema.names:
            cols["buffer"] = fin([pa.array([self._streams[p.stream].buffer] * len(p.local), pa.string()) for p in pcs])
        for f in ev.fields:
            if f.name not in cols:
                cols[f.name] = fin([p.cols[f.name] for p in pcs])
                for p in pcs:
                    p.cols.pop(f.name, None)
        arrays = [pa.array(cols[n], type=schema.field(n).type) if isinstance(cols[n], np.ndarray) else cols[n]
                  for n in schema.names]
        return pa.Table.from_arrays(arrays, schema=schema)

    # -- streaming --------------------------------------------------------------------------
    def iter_batches(self, events: list[str] | None = None,
                     max_rows: int = 1 << 20) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Stream (event, batch) per CPU and per block without materialising whole tables.

        Two passes: the first keeps only the per-stream merge keys (8 bytes per record) so
        that `seq` is exact; the second decodes one block at a time.  Batches arrive in
        stream order (buffer, cpu, file position), not globally sorted: sort by `seq` if needed.
        """
        if self._tables is not None:
            yield from super().iter_batches(events, max_rows)
            return
        want = {self.resolve(e) for e in events} if events else None
        for s in self._streams:
            s.nrec, s.keys = 0, []
        for s, block, off, w, where in self._stream_blocks():
            if len(w.ts):
                s.keys.append(np.maximum.accumulate(w.ts.astype(np.int64)))
            s.nrec += len(w.ts)
        keys = self._finish_keys()
        for s in self._streams:
            s.nrec = 0
        for s, block, off, w, where in self._stream_blocks():
            for ev, pc in self._split(s, block, off, w, where):
                if want is not None and ev.full_name not in want:
                    continue
                t = self._build(ev, [pc], keys)
                for b in t.to_batches(max_chunksize=max_rows):
                    yield ev.full_name, b
            s.nrec += len(w.ts)
