"""Pageblock partitions of a trace: plan, spill to disk, and read one partition back as a Trace.

Why: the model holds every event's columns at once (~155 B/event), so a 100 M-event
capture would need ~16 GB.  Almost everything the model does is per pageblock (the pcp
pairing is per pfn, a block's history only looks at records of that block and of its
MAX_ORDER buddy group), so the trace can be cut into contiguous pageblock ranges that are
analysed one at a time, with a peak memory set by the chunk size instead of the trace.

* `plan()`: one streaming pass (`Trace.iter_batches`) that counts the per-pfn records of
  every pageblock and cuts the block range into partitions of about `chunk_events`
  records each.  Cuts fall on MAX_ORDER buddy-group boundaries: a free's merge hazard
  and a >= pageblock extfrag claim reach the other blocks of that group, never further.
* `spill()`: a second streaming pass that routes every per-pfn record by
  `pfn >> pageblock_order` into per-partition Arrow IPC files (one per event) in a
  private temporary directory; the other records (cma_*, test_pages_isolated,
  migrate_range_info, print: few) go to shared files every partition reads.  The global
  `seq` column is kept, so the order of records stays exact.
* `PartitionTrace`: a `readers.base.Trace` over one partition's files plus the shared
  ones, which the model reads like any trace.

Records whose pfn cannot be a page frame (the kernel's -1UL "no page", corrupt values)
belong to no block: they go to the first partition, so they are counted once.
The directory is removed on every exit path (`spill_dir`), Ctrl-C included.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from .capture.schema import PFN_LIMIT
from .errors import MtauditError
from .readers.base import EventFormat, Trace

# events routed by their page frame number (the others are shared by every partition)
ROUTED_EVENTS = ("kmem:mm_page_alloc", "kmem:mm_page_free", "kmem:mm_page_free_batched",
                 "kmem:mm_page_pcpu_drain", "kmem:mm_page_alloc_zone_locked", "kmem:mm_page_alloc_extfrag")
# MAX_ORDER-1 / MAX_PAGE_ORDER of the kernels the model knows (model/infer.py MAX_PAGE_ORDER):
# a buddy group of 2^MAX_PAGE_ORDER pages is the widest reach of one record
MAX_PAGE_ORDER = 10
# env override of the threshold above which `analyze` partitions by itself
CHUNK_ENV = "MTAUDIT_CHUNK_EVENTS"
DEFAULT_CHUNK_EVENTS = 4_000_000
# free disk needed beyond the spilled bytes' estimate
DISK_MARGIN = 1.10


class SpillSpaceError(MtauditError):
    """Not enough free disk for the partition files."""


def routed_events(trace: Trace) -> dict[str, str]:
    """Full event name -> pfn column, for every per-pfn event of the trace.

    The ground-truth kprobes (a `pfn` field and a type field, like model/events.read_events
    picks them) are per-pfn too."""
    from .model.events import KPROBE_TYPE_FIELDS
    out: dict[str, str] = {}
    for full, fmt in trace.formats().items():
        fields = {f.name for f in fmt.fields}
        if "pfn" not in fields:
            continue
        if full in ROUTED_EVENTS or (fmt.system == "pb") or ("mask" in fields and fields & set(KPROBE_TYPE_FIELDS)):
            out[full] = "pfn"
    return out


def block_of(pfn: pa.Array | pa.ChunkedArray, pbo: int) -> np.ndarray:
    """Pageblock of every record (-1: no page frame: -1UL, null or impossible values)."""
    arr = pfn.to_numpy(zero_copy_only=False) if not pfn.null_count else \
        pfn.fill_null(np.iinfo(np.int64).max if pa.types.is_signed_integer(pfn.type) else (1 << 64) - 1).to_numpy()
    v = np.asarray(arr)
    if v.dtype == np.uint64:
        v = v.view(np.int64)
    else:
        v = v.astype(np.int64)
    ok = (v >= 0) & (v < PFN_LIMIT)
    return np.where(ok, v >> pbo, -1)


@dataclass
class Plan:
    """Where the block range is cut: partition i holds blocks [cuts[i], cuts[i+1])."""

    pageblock_order: int
    cuts: np.ndarray                  # int64, len K + 1; cuts[0] = -1 (no-page records), cuts[-1] = max
    events: np.ndarray                # routed records per partition
    total_events: int                 # every record of the trace, routed or not
    shared_events: int                # records every partition reads
    spill_bytes: int                  # Arrow bytes of every record (the spill's size, roughly)
    routed: dict[str, str] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.cuts) - 1

    def part_of(self, block: np.ndarray) -> np.ndarray:
        """Partition index of each block (-1 blocks: the first partition)."""
        return np.clip(np.searchsorted(self.cuts, block, side="right") - 1, 0, self.k - 1)

    def block_range(self, i: int) -> tuple[int, int]:
        return int(self.cuts[i]), int(self.cuts[i + 1])


def group_blocks(pbo: int) -> int:
    """Blocks per MAX_ORDER buddy group: cuts are multiples of it."""
    return 1 << max(0, MAX_PAGE_ORDER - pbo)


def plan(trace: Trace, pbo: int, chunk_events: int, max_rows: int = 1 << 18) -> Plan:
    """Count the per-pfn records of every block in one streaming pass and cut the range."""
    routed = routed_events(trace)
    uniq = np.zeros(0, np.int64)
    cnt = np.zeros(0, np.int64)
    total = shared = nbytes = 0
    for name, batch in trace.iter_batches(None, max_rows):
        n = batch.num_rows
        total += n
        nbytes += batch.nbytes
        col = routed.get(name)
        if col is None:
            shared += n
            continue
        b, c = np.unique(block_of(batch.column(col), pbo), return_counts=True)
        allb = np.concatenate([uniq, b])
        u, inv = np.unique(allb, return_inverse=True)
        uniq, cnt = u, np.bincount(inv, weights=np.concatenate([cnt, c]), minlength=len(u)).astype(np.int64)
    p = Plan(pbo, _cut(uniq, cnt, chunk_events, group_blocks(pbo)), np.zeros(0, np.int64), total, shared,
             nbytes, routed)
    p.events = np.bincount(p.part_of(uniq), weights=cnt, minlength=p.k).astype(np.int64)
    return p


def _cut(blocks: np.ndarray, counts: np.ndarray, chunk: int, group: int) -> np.ndarray:
    """Cut points (multiples of `group`, no buddy group split) with about `chunk` records each."""
    top = int(blocks.max()) + 1 if len(blocks) else 1
    top = ((top + group - 1) // group) * group
    cuts = [-1]
    grp = np.where(blocks >= 0, blocks // group, -1)
    ug, gi = np.unique(grp, return_inverse=True)
    gcount = np.bincount(gi, weights=counts, minlength=len(ug)).astype(np.int64)
    acc = 0
    for g, c in zip(ug.tolist(), gcount.tolist()):
        if acc and acc + c > chunk and g >= 0:
            cuts.append(g * group)
            acc = 0
        acc += c
    cuts.append(max(top, cuts[-1] + 1))
    return np.asarray(cuts, np.int64)


# ------------------------------------------------------------------------------ spill
@contextmanager
def spill_dir(base: str | None = None) -> Iterator[str]:
    """A private directory for the partition files, removed on every exit path (an exception,
    Ctrl-C, and SIGTERM too: turned into SystemExit while the directory exists)."""
    d = tempfile.mkdtemp(prefix="mtaudit-part-", dir=base)
    old = None
    if threading.current_thread() is threading.main_thread():
        def term(_sig, _frame):
            raise SystemExit(128 + signal.SIGTERM)
        old = signal.signal(signal.SIGTERM, term)
    try:
        yield d
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        shutil.rmtree(d, ignore_errors=True)


def check_space(directory: str, need: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < need * DISK_MARGIN:
        raise SpillSpaceError(f"{directory}: {free / 2**20:.0f} MiB free, the partition files need about "
                              f"{need * DISK_MARGIN / 2**20:.0f} MiB (set TMPDIR to a larger disk, or analyze "
                              "without partitions)")


@dataclass
class Spill:
    """The files of a spilled trace: (partition, event) -> path; partition -1: shared records."""

    plan: Plan
    directory: str
    files: dict[tuple[int, str], str]
    schemas: dict[str, pa.Schema]
    rows: dict[tuple[int, str], int]
    peak_batch_rows: int = 0
    lost: pa.Table | None = None

    def event_counts(self) -> dict[str, int]:
        """Records per event over the whole trace (what Trace.events() says), counted while spilling."""
        out: dict[str, int] = {}
        for (_i, name), n in self.rows.items():
            if name != REFILL and n:
                out[name] = out.get(name, 0) + n
        return dict(sorted(out.items()))


class _Writers:
    def __init__(self, directory: str):
        self.directory = directory
        self.open: dict[tuple[int, str], ipc.RecordBatchFileWriter] = {}
        self.sinks: dict[tuple[int, str], pa.NativeFile] = {}
        self.files: dict[tuple[int, str], str] = {}
        self.rows: dict[tuple[int, str], int] = {}

    def write(self, key: tuple[int, str], batch: pa.RecordBatch) -> None:
        w = self.open.get(key)
        if w is None:
            path = os.path.join(self.directory, f"p{key[0] + 1:05d}-{key[1].replace(':', '__')}.arrow")
            sink = pa.OSFile(path, "wb")
            w = ipc.new_file(sink, batch.schema)
            self.open[key], self.sinks[key], self.files[key] = w, sink, path
            self.rows[key] = 0
        w.write_batch(batch)
        self.rows[key] += batch.num_rows

    def close(self) -> None:
        for k, w in self.open.items():
            w.close()
            self.sinks[k].close()
        self.open.clear()


REFILL = "__refill__"      # the pseudo-event of the refill seqs (model/refill_stream.py)


def spill(trace: Trace, p: Plan, directory: str, max_rows: int = 1 << 18) -> Spill:
    """Route every record into its partition's file (shared events: partition -1), and the
    seqs of the zone_locked records that are pcp refills into their partition's REFILL file."""
    from .model.refill_stream import RefillStream
    check_space(directory, p.spill_bytes)
    out = _Writers(directory)
    schemas: dict[str, pa.Schema] = {}
    peak = 0
    refills = RefillStream()

    def write_refills() -> None:
        seq, pfn = refills.decided()
        if not len(seq):
            return
        part = p.part_of(block_of(pa.array(pfn.view(np.uint64)), p.pageblock_order))
        for i in np.unique(part):
            out.write((int(i), REFILL), pa.record_batch({"seq": pa.array(seq[part == i])}))
    try:
        for name, batch in trace.iter_batches(None, max_rows):
            peak = max(peak, batch.num_rows)
            schemas.setdefault(name, batch.schema)
            refills.feed(name, batch)
            write_refills()
            col = p.routed.get(name)
            if col is None:
                out.write((-1, name), batch)
                continue
            part = p.part_of(block_of(batch.column(col), p.pageblock_order))
            if p.k == 1 or not len(part) or (part == part[0]).all():
                out.write((int(part[0]) if len(part) else 0, name), batch)
                continue
            o = np.argsort(part, kind="stable")
            ps = part[o]
            edges = np.flatnonzero(np.diff(ps)) + 1
            for lo, hi in zip(np.concatenate([[0], edges]), np.concatenate([edges, [len(ps)]])):
                out.write((int(ps[lo]), name), batch.take(pa.array(o[lo:hi])))
        refills.finish()
        write_refills()
    finally:
        out.close()
    return Spill(p, directory, out.files, schemas, out.rows, max(peak, refills.peak_rows), stream_lost(trace))


