"""S5: isolation leak.

While `alloc_contig_range()` (cma_alloc, alloc_contig_pages) or memory offline
holds a pageblock at MIGRATE_ISOLATE, nothing may allocate from it; yet pages
that were already on pcp lists (6.1 drains only *after* isolating; the 2012
thread's "someone can allocate it") or buddies straddling the range (fixed by
6.10's hygiene series) can still be handed out.  Such an allocation makes the
contiguous allocation fail (`test_pages_isolated ret=fail`, `cma_alloc_busy_retry`).
Signature: `mm_page_alloc` whose first or last pageblock is isolated at that moment.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..kernels import KernelBehavior
from ._common import (DetectorResult, MT_ISOLATE, ModelView, col, empty_findings, event_frame, make_findings, s_hex, s_int,
                      s_mt, s_pick, source_table, vjoin, with_stats)
from .registry import DetectorInfo, FindingKind

INFO = DetectorInfo(
    id="S5", order=50, severity="high",
    meaning="page allocated from a pageblock that was isolated (MIGRATE_ISOLATE) at that moment",
    kernels="all (pcp hand-outs after isolation remain possible in 6.12)",
    findings=(FindingKind("S5", "P"),),
    needs=("mm_page_alloc",),
)


def applies(kernel: KernelBehavior) -> bool:
    return True


def detect(model: ModelView, kernel: KernelBehavior) -> DetectorResult:
    a = event_frame(model, "mm_page_alloc")
    if a is None:
        return with_stats(empty_findings(), checked=0, skipped_unknown=0)
    pfn = col(a, "pfn", np.uint64)
    order = col(a, "order", np.int64)
    ok = (pfn != 0) & (pfn != np.uint64(0xFFFFFFFFFFFFFFFF))   # failed allocations print pfn 0
    checked = int(ok.sum())
    # Only allocations inside some isolation interval in time can hit an isolated block:
    # ask the model about those alone (isolation is rare, allocations are not).
    ok &= _in_isolation_time(model, col(a, "ts", np.int64))
    rows = np.flatnonzero(ok)
    if not len(rows):
        return with_stats(empty_findings(), checked=checked, skipped_unknown=0)
    seq = col(a, "seq", np.int64)[rows]
    p = pfn[rows]
    last = p + (np.left_shift(np.uint64(1), order[rows].astype(np.uint64)) - np.uint64(1))
    st1 = model.block_type_at(p, seq)
    iso1 = np.asarray(st1.isolated, bool)
    conf1 = np.asarray(st1.confidence)
    # only allocations larger than a pageblock can end in another block
    big = np.flatnonzero(order[rows] > int(model.pageblock_order))
    st2 = _State.copy_of(st1)
    if len(big):
        sb = model.block_type_at(last[big], seq[big])
        for f in ("mt", "confidence", "source", "isolated", "block"):
            getattr(st2, f)[big] = np.asarray(getattr(sb, f))
    iso2 = np.asarray(st2.isolated, bool)
    conf2 = np.asarray(st2.confidence)
    hit_first = iso1 & (conf1 >= 1)
    hit_last = iso2 & (conf2 >= 1) & ~hit_first
    skipped = int(((iso1 & (conf1 < 1)) | (iso2 & (conf2 < 1) & ~iso1)).sum())
    sel = hit_first | hit_last
    idx = np.flatnonzero(sel)
    if not len(idx):
        return with_stats(empty_findings(), checked=checked, skipped_unknown=skipped)
    use_last = hit_last[idx]
    blk = np.where(use_last, np.asarray(st2.block)[idx], np.asarray(st1.block)[idx])
    bmt = np.where(use_last, np.asarray(st2.mt)[idx], np.asarray(st1.mt)[idx]).astype(np.int16)
    src_codes = np.where(use_last, np.asarray(st2.source)[idx], np.asarray(st1.source)[idx])
    j = rows[idx]
    req = col(a, "migratetype", np.int16, -1)[j]
    cpu = col(a, "cpu", np.int32)[j]
    win = _window_names(model, blk, seq[idx], col(a, "ts", np.int64)[j])
    expl = vjoin("cpu", s_int(cpu), " allocated pfn ", s_hex(pfn[j]), " (order ", s_int(order[j]), ", ",
                 s_mt(req), " request) while pageblock ", s_int(blk), " was isolated", pa.array(win, pa.string()),
                 " (block type ", s_mt(bmt), ", ", s_pick(source_table(model), src_codes),
                 pc.if_else(pa.array(bmt == MT_ISOLATE), "", "; isolation inferred from the window only"),
                 "): the contiguous allocation will find the page busy")
    out = make_findings(detector=INFO.id, severity=INFO.severity, seq=seq[idx], ts=col(a, "ts", np.int64)[j],
                        cpu=cpu, pfn=pfn[j], block=blk, event="mm_page_alloc", printed_mt=req,
                        block_mt=bmt, explanation=expl)
    return with_stats(out, checked=checked, skipped_unknown=skipped)


def _in_isolation_time(model, ts: np.ndarray) -> np.ndarray:
    """True where ts falls in an isolation window or an ISOLATE interval of the block history."""
    starts, ends = [], []
    iso = getattr(model, "isolation", None)
    if iso is not None and len(iso):
        starts.append(col(iso, "start_ts", np.int64))
        ends.append(col(iso, "end_ts", np.int64))
    bl = getattr(model, "blocks", None)
    if bl is not None and len(bl):
        m = col(bl, "migratetype", np.int16, -1) == MT_ISOLATE
        if "guess_mt" in bl.columns:
            m |= col(bl, "guess_mt", np.int16, -1) == MT_ISOLATE
        starts.append(col(bl, "start_ts", np.int64)[m])
        ends.append(col(bl, "end_ts", np.int64)[m])
    if not starts:
        return np.zeros(len(ts), bool)
    st, en = np.concatenate(starts), np.concatenate(ends)
    if not len(st):
        return np.zeros(len(ts), bool)
    o = np.argsort(st, kind="stable")
    st, reach = st[o], np.maximum.accumulate(en[o])
    i = np.searchsorted(st, ts, side="right") - 1
    return (i >= 0) & (reach[np.maximum(i, 0)] >= ts)


class _State:
    """Writable copy of a BlockState's arrays."""

    mt: np.ndarray
    confidence: np.ndarray
    source: np.ndarray
    isolated: np.ndarray
    block: np.ndarray

    @staticmethod
    def copy_of(st) -> "_State":
        c = _State()
        for f in ("mt", "confidence", "source", "isolated", "block"):
            setattr(c, f, np.array(getattr(st, f), copy=True))
        return c


