"""The reader contract: every trace format becomes a `Trace` of per-event Arrow tables.

Every later layer (model, detectors, report) only sees this interface, so the
format a trace arrived in (trace.dat, ftrace text, trace-cmd report, perf script)
never leaks past the readers.

Common columns of every event table, in this order:
    seq   int64   position of the record in the trace's global time order
                  (the order `trace-cmd report` prints; ties at equal ts keep
                  per-CPU record order, lower CPU first).  Lets consumers merge
                  tables of different events without losing the order of
                  same-timestamp records (early-boot events all have ts 0).
    ts    int64   nanoseconds, as the trace clock gave them
    cpu   int32
    pid   int32
    comm  string  from saved cmdlines ("<...>" when unknown) or the text line
then every field of the event's format with its real type (unsigned ->
uint8/16/32/64, signed -> int8/16/32/64, `char[]`/`__data_loc char[]` ->
string, other arrays -> binary).  `common_*` fields other than pid are dropped.
"""
from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from ..errors import UnknownEventError

if TYPE_CHECKING:   # pandas costs ~0.4 s to import: only the commands that build frames pay it
    import pandas as pd

COMMON_COLUMNS = ("seq", "ts", "cpu", "pid", "comm")

COMMON_SCHEMA = [
    pa.field("seq", pa.int64()),
    pa.field("ts", pa.int64()),
    pa.field("cpu", pa.int32()),
    pa.field("pid", pa.int32()),
    pa.field("comm", pa.string()),
]

LOST_SCHEMA = pa.schema([
    pa.field("cpu", pa.int32()),
    pa.field("ts_start", pa.int64()),   # last record seen before the gap (or page start)
    pa.field("ts_end", pa.int64()),     # first record after the gap
    pa.field("count", pa.int64()),      # -1 when the kernel did not store the count
])


@dataclass
class FieldFormat:
    """One field of an event format file (`field:TYPE NAME; offset:O; size:S; signed:X;`)."""

    name: str
    type: str          # C type as written, e.g. "unsigned long", "__data_loc char[]"
    offset: int
    size: int
    signed: bool
    array_len: int | None = None   # fixed arrays: `char comm[16]` -> 16
    data_loc: bool = False         # __data_loc / __rel_loc dynamic data
    rel_loc: bool = False


@dataclass
class EventFormat:
    system: str
    name: str
    id: int | None
    fields: list[FieldFormat]      # non-common fields, in offset order
    print_fmt: str = ""

    @property
    def full_name(self) -> str:
        return f"{self.system}:{self.name}"


@dataclass
class TraceMeta:
    path: str
    format: str                    # "trace.dat", "ftrace-text", "trace-cmd-report", "perf-script"
    file_version: int | None = None
    compression: str | None = None # e.g. "zstd", "zlib", "none"
    kernel_release: str | None = None
    uname: str | None = None
    clock: str | None = None
    cpus: int | None = None
    page_size: int | None = None
    long_size: int | None = None
    endian: str | None = None      # "little" / "big"
    buffers: list[str] = field(default_factory=list)  # instance names ("" = top buffer)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class Trace(abc.ABC):
    """A parsed trace.  Subclasses decode lazily and cache per-event tables."""

    meta: TraceMeta

    # -- what every reader implements -------------------------------------------------
    @abc.abstractmethod
    def formats(self) -> dict[str, EventFormat]:
        """All event formats known to the trace, keyed "system:name"."""

    @abc.abstractmethod
    def events(self) -> dict[str, int]:
        """Event name ("system:name") -> number of records, for events that occur."""

    @abc.abstractmethod
    def _table(self, full_name: str, columns: list[str] | None) -> pa.Table:
        """Table for one resolved event name (empty table with the schema if it has no records)."""

    @property
    @abc.abstractmethod
    def lost(self) -> pa.Table:
        """Lost/dropped events per CPU with their time window (LOST_SCHEMA)."""

    def iter_batches(self, events: list[str] | None = None,
                     max_rows: int = 1 << 20) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Stream (event name, batch) pairs; readers that can stream override this.

        The default materialises each table; the trace.dat reader streams per CPU
        and per chunk so files larger than RAM can be processed.
        """
        names = [self.resolve(e) for e in events] if events else sorted(self.events())
        for name in names:
            for batch in self._table(name, None).to_batches(max_chunksize=max_rows):
                yield name, batch

    @property
    def streams(self) -> bool:
        """Whether `iter_batches` streams with bounded memory (else it materialises each table).

        The partitioned analysis (analyzer/partitioned_analysis.py) is chosen automatically only
        for readers that stream: over one that does not, it would hold the whole trace AND spill it.
        """
        return False

    def notes(self) -> dict[str, dict]:
        """Per event: what could not be read (text readers: unparsed lines, null fields).

        A binary trace.dat has raw values for every field, so the default is empty.
        """
        return {}

    # -- shared conveniences ----------------------------------------------------------
    def resolve(self, event: str) -> str:
        """Accept "system:name", "system/name" or a bare unique "name"."""
        fmts = self.formats()
        ev = event.replace("/", ":")
        if ev in fmts:
            return ev
        if ":" not in ev:
            hits = [k for k in fmts if k.split(":", 1)[1] == ev]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise UnknownEventError(f"{self.meta.path}: event name {event!r} is ambiguous: {', '.join(sorted(hits))}")
        raise UnknownEventError(f"{self.meta.path}: no event {event!r} in this trace")

    def has(self, event: str) -> bool:
        try:
            self.resolve(event)
            return True
        except UnknownEventError:
            return False

    def table(self, event: str, columns: list[str] | None = None) -> pa.Table:
        return self._table(self.resolve(event), columns)

    def df(self, event: str, columns: list[str] | None = None) -> pd.DataFrame:
        """pandas view with Arrow-backed dtypes (no copy into object columns)."""
        import pandas as pd
        return self.table(event, columns).to_pandas(types_mapper=pd.ArrowDtype)

    def lost_df(self) -> pd.DataFrame:
        import pandas as pd
        return self.lost.to_pandas(types_mapper=pd.ArrowDtype)

    def time_span(self) -> tuple[int, int] | None:
        """(first ts, last ts) over all events, or None for an empty trace."""
        lo, hi = None, None
        for name in self.events():
            t = self._table(name, ["ts"]).column("ts")
            if len(t):
                import pyarrow.compute as pc
                mm = pc.min_max(t).as_py()
                lo = mm["min"] if lo is None else min(lo, mm["min"])
                hi = mm["max"] if hi is None else max(hi, mm["max"])
        return None if lo is None else (lo, hi)