# ------------------------------------------------------------------------------ read back
class PartitionTrace(Trace):
    """One partition of a spilled trace: its per-pfn records plus every shared record.

    Formats, lost windows and reader notes are the whole trace's (they are small and say
    what the capture is); `events()` counts the records this partition holds."""

    def __init__(self, parent: Trace, sp: Spill, index: int):
        self.parent, self.sp, self.index = parent, sp, index
        self.meta = parent.meta
        self.rows_loaded = 0          # records this partition handed out (memory accounting)

    def formats(self) -> dict[str, EventFormat]:
        return self.parent.formats()

    def _keys(self, name: str) -> list[tuple[int, str]]:
        return [k for k in ((self.index, name), (-1, name)) if k in self.sp.files]

    def events(self) -> dict[str, int]:
        """The whole trace's counts: which events the trace has decides how the model reads it
        (from the spill: asking a trace.dat reader would index every record in memory)."""
        return self.sp.event_counts()

    def refill_seqs(self) -> np.ndarray:
        """Sorted seqs of this partition's zone_locked records that are pcp refills."""
        path = self.sp.files.get((self.index, REFILL))
        if path is None:
            return np.zeros(0, np.int64)
        t = ipc.open_file(pa.memory_map(path, "r")).read_all()
        return np.sort(t.column("seq").to_numpy())

    def _table(self, full_name: str, columns: list[str] | None) -> pa.Table:
        keys = self._keys(full_name)
        if not keys:
            schema = self.sp.schemas.get(full_name)
            t = schema.empty_table() if schema is not None else _empty(self.parent, full_name)
        else:
            parts = []
            for k in keys:     # memory-mapped: the pages are the file's, read as the model touches them
                parts.append(ipc.open_file(pa.memory_map(self.sp.files[k], "r")).read_all())
            t = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
            self.rows_loaded += t.num_rows
        return t.select(columns) if columns else t

    @property
    def lost(self) -> pa.Table:
        return self.sp.lost if self.sp.lost is not None else self.parent.lost

    def notes(self) -> dict[str, dict]:
        return self.parent.notes()