def _window_names(model, blk, seq, ts):
    """' by cma_alloc(hugetlb0)' etc. for each finding, from the model's isolation windows."""
    iso = getattr(model, "isolation", None)
    out = [""] * len(blk)
    if iso is None or len(iso) == 0:
        return out
    pbo = int(model.pageblock_order)
    s_ts, e_ts = col(iso, "start_ts", np.int64), col(iso, "end_ts", np.int64)
    s_b = (col(iso, "start_pfn", np.uint64) >> np.uint64(pbo)).astype(np.int64)
    e_b = ((col(iso, "end_pfn", np.uint64) - np.uint64(1)) >> np.uint64(pbo)).astype(np.int64)
    kind = iso["kind"].astype(str).to_numpy()
    name = iso["name"].astype(str).to_numpy() if "name" in iso.columns else [""] * len(iso)
    for k in range(len(blk)):   # findings are few; windows are few
        m = np.flatnonzero((s_ts <= ts[k]) & (ts[k] <= e_ts) & (s_b <= blk[k]) & (blk[k] <= e_b))
        if len(m):
            i = m[-1]
            who = {"cma": "cma_alloc", "contig": "alloc_contig_range", "offline": "memory offline"}.get(kind[i], kind[i])
            out[k] = f" by {who}" + (f"({name[i]})" if name[i] else "")
    return out
