"""Both ground-truth probe schemes (analyzer/probes.py) as ONE stream of block-type writes,
and the capture's migratetype numbering translated to mtaudit's canonical one.

Why here: everything downstream (infer.kprobe_rows, isolation.offlined_spans, the detectors)
reads "a write of type T to block B at seq S", which is exactly what the <= 6.16 probe
records.  From 6.17 on isolation is a bit beside a preserved type, so the effective type
(what get_pfnblock_migratetype() answers and the tracepoints print) is:

* a `pb/setmt` write: ISOLATE if the write sets the isolate bit (`flags & 0x10`, memory
  hot-add), else `flags & 7` (the write also clears the bit: mask 0x17);
* a `pb/setiso` (bit 4): ISOLATE, the stored type kept;
* a `pb/clriso` (bit 4): the stored type again: the last setmt write of the block, or, when the
  probe never saw one, `UNKNOWN_STORED` (the model resolves it from the history before it).

Bit records carry any pfn inside the block: aligned down by the model (pfn >> order).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..kernels import ISOLATE, Numbering
from ..probes import ISOLATE_BIT, ISOLATE_FLAG, MIGRATETYPE_MASK
from .events import Table

UNKNOWN_STORED = -2          # a clear whose preserved type the probe stream does not hold
# migratetype-valued fields of the tracepoints the model reads
MT_FIELDS = {
    "mm_page_alloc": ("migratetype",),
    "mm_page_pcpu_drain": ("migratetype",),
    "mm_page_alloc_zone_locked": ("migratetype",),
    "mm_page_alloc_extfrag": ("alloc_migratetype", "fallback_migratetype"),
    "mm_alloc_contig_migrate_range_info": ("migratetype",),
}


def _lut_apply(values: np.ndarray, lut: list[int]) -> np.ndarray:
    v = np.asarray(values, dtype=np.int64)
    out = v.copy()
    ok = (v >= 0) & (v < len(lut))
    out[ok] = np.asarray(lut, dtype=np.int64)[v[ok]]
    return out


def _replace(t: Table, cols: dict[str, np.ndarray]) -> Table:
    arrow = t.arrow
    for name, arr in cols.items():
        i = arrow.column_names.index(name)
        arrow = arrow.set_column(i, name, pa.array(arr, pa.int64()))
    return Table(t.name, arrow, dropped=t.dropped)


def translate_tracepoints(ev: dict[str, Table], numbering: Numbering) -> None:
    """Printed migratetypes -> canonical numbers, in place (a no-op for the CMA=y numbering)."""
    if numbering.identity:
        return
    lut = numbering.lut()
    for short, fields in MT_FIELDS.items():
        t = ev.get(short)
        if t is None or not len(t):
            continue
        cols = {f: _lut_apply(t[f], lut) for f in fields if t.has(f)}
        if cols:
            ev[short] = _replace(t, cols)


def _role(t: Table) -> str | None:
    """'bit-set' / 'bit-clear' for the isolate-bit probes, 'write' for a migratetype writer."""
    fields = set(t.arrow.column_names)
    name = t.name.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if "bit" in fields and "pfn" in fields:
        return "bit-clear" if name.startswith("clr") or name.startswith("clear") else "bit-set"
    if "pfn" in fields and "flags" in fields:
        return "write"
    return None


def _isolate_bit_scheme(kp: dict[str, Table], roles: dict[str, str | None]) -> bool:
    """Whether the probes are the 6.17+ scheme.  Not from the bit records alone: a capture in
    which nothing was isolated has none, yet its writer still records `flags & 0x10` and, as the
    GCC clone, no mask at all (the <= 6.16 writer always records mask; 6.17+'s un-cloned one
    records 0x17)."""
    if any(r in ("bit-set", "bit-clear") for r in roles.values()):
        return True
    for k, t in kp.items():
        if roles[k] == "write" and len(t):
            if not t.has("mask") or bool(((t["mask"] & ISOLATE_FLAG) != 0).any()):
                return True
    return False


def unify(kp: dict[str, Table], numbering: Numbering, pbo: int) -> dict[str, Table]:
    """The kprobe tables (keys 'kprobe:<name>') as one or more tables of effective-type writes
    with the <= 6.16 columns (pfn, flags = canonical type, mask = 7); flags == UNKNOWN_STORED
    marks a clear of the isolate bit whose preserved type the probe never saw."""
    if not kp:
        return kp
    roles = {k: _role(t) for k, t in kp.items()}
    lut = numbering.lut()
    if not _isolate_bit_scheme(kp, roles):
        out = {}
        for k, t in kp.items():       # <= 6.16: only the numbering to translate
            if numbering.identity or not (t.has("flags") and len(t)):
                out[k] = t
                continue
            f = t["flags"]
            sel = (t["mask"] == MIGRATETYPE_MASK) if t.has("mask") else np.ones(len(f), bool)
            out[k] = _replace(t, {"flags": np.where(sel, _lut_apply(f & MIGRATETYPE_MASK, lut), f)})
        return out
    parts = []
    for k, t in kp.items():
        r = roles[k]
        if r is None or not len(t):
            continue
        n = len(t)
        pfn = t["pfn"].astype(np.int64)
        if r == "write":
            flags = t["flags"].astype(np.int64)
            keep = np.ones(n, bool)
            if t.has("mask"):          # un-cloned writer: every migratetype write has mask 0x17 (or 7)
                keep = (t["mask"] & MIGRATETYPE_MASK) == MIGRATETYPE_MASK
            stored = _lut_apply(flags & MIGRATETYPE_MASK, lut)
            mt = np.where(flags & ISOLATE_FLAG, ISOLATE, stored)
            kind = np.where(flags & ISOLATE_FLAG, 3, 0)      # 0 write, 3 write with the isolate bit
        else:
            keep = t["bit"] == ISOLATE_BIT
            mt = np.full(n, ISOLATE if r == "bit-set" else UNKNOWN_STORED, np.int64)
            stored = np.full(n, UNKNOWN_STORED, np.int64)
            kind = np.full(n, 1 if r == "bit-set" else 2, np.int64)
        idx = np.flatnonzero(keep)
        pid = t["pid"][idx] if t.has("pid") else np.full(len(idx), -1, np.int64)
        cpu = t["cpu"][idx] if t.has("cpu") else np.full(len(idx), -1, np.int64)
        parts.append((t["seq"][idx], t["ts"][idx], cpu, pid, pfn[idx], mt[idx], kind[idx], stored[idx]))
    if not parts:
        return {}
    seq, ts, cpu, pid, pfn, mt, kind, stored = (np.concatenate([p[i] for p in parts]).astype(np.int64)
                                                for i in range(8))
    o = np.argsort(seq, kind="stable")
    seq, ts, cpu, pid, pfn, mt, kind, stored = (x[o] for x in (seq, ts, cpu, pid, pfn, mt, kind, stored))
    pfn = (pfn >> pbo) << pbo                         # bit records: any pfn inside the block
    mt = _fill_clears(pfn >> pbo, mt, stored, kind)
    arrow = pa.table({"seq": seq, "ts": ts, "cpu": pa.array(cpu, pa.int32()), "pid": pid, "pfn": pfn,
                      "flags": mt, "mask": np.full(len(seq), MIGRATETYPE_MASK, np.int64),
                      "probe_kind": kind})
    return {"kprobe:pb/setmt": Table("pb/setmt", arrow)}


def _fill_clears(block: np.ndarray, mt: np.ndarray, stored: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Each isolate-bit clear (kind 2) gets the preserved type of the last write (kind 0/3) to
    its block before it; UNKNOWN_STORED where the stream has none (arrays are seq-sorted)."""
    out = mt.copy()
    clear = kind == 2
    if not clear.any():
        return out
    o = np.lexsort((np.arange(len(block)), block))          # by block, seq order kept inside
    b, k, st = block[o], kind[o], stored[o]
    pos = np.arange(len(b))
    start = np.r_[True, b[1:] != b[:-1]] if len(b) else np.zeros(0, bool)
    first = np.flatnonzero(start)
    grp = np.cumsum(start) - 1
    last = np.maximum.accumulate(np.where((k == 0) | (k == 3), pos, -1))
    have = last >= first[grp]
    fill = np.where(have, st[np.maximum(last, 0)], UNKNOWN_STORED)
    res = out[o]
    res[k == 2] = fill[k == 2]
    out[o] = res
    return out
