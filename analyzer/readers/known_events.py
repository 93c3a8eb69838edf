"""Event layouts the kernel fixes, for readers that only see text.

Text traces carry no format files, so a text reader would have to guess column
types from the printed values — and then `pfn` would come out int64 in one
file and uint64 in another, and never equal the trace.dat reader's table.  For
the events mtaudit is about, the kernel's TP_STRUCT__entry is known (include/trace/events/kmem.h,
cma.h and page_isolation.h of v6.1/v6.12, checked against the format files in
fixtures/captures/*/trace.dat), so the text readers take names and types from
here.  Types are those of a 64-bit kernel (`unsigned long` -> uint64), which is
what every shipped capture is.

Only facts live here: field names in format (offset) order, their Arrow types,
which names the print format shows that are *not* fields (`page=%p` computed
from pfn, `ret=success`), which fields are pointers (the kernel's own
/sys/kernel/tracing/trace prints them hashed), and the few symbolic values a
print format substitutes for a number (`gfp_flags=none` means 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

U64, U32, I32, STR = pa.uint64(), pa.uint32(), pa.int32(), pa.string()


@dataclass(frozen=True)
class KnownField:
    name: str
    type: pa.DataType
    ctype: str                      # C type as the format file spells it
    pointer: bool = False           # printed with %p: hashed in the kernel's own text output
    bare_hex: bool = False          # printed with %lx (hex without 0x) even in -R output
    optional: bool = False          # only on some kernels (column present only if printed)
    symbols: tuple[tuple[str, int], ...] = ()   # printed words that stand for a number


@dataclass(frozen=True)
class KnownEvent:
    system: str
    name: str
    fields: tuple[KnownField, ...]
    print_only: frozenset[str] = frozenset()    # `name=` in the print format that is not a field
    # RE2 pattern with named groups for pretty bodies whose fields are not `name=value`
    # (kprobes print `(%lx)` for __probe_ip; ftrace:print prints `%ps: %s`).
    positional: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.system}:{self.name}"

    def field(self, name: str) -> KnownField | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


def _f(name: str, typ: pa.DataType, ctype: str, **kw) -> KnownField:
    return KnownField(name, typ, ctype, **kw)


_PFN = _f("pfn", U64, "unsigned long")
_ORDER = _f("order", U32, "unsigned int")
_MT = _f("migratetype", I32, "int")
_NAME = _f("name", STR, "__data_loc char[]")
# `%p` of NULL prints "(nil)" in libtraceevent/glibc and "(null)" in the kernel
_NULLPTR = (("(nil)", 0), ("(null)", 0))
_PAGE = _f("page", U64, "const struct page *", pointer=True, symbols=_NULLPTR)
_COUNT = _f("count", U64, "unsigned long")
_ALIGN = _f("align", U32, "unsigned int")
_PAGE_ONLY = frozenset({"page"})

_EVENTS = [
    # include/trace/events/kmem.h (identical in 6.1 and 6.12)
    KnownEvent("kmem", "mm_page_alloc", (
        _PFN, _ORDER,
        _f("gfp_flags", U64, "unsigned long", symbols=(("none", 0),)),
        _MT), _PAGE_ONLY),
    KnownEvent("kmem", "mm_page_free", (_PFN, _ORDER), _PAGE_ONLY),
    KnownEvent("kmem", "mm_page_free_batched", (_PFN,), frozenset({"page", "order"})),
    KnownEvent("kmem", "mm_page_alloc_zone_locked", (
        _PFN, _ORDER, _MT, _f("percpu_refill", I32, "int")), _PAGE_ONLY),
    KnownEvent("kmem", "mm_page_pcpu_drain", (_PFN, _ORDER, _MT), _PAGE_ONLY),
    KnownEvent("kmem", "mm_page_alloc_extfrag", (
        _PFN,
        _f("alloc_order", I32, "int"), _f("fallback_order", I32, "int"),
        _f("alloc_migratetype", I32, "int"), _f("fallback_migratetype", I32, "int"),
        _f("change_ownership", I32, "int")),
        frozenset({"page", "pageblock_order", "fragmenting"})),
    KnownEvent("kmem", "mm_alloc_contig_migrate_range_info", (
        _f("start", U64, "unsigned long"), _f("end", U64, "unsigned long"),
        _f("nr_migrated", U64, "unsigned long"), _f("nr_reclaimed", U64, "unsigned long"),
        _f("nr_mapped", U64, "unsigned long"), _MT)),
    # include/trace/events/cma.h (6.12 adds errorno to cma_alloc_finish)
    KnownEvent("cma", "cma_alloc_start", (_NAME, _COUNT, _ALIGN)),
    KnownEvent("cma", "cma_alloc_finish", (
        _NAME, _PFN, _PAGE, _COUNT, _ALIGN, _f("errorno", I32, "int", optional=True))),
    KnownEvent("cma", "cma_alloc_busy_retry", (_NAME, _PFN, _PAGE, _COUNT, _ALIGN)),
    KnownEvent("cma", "cma_release", (_NAME, _PFN, _PAGE, _COUNT)),
    # include/trace/events/page_isolation.h
    KnownEvent("page_isolation", "test_pages_isolated", (
        _f("start_pfn", U64, "unsigned long"), _f("end_pfn", U64, "unsigned long"),
        _f("fin_pfn", U64, "unsigned long")), frozenset({"ret"})),
    # the collectors' kprobe: p:pb/setmt set_pfnblock_flags_mask page=%x0:x64 flags=%x1:u64 ...
    KnownEvent("pb", "setmt", (
        _f("__probe_ip", U64, "unsigned long", bare_hex=True),
        _f("page", U64, "u64"), _f("flags", U64, "u64"),
        _f("pfn", U64, "u64"), _f("mask", U64, "u64")),
        positional=r"^\((?P<__probe_ip>[0-9a-fA-F]+)\)"),
    # ftrace's trace_marker event: `%ps: %s`; ip is a symbol in every text output.
    KnownEvent("ftrace", "print", (
        _f("ip", U64, "unsigned long"), _f("buf", STR, "char[]")),
        positional=r"^(?P<ip>[^\s:]+): (?P<buf>.*)$"),
]

KNOWN: dict[str, KnownEvent] = {e.name: e for e in _EVENTS}

# The kernel's own trace file prints ftrace:print records as `<symbol>: <text>`
# with the caller's symbol where the event name would be.
PRINT_ALIASES = frozenset({"tracing_mark_write"})

UNKNOWN_SYSTEM = "unknown"

# Systems of other common tracepoints, so text traces name them as trace.dat does
# (text prints only the bare name).  Exact names first, then name prefixes; all
# from include/trace/events/{sched,irq,compaction,vmscan,migrate,kmem,power}.h.
SYSTEM_OF = {
    "kmalloc": "kmem", "kfree": "kmem", "kmem_cache_alloc": "kmem", "kmem_cache_free": "kmem",
    "rss_stat": "kmem", "mm_migrate_pages": "migrate", "mm_migrate_pages_start": "migrate",
    "cpu_idle": "power", "cpu_frequency": "power",
    "irq_handler_entry": "irq", "irq_handler_exit": "irq",
    "softirq_entry": "irq", "softirq_exit": "irq", "softirq_raise": "irq",
}
SYSTEM_PREFIXES = (("sched_", "sched"), ("mm_compaction_", "compaction"), ("mm_vmscan_", "vmscan"))


def lookup(name: str) -> KnownEvent | None:
    """Known layout for "system:name" or a bare "name" (text formats often omit the system)."""
    if ":" in name:
        sysname, bare = name.split(":", 1)
        ev = KNOWN.get(bare)
        return ev if ev is not None and ev.system == sysname else None
    return KNOWN.get(name)


def full_name(bare: str) -> str:
    """"system:name" for a bare event name as trace-cmd/ftrace text print it."""
    ev = KNOWN.get(bare)
    if ev:
        return ev.full_name
    if bare in SYSTEM_OF:
        return f"{SYSTEM_OF[bare]}:{bare}"
    for prefix, system in SYSTEM_PREFIXES:
        if bare.startswith(prefix):
            return f"{system}:{bare}"
    return f"{UNKNOWN_SYSTEM}:{bare}"
