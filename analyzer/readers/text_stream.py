"""Streaming a large text trace: line-aligned chunks parsed one at a time, tables spilled.

A text trace is 130-200 bytes a record; holding the file, its line array and the
regex matches at once costs several times the file (a 524 MB `perf script` file
peaked at 2.9 GB).  Above `TextTrace.CHUNK_BYTES` the reader therefore reads the
file in line-aligned chunks, parses each exactly as a small file is parsed
(`TextTrace._scan` with the chunk's line and record offsets, so line numbers in
errors and `seq` stay file-global), and writes each chunk's per-event tables to
an Arrow IPC file in a temporary directory that lives as long as the Trace.
Memory is then one chunk's worth plus what a consumer asks for: `iter_batches`
(convert) reads one spilled batch at a time; `table()` reads one event's columns.

What needs the whole file is carried across chunks: the lost-event windows (the
record before a marker on its CPU may be in an earlier chunk, the one after in a
later one), the timestamp unit and resolution, and the per-format facts the
reader subclasses derive from their line groups (summarised by `Groups`).
Chunks of one event may disagree on optional or inferred columns: tables are
unified (missing columns null, conflicting inferred types as text).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pyarrow as pa

from ..errors import TraceFormatError
from .base import LOST_SCHEMA, EventFormat

if TYPE_CHECKING:   # never at run time: text_common imports this module, not the other way round
    from .text_common import StreamParts, TextTrace

_T = TypeVar("_T", pa.RecordBatch, pa.Table)

# line groups whose per-record values the subclasses never look at after the scan
_BULK_GROUPS = frozenset({"comm", "body", "event", "pid", "cpu", "ts_s", "ts_f"})


class Groups(dict):
    """What the subclasses read from `_groups` after a scan, over every chunk.

    They only ask whether a group ever took part (`null_count < len`) and which
    values it took (`unique()`): per group, the distinct values seen, plus one null
    when some line lacked it.
    """

    def add(self, g: dict[str, pa.Array]) -> None:
        import pyarrow.compute as pc
        for k, arr in g.items():
            if k in _BULK_GROUPS:
                continue
            u = pc.unique(arr)
            prev = self.get(k)
            self[k] = u if prev is None else pc.unique(pa.concat_arrays([prev, u.cast(prev.type)]))


class Spill:
    """Per-event Arrow IPC files, one per chunk that had the event."""

    def __init__(self, parts: StreamParts) -> None:
        self.parts = parts          # the whole-file reader's helpers (text_common.StreamParts)
        self.dir = tempfile.mkdtemp(prefix="mtaudit-text-")
        self._files: dict[str, list[str]] = {}
        self._counts: dict[str, int] = {}
        self._schemas: dict[str, list[pa.Schema]] = {}
        self._notes: dict[str, dict] = {}
        self._unified: dict[str, pa.Schema] = {}
        self.samples: dict[str, pa.Array] = {}       # event -> its first bodies in the file

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def add(self, name: str, t: pa.Table, note: dict) -> None:
        if name not in self._files:
            self._files[name] = []
        files = self._files[name]
        path = os.path.join(self.dir, f"{list(self._files).index(name)}-{len(files)}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
            w.write_table(t, max_chunksize=1 << 20)
        files.append(path)
        self._counts[name] = self._counts.get(name, 0) + t.num_rows
        self._schemas.setdefault(name, []).append(t.schema)
        self._unified.pop(name, None)
        _merge_note(self._notes.setdefault(name, {}), note)

    # -- the Trace side --------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))

    def notes(self) -> dict[str, dict]:
        return {k: v for k, v in self._notes.items() if v}

    def sample(self, name: str, bodies: pa.Array) -> pa.Array:
        """The event's first SAMPLE_ROWS bodies of the file, `bodies` (this chunk's) added."""
        SAMPLE_ROWS = self.parts.sample_rows
        prev = self.samples.get(name)
        if prev is None or len(prev) < SAMPLE_ROWS:
            more = bodies.slice(0, SAMPLE_ROWS).cast(pa.large_string())
            prev = more if prev is None else pa.concat_arrays([prev, more]).slice(0, SAMPLE_ROWS)
            self.samples[name] = prev
        return prev

    def schema(self, name: str) -> pa.Schema:
        s = self._unified.get(name)
        if s is None:
            s = unify(self._schemas[name])
            keep = self._extras(name)
            if keep is not None:
                # a chunk parsed before the event's sample was complete may have taken a key
                # as an extra column that later rows of the sample lack: the file-wide
                # decision (on the full sample) is a subset of every earlier one
                s = pa.schema([f for f in s if f.name in keep])
            self._unified[name] = s
        return s

    def _extras(self, name: str) -> set[str] | None:
        """Columns a known event keeps: common, its fields, the extras its full sample shows."""
        from . import known_events as ke
        from .base import COMMON_COLUMNS
        SAMPLE_ROWS = self.parts.sample_rows
        known = ke.lookup(name)
        if known is None or name not in self.samples:
            return None
        first = self.parts.clean_bodies(self.samples[name])[0]
        keys = self.parts.discover_keys(first.slice(0, SAMPLE_ROWS))
        names = {f.name for f in known.fields}
        extra = {k for k, c in keys.items() if c == min(len(first), SAMPLE_ROWS) and k not in names
                 and k not in known.print_only}
        return set(COMMON_COLUMNS) | names | extra

    def formats(self) -> dict[str, EventFormat]:
        from .base import COMMON_COLUMNS
        return {n: self.parts.format_of_types(n, [(f.name, f.type) for f in self.schema(n) if f.name not in COMMON_COLUMNS])
                for n in self._files}

    def batches(self, name: str, max_rows: int) -> Iterator[tuple[str, pa.RecordBatch]]:
        schema = self.schema(name)
        for path in self._files[name]:
            with pa.OSFile(path, "rb") as src:
                r = pa.ipc.open_file(src)
                for i in range(r.num_record_batches):
                    b = conform(r.get_batch(i), schema)
                    for off in range(0, b.num_rows, max_rows):
                        yield name, b.slice(off, max_rows)

    def table(self, name: str, columns: list[str] | None) -> pa.Table:
        schema = self.schema(name)
        parts = []
        for path in self._files[name]:
            with pa.OSFile(path, "rb") as src:
                t = pa.ipc.open_file(src).read_all()
            parts.append(conform(t, schema))
        t = pa.concat_tables(parts) if parts else schema.empty_table()
        return t.select(columns) if columns is not None else t


def unify(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for every chunk: fields in first-seen order, a type conflict becomes text."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    types: dict[str, list[pa.DataType]] = {}
    for s in schemas:
        for f in s:
            types.setdefault(f.name, []).append(f.type)
    return pa.schema([pa.field(n, ts[0] if all(t == ts[0] for t in ts) else pa.string()) for n, ts in types.items()])


def conform(t: _T, schema: pa.Schema) -> _T:
    """A chunk's batch or table in the file-wide schema: columns cast, missing ones null."""
    if t.schema.equals(schema):
        return t
    cols = [t.column(f.name).cast(f.type) if f.name in t.schema.names else pa.nulls(t.num_rows, f.type)
            for f in schema]
    return type(t).from_arrays(cols, schema=schema)