def _empty(trace: Trace, full_name: str) -> pa.Table:
    """The empty table of an event without records.  A trace.dat reader's `table()` would decode
    every record of the trace to answer it: its schema is built from the format alone."""
    from .readers.tracedat import TraceDat
    if isinstance(trace, TraceDat) and trace._tables is None:
        return trace._schema(trace.h.formats[full_name]).empty_table()
    return trace._table(full_name, None)


def stream_lost(trace: Trace) -> pa.Table:
    """The trace's lost-event windows without holding its records.

    The trace.dat reader finds them in its indexing pass, which keeps every record's merge key
    and seq (~20-30 B/record) for the life of the reader; this runs the same per-block pass
    one block at a time and keeps only the windows (then the reader's `lost` answers from
    them).  Other readers: their own `lost`."""
    from .readers.tracedat import TraceDat, _Task
    if not isinstance(trace, TraceDat) or trace._lost is not None:
        return trace.lost
    from .readers import tracedat_pages as tp
    from .readers.base import LOST_SCHEMA
    t = trace
    t._cm = t._common() if any(cd.size for b in t.h.buffers for cd in b.cpus) else tp.Common()
    rows: list = []
    last: dict[int, int | None] = {}
    for s in t._streams:
        for spec in tp.block_specs(t.path, t._mm, s.buf, s.cd, t._dec, t.h.endian, t._block_bytes):
            _k, _ty, nrec, pfirst, plast, plost, _ = t._index_block(_Task(s, spec))
            last[s.index] = t._lost_rows(s, nrec, pfirst, plast, plost, last.get(s.index), rows)
    t._lost = pa.table([pa.array([r[i] for r in rows], LOST_SCHEMA.field(i).type) for i in range(4)],
                       schema=LOST_SCHEMA)
    return t._lost


