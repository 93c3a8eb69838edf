"""A small in-memory Trace for unit tests of the model and the detectors.

    tr = SyntheticTrace()
    tr.add("mm_page_free", pfn=0x40000, order=0)                   # seq 0, ts 1000
    tr.add("mm_page_pcpu_drain", pfn=0x40000, order=0, migratetype=1, cpu=1)
    meta = synthetic_meta(zones=[("DMA", 0x40000, 0x80000)], cma=[("reserved", 0x60000, 0x4000)])

Records get seq in insertion order and ts = 1000 * (seq + 1) unless given.  Field
types follow the real kernel formats (pfn unsigned long, migratetype int, ...).
"""
from __future__ import annotations

import pyarrow as pa

from ..capture import CaptureMeta
from ..readers.base import COMMON_SCHEMA, LOST_SCHEMA, EventFormat, FieldFormat, Trace, TraceMeta

U64, I32, U32, STR = pa.uint64(), pa.int32(), pa.uint32(), pa.string()
SCHEMAS: dict[str, tuple[str, list[tuple[str, pa.DataType]]]] = {
    "mm_page_alloc": ("kmem", [("pfn", U64), ("order", U32), ("gfp_flags", U64), ("migratetype", I32)]),
    "mm_page_free": ("kmem", [("pfn", U64), ("order", U32)]),
    "mm_page_free_batched": ("kmem", [("pfn", U64)]),
    "mm_page_pcpu_drain": ("kmem", [("pfn", U64), ("order", U32), ("migratetype", I32)]),
    "mm_page_alloc_zone_locked": ("kmem", [("pfn", U64), ("order", U32), ("migratetype", I32), ("percpu_refill", I32)]),
    "mm_page_alloc_extfrag": ("kmem", [("pfn", U64), ("alloc_order", I32), ("fallback_order", I32),
                                       ("alloc_migratetype", I32), ("fallback_migratetype", I32),
                                       ("change_ownership", I32)]),
    "mm_alloc_contig_migrate_range_info": ("kmem", [("start", U64), ("end", U64), ("nr_migrated", U64),
                                                    ("nr_reclaimed", U64), ("nr_mapped", U64), ("migratetype", I32)]),
    "cma_alloc_start": ("cma", [("name", STR), ("count", U64), ("align", U32)]),
    "cma_alloc_finish": ("cma", [("name", STR), ("pfn", U64), ("page", U64), ("count", U64), ("align", U32),
                                 ("errorno", I32)]),
    "cma_alloc_busy_retry": ("cma", [("name", STR), ("pfn", U64), ("page", U64), ("count", U64), ("align", U32)]),
    "cma_release": ("cma", [("name", STR), ("pfn", U64), ("page", U64), ("count", U64)]),
    "test_pages_isolated": ("page_isolation", [("start_pfn", U64), ("end_pfn", U64), ("fin_pfn", U64)]),
    "print": ("ftrace", [("ip", U64), ("buf", STR)]),
    "setmt": ("pb", [("page", U64), ("flags", U64), ("pfn", U64), ("mask", U64)]),
}
_CTYPE = {U64: ("unsigned long", 8, False), I32: ("int", 4, True), U32: ("unsigned int", 4, False),
          STR: ("__data_loc char[]", 4, True)}


class SyntheticTrace(Trace):
    def __init__(self, events: list[str] | None = None, path: str = "<synthetic>"):
        self.meta = TraceMeta(path=path, format="synthetic", page_size=4096)
        self._rows: dict[str, list[dict]] = {}
        self._seq = 0
        self._declared = set(events or [])
        self.lost_rows: list[dict] = []

    def add(self, event: str, cpu: int = 0, ts: int | None = None, pid: int = 1, comm: str = "t", **fields) -> int:
        """Append one record; returns its seq.  -1 for an unsigned field means the kernel's -1UL."""
        if event not in SCHEMAS:
            raise KeyError(f"no synthetic schema for {event}")
        seq = self._seq
        self._seq += 1
        row = {"seq": seq, "ts": 1000 * (seq + 1) if ts is None else ts, "cpu": cpu, "pid": pid, "comm": comm}
        for name, typ in SCHEMAS[event][1]:
            v = fields.pop(name, 0 if typ != STR else "")
            if typ == U64 and isinstance(v, int) and v < 0:
                v &= (1 << 64) - 1
            row[name] = v
        if fields:
            raise KeyError(f"{event}: unknown fields {sorted(fields)}")
        self._rows.setdefault(event, []).append(row)
        self._declared.add(event)
        return seq

    def formats(self) -> dict[str, EventFormat]:
        out = {}
        for ev in self._declared:
            system, fields = SCHEMAS[ev]
            ff, off = [], 8
            for name, typ in fields:
                ct, size, signed = _CTYPE[typ]
                ff.append(FieldFormat(name, ct, off, size, signed, data_loc=typ == STR))
                off += size
            out[f"{system}:{ev}"] = EventFormat(system, ev, None, ff)
        return out

    def events(self) -> dict[str, int]:
        return {f"{SCHEMAS[e][0]}:{e}": len(r) for e, r in self._rows.items() if r}

    def _table(self, full_name: str, columns: list[str] | None) -> pa.Table:
        ev = full_name.split(":", 1)[1]
        schema = pa.schema(COMMON_SCHEMA + [pa.field(n, t) for n, t in SCHEMAS[ev][1]])
        rows = self._rows.get(ev, [])
        t = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
        return t.select(columns) if columns else t

    @property
    def lost(self) -> pa.Table:
        return pa.Table.from_pylist(self.lost_rows, schema=LOST_SCHEMA)


def synthetic_meta(zones=(("DMA", 0x40000, 0x50000),), cma=(), pageblock_order: int = 9,
                   release: str | None = "6.1.0") -> CaptureMeta:
    m = CaptureMeta(source="<synthetic>", kind="trace", kernel_release=release, uname=None,
                    pageblock_order=pageblock_order)
    m.zones = [tuple(z) for z in zones]
    m.cma_areas = [tuple(c) for c in cma]
    return m