def _merge_note(into: dict, note: dict) -> None:
    if note.get("failed_to_parse_lines"):
        into["failed_to_parse_lines"] = into.get("failed_to_parse_lines", 0) + note["failed_to_parse_lines"]
    for k, v in (note.get("unparsed_fields") or {}).items():
        u = into.setdefault("unparsed_fields", {})
        if k in u:
            u[k]["count"] += v["count"]
        else:
            u[k] = dict(v)


class _Lost:
    """Lost-event windows across chunks (TextTrace._lost_table, file-wide)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.pending_after: dict[int, list[dict]] = {}   # cpu -> rows waiting for the next record
        self.last_ts: dict[int, int] = {}                  # cpu -> ts of its last record so far
        self.first_ts: int | None = None
        self.max_ts: int | None = None

    def chunk(self, markers: list, cpu: np.ndarray, ts: np.ndarray, line_no: np.ndarray) -> None:
        """Markers of this chunk against its records (cpu/ts/line_no of its events)."""
        if len(ts):
            lo, hi = int(ts.min()), int(ts.max())
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)
        for c in np.unique(cpu):        # rows waiting for this CPU's next record get its first one here
            waiting = self.pending_after.pop(int(c), [])
            if waiting:
                first = int(ts[np.flatnonzero(cpu == c)[0]])
                for r in waiting:
                    r["ts_end"] = first
        for mk in markers:
            on_cpu = np.flatnonzero(cpu == mk.cpu)
            k = int(np.searchsorted(line_no[on_cpu], mk.line))
            row = {"cpu": mk.cpu, "ts_start": None, "ts_end": None, "count": mk.count}
            if mk.kind != "buffer-started":
                if k > 0:
                    row["ts_start"] = int(ts[on_cpu[k - 1]])
                elif mk.cpu in self.last_ts:
                    row["ts_start"] = self.last_ts[mk.cpu]
            if k < len(on_cpu):
                row["ts_end"] = int(ts[on_cpu[k]])
            else:
                self.pending_after.setdefault(mk.cpu, []).append(row)
            self.rows.append(row)
        for c in np.unique(cpu):
            self.last_ts[int(c)] = int(ts[np.flatnonzero(cpu == c)[-1]])

    def table(self) -> pa.Table:
        first = self.first_ts or 0
        out: dict[str, list[int]] = {"cpu": [], "ts_start": [], "ts_end": [], "count": []}
        for r in self.rows:
            out["cpu"].append(r["cpu"])
            out["ts_start"].append(first if r["ts_start"] is None else r["ts_start"])
            out["ts_end"].append((self.max_ts if self.max_ts is not None else 0) if r["ts_end"] is None
                                 else r["ts_end"])
            out["count"].append(r["count"])
        return pa.table(out, schema=LOST_SCHEMA)


def _chunks(path: str, size: int) -> Iterator[bytes]:
    """Whole lines, about `size` bytes at a time (a longer line is one chunk of its own)."""
    carry = b""
    with open(path, "rb") as f:
        while True:
            data = f.read(size)
            if not data:
                if carry:
                    yield carry
                return
            buf = carry + data if carry else data
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                carry = buf
                continue
            carry = buf[cut:]
            yield buf[:cut]
            del buf


def stream(trace: TextTrace, parts: StreamParts) -> None:
    """Fill `trace` from its file chunk by chunk (see the module docstring)."""
    lines_of = parts.lines_of
    spill = Spill(parts)
    trace._spill = spill
    weakref.finalize(trace, spill.close)
    lost = _Lost()
    groups = Groups()
    unit: str | None = None
    res: int | None = None
    cpu_max: list[int] = []
    cpu_line: list[int] = []
    try:
        for i, data in enumerate(_chunks(trace.path, trace.CHUNK_BYTES)):
            if i == 0 and b"\0" in data[:65536]:
                raise TraceFormatError(trace.path, "line 1", None, "binary data (NUL bytes) in a text trace")
            lines = lines_of(data)
            del data
            n_markers = len(trace.markers)
            trace.meta.extra.pop("ts_unit", None)
            if not trace._scan(lines, chunk=True):
                lost.chunk(trace.markers[n_markers:], np.zeros(0, np.int32), np.zeros(0, np.int64),
                           np.zeros(0, np.int64))
                trace._line0 += len(lines)
                continue
            u = trace.meta.extra.get("ts_unit")
            if unit is not None and u != unit:
                raise TraceFormatError(trace.path, f"line {int(trace._line_no[0])}", None,
                                       "mixes seconds.fraction and raw counter timestamps")
            unit = u
            r = trace.meta.extra.get("ts_resolution_ns")
            res = r if res is None or r is None else min(res, r)
            lost.chunk(trace.markers[n_markers:], trace._cpu, trace._ts, trace._line_no)
            groups.add(trace._groups)
            j = int(np.argmax(trace._cpu))
            cpu_max.append(int(trace._cpu[j]))
            cpu_line.append(int(trace._line_no[j]))
            for name in list(trace._rows):
                rows = trace._rows[name]
                sample = spill.sample(name, trace._bodies.take(pa.array(rows[:64])))
                t, note, _ = trace._parse_event(name, sample)
                spill.add(name, t, note)
            trace._seq0 += len(trace._ts)
            trace._line0 += len(lines)
            del lines
    except BaseException:
        spill.close()
        raise
    if not spill.counts():
        spill.close()
        raise TraceFormatError(trace.path, "file", None, f"no event lines found in this {trace.FORMAT} file")
    if unit is not None:
        trace.meta.extra["ts_unit"] = unit
        trace.meta.extra["ts_resolution_ns"] = res
    # drop the last chunk's per-record state; leave what the subclasses read after the scan
    trace._groups = groups
    trace._cpu = np.asarray(cpu_max, np.int32)        # per chunk: its highest CPU ...
    trace._line_no = np.asarray(cpu_line, np.int64)   # ... and the line it is on
    trace._ts = np.zeros(0, np.int64)
    trace._rows = {}
    trace._bodies = None
    trace._comm = None
    trace._pid = None
    trace._lost = lost.table()
