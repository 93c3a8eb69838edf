"""Read the events the model needs once, as seq-sorted numpy columns.

Everything downstream works on plain numpy arrays (pfn as int64, where the
kernel's -1UL "no page" becomes -1), so the hot path never touches pandas.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..capture import MAX_SPAN_BLOCKS, PFN_LIMIT
from ..readers.base import Trace

# short name -> candidate full names (first present wins)
MODEL_EVENTS = {
    "mm_page_alloc": "kmem:mm_page_alloc",
    "mm_page_free": "kmem:mm_page_free",
    "mm_page_free_batched": "kmem:mm_page_free_batched",
    "mm_page_pcpu_drain": "kmem:mm_page_pcpu_drain",
    "mm_page_alloc_zone_locked": "kmem:mm_page_alloc_zone_locked",
    "mm_page_alloc_extfrag": "kmem:mm_page_alloc_extfrag",
    "mm_alloc_contig_migrate_range_info": "kmem:mm_alloc_contig_migrate_range_info",
    "cma_alloc_start": "cma:cma_alloc_start",
    "cma_alloc_finish": "cma:cma_alloc_finish",
    "cma_alloc_busy_retry": "cma:cma_alloc_busy_retry",
    "cma_release": "cma:cma_release",
    "test_pages_isolated": "page_isolation:test_pages_isolated",
    "print": "ftrace:print",
}
KPROBE_MARKER = "pb/setmt kprobe active"
# Fields holding a page frame number, and page counts.  A record whose value cannot be real
# memory (the capture's PFN_LIMIT; the kernel's -1UL "no page" stays) is corrupt: it is not
# model input, because every downstream step would size arrays or ranges by it.
PFN_FIELDS = ("pfn", "start", "end", "start_pfn", "end_pfn", "fin_pfn")
COUNT_FIELDS = ("count",)
KPROBE_TYPE_FIELDS = ("flags", "mt", "migratetype")


@dataclass
class Table:
    """One event's rows: numpy columns keyed by field name, seq-sorted."""

    name: str
    arrow: pa.Table
    cols: dict[str, np.ndarray] = field(default_factory=dict)
    dropped: int = 0          # records left out as impossible (see PFN_FIELDS)

    def __len__(self) -> int:
        return self.arrow.num_rows

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.cols:
            col = self.arrow.column(key)
            t = col.type
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                arr = np.asarray(col.to_pylist(), dtype=object)
            elif col.null_count and (pa.types.is_integer(t) or pa.types.is_boolean(t)):
                # a value the reader could not read (a garbled text field) is "no value": -1, like
                # the kernel's -1UL, never a float NaN that breaks every int() downstream
                null = col.is_null().to_numpy(zero_copy_only=False)
                arr = col.fill_null(0).to_numpy().astype(np.uint64).view(np.int64) if t == pa.uint64() \
                    else col.fill_null(0).to_numpy().astype(np.int64)
                arr[null] = -1
            else:
                arr = col.to_numpy()
                if arr.dtype == np.uint64:
                    arr = arr.view(np.int64)       # -1UL sentinel -> -1
                elif arr.dtype.kind in "ui" and arr.dtype != np.int64:
                    arr = arr.astype(np.int64)
            self.cols[key] = arr
        return self.cols[key]

    def has(self, key: str) -> bool:
        return key in self.arrow.column_names

    def df(self):
        import pandas as pd
        return self.arrow.to_pandas(types_mapper=pd.ArrowDtype)


def _sorted(t: pa.Table) -> pa.Table:
    t = t.combine_chunks()
    if t.num_rows > 1:
        s = t.column("seq").to_numpy()
        if np.any(s[1:] < s[:-1]):
            t = t.take(pa.array(np.argsort(s, kind="stable")))
    return t


RANGES = (("start", "end"), ("start_pfn", "end_pfn"))


def _plausible(t: Table, max_span: int) -> Table:
    """The table without records whose page numbers or counts cannot be real memory, or whose
    range (start..end, pfn + count) spans more than `max_span` pages (the model lists every
    pageblock of a range, so such a record would exhaust memory)."""
    if not len(t):
        return t
    keep = np.ones(len(t), dtype=bool)
    present = [f for f in PFN_FIELDS + COUNT_FIELDS
               if t.has(f) and pa.types.is_integer(t.arrow.column(f).type)]
    for f in present:
        v = t[f]
        ok = (v >= 0) & (v < PFN_LIMIT)
        if f == "pfn":
            ok |= v == -1
        keep &= ok
    if "count" in present:
        keep &= t["count"] <= max_span
    for a, b in RANGES:
        if a in present and b in present:
            keep &= (t[b] - t[a]) <= max_span       # both are in 0..PFN_LIMIT here: no overflow
    if keep.all():
        return t
    return Table(t.name, t.arrow.filter(pa.array(keep)), dropped=int((~keep).sum()))


def empty(name: str) -> Table:
    return Table(name, pa.table({"seq": pa.array([], pa.int64()), "ts": pa.array([], pa.int64()),
                                 "cpu": pa.array([], pa.int32())}))


def read_events(trace: Trace, ground_truth_events: list[str] | None = None,
                pageblock_order: int = 9) -> dict[str, Table]:
    """All model events present in the trace, plus ground-truth kprobe tables under 'kprobe:<name>'.

    Records that cannot describe real memory are left out (Table.dropped counts them)."""
    max_span = MAX_SPAN_BLOCKS << max(0, min(int(pageblock_order), 20))
    out: dict[str, Table] = {}
    names = trace.events()
    for short, full in MODEL_EVENTS.items():
        if full in names or trace.has(full):
            out[short] = _plausible(Table(short, _sorted(trace.table(full))), max_span)
        else:
            out[short] = empty(short)
    for full, fmt in trace.formats().items():
        fields = {f.name for f in fmt.fields}
        explicit = bool(ground_truth_events) and (full in ground_truth_events or fmt.name in ground_truth_events
                                                  or fmt.system in ground_truth_events)
        # the corpus probe names the new type "flags"; the notes' recipe calls it "mt"
        # ... and the 6.17+ probes (analyzer/probes.py): (pfn, flags) writes and (pfn, bit) isolate bits
        if explicit or ({"pfn", "mask"} <= fields and fields & set(KPROBE_TYPE_FIELDS)) \
                or (fmt.system == "pb" and ({"pfn", "flags"} <= fields or {"pfn", "bit"} <= fields)):
            if full in names:
                out["kprobe:" + full] = _plausible(Table(full, _sorted(trace.table(full))), max_span)
    return out


def kprobe_marker_seq(prints: Table) -> tuple[int, int] | None:
    """(seq, ts) of the trace_marker that says the ground-truth kprobe went live."""
    if not len(prints) or not prints.has("buf"):
        return None
    buf = prints.arrow.column("buf")
    hit = pc.match_substring(buf, KPROBE_MARKER)
    idx = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
    if not len(idx):
        return None
    i = int(idx[0])
    return int(prints["seq"][i]), int(prints["ts"][i])