def records_estimate(trace: Trace) -> int:
    """About how many records the trace holds, without indexing a trace.dat (~32 bytes a record
    on the captures measured; an overestimate only partitions a little early)."""
    if getattr(trace, "_counts", None) is None and getattr(trace.meta, "format", None) == "trace.dat":
        try:     # compressed (v7 zstd/zlib) kmem records: ~5 bytes each on the shipped bundles
            per = 4 if (trace.meta.compression or "none") != "none" else 32
            return os.path.getsize(trace.meta.path) // per
        except OSError:
            pass
    return sum(trace.events().values())


def chunk_events_default() -> int:
    """The partition threshold: MTAUDIT_CHUNK_EVENTS, else DEFAULT_CHUNK_EVENTS."""
    v = os.environ.get(CHUNK_ENV, "").strip()
    if not v:
        return DEFAULT_CHUNK_EVENTS
    try:
        n = int(v)
    except ValueError:
        raise MtauditError(f"{CHUNK_ENV}={v!r}: not a whole number of events") from None
    if n <= 0:
        raise MtauditError(f"{CHUNK_ENV}={v!r}: must be positive")
    return n


def build_model_partitioned(trace: Trace, meta, kernel, chunk_events: int, tmpdir: str | None = None,
                            residency: bool = False):
    """The model of `trace` built one pageblock partition at a time (model/partitioned.py)."""
    from .model import partitioned
    p = plan(trace, meta.pageblock_order, chunk_events)
    with spill_dir(tmpdir) as d:
        sp = spill(trace, p, d)
        traces = [PartitionTrace(trace, sp, i) for i in range(p.k)]
        refills = [t.refill_seqs() for t in traces]
        ranges = [p.block_range(i) for i in range(p.k)]
        model, _facts = partitioned.build(traces, meta, kernel, set(p.routed), refills, ranges, residency)
    return model, p
