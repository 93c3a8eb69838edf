"""S4: THP pcp mixing.

From 5d0a661d808f "mm/page_alloc: use only one PCP list for THP-sized
allocations" (v6.0) until bf14ed81f571 "mm/page_alloc: Separate THP PCP into movable
and non-movable categories" (v6.10, stable 6.1.97) one pcp list held all THP-sized
pages regardless of migratetype (5.13's 44042b449872 had one per type), so an unmovable or reclaimable order-9 request could be handed a
page that a movable request had refilled or freed there, i.e. a CMA or MOVABLE
pageblock.  The signature: `mm_page_alloc order=9 migratetype=0|2` whose pfn lies
in a CMA/MOVABLE block and for which no `mm_page_alloc_zone_locked` of that pfn
happened in the same allocation (so it came off the pcp list, not the buddy).
"""
from __future__ import annotations

import numpy as np

from ..kernels import KernelBehavior
from ._common import (DetectorResult, cpu_frame, MT_CMA, MT_MOVABLE, MT_RECLAIMABLE, MT_UNMOVABLE, ModelView, TIER_NAMES, col,
                      empty_findings, event_frame, evidence_tier, last_before, make_findings, s_hex, s_int,
                      s_mt, s_pick, source_table, typed, vjoin, with_stats)
from .registry import DetectorInfo, FindingKind

INFO = DetectorInfo(
    id="S4", order=40, severity="high",
    meaning="order-9 unmovable/reclaimable allocation handed a CMA/MOVABLE-block page from the shared THP pcp list",
    kernels="6.0 .. 6.9 mainline, 6.1 < 6.1.97 (one THP pcp list)",
    findings=(FindingKind("S4", "D"),),
    needs=("mm_page_alloc",),
)


def applies(kernel: KernelBehavior) -> bool:
    return bool(kernel.thp_single_pcp_list)


def detect(model: ModelView, kernel: KernelBehavior) -> DetectorResult:
    a = event_frame(model, "mm_page_alloc")
    if a is None:
        return with_stats(empty_findings(), checked=0, skipped_unknown=0)
    pbo = int(model.pageblock_order)
    order = col(a, "order", np.int64)
    req = col(a, "migratetype", np.int16, -1)
    pfn = col(a, "pfn", np.uint64)
    cand = np.flatnonzero((order == pbo) & ((req == MT_UNMOVABLE) | (req == MT_RECLAIMABLE))
                          & (pfn != 0) & (pfn != np.uint64(0xFFFFFFFFFFFFFFFF)))
    if not len(cand):
        return with_stats(empty_findings(), checked=0, skipped_unknown=0)
    seq = col(a, "seq", np.int64)[cand]
    cpu = col(a, "cpu", np.int64)[cand]
    st = model.block_type_at(pfn[cand], seq)
    bmt = np.asarray(st.mt, np.int16)
    known, _ = typed(model, st)
    hit = known & ((bmt == MT_CMA) | (bmt == MT_MOVABLE))

    # Was the page taken from the buddy in this allocation?  Look for a zone_locked
    # record of this pfn on this CPU after the CPU's previous mm_page_alloc.
    z = cpu_frame(model, "mm_page_alloc_zone_locked")
    from_buddy = np.zeros(len(cand), bool)
    if z is not None:
        a_all = cpu_frame(model, "mm_page_alloc")
        a_all_cpu, a_all_seq = col(a_all, "cpu", np.int64), col(a_all, "seq", np.int64)
        prev = last_before(a_all_cpu, a_all_seq, cpu, seq)
        since = np.where(prev >= 0, a_all_seq[np.maximum(prev, 0)], -1)
        z_cpu, z_seq, z_pfn = col(z, "cpu", np.int64), col(z, "seq", np.int64), col(z, "pfn", np.uint64)
        cur = seq.copy()
        active = np.ones(len(cand), bool)
        for _ in range(16):   # a THP refill takes a few pages: walk back over them
            j = last_before(z_cpu, z_seq, cpu, cur)
            jj = np.maximum(j, 0)
            active &= (j >= 0) & (z_seq[jj] > since)
            found = active & (z_pfn[jj] == pfn[cand])
            from_buddy |= found
            active &= ~found
            if not active.any():
                break
            cur = np.where(active, z_seq[jj], cur)
    sel = hit & ~from_buddy
    idx = np.flatnonzero(sel)
    stats = dict(checked=int(known.sum()), skipped_unknown=int((~known).sum()),
                 from_buddy=int((hit & from_buddy).sum()))
    if not len(idx):
        return with_stats(empty_findings(), **stats)
    j = cand[idx]
    blk = np.asarray(st.block)[idx]
    expl = vjoin("cpu", s_int(cpu[idx]), f" served an order-{pbo} ", s_mt(req[j]), " allocation with pfn ",
                 s_hex(pfn[j]), " straight from the pcp list (no zone_locked for it in this allocation), but "
                 "pageblock ", s_int(blk), " is ", s_mt(bmt[idx]), " (",
                 s_pick(TIER_NAMES, evidence_tier(model, st, seq)[idx]), ", ",
                 s_pick(source_table(model), np.asarray(st.source)[idx]),
                 "): the shared THP pcp list mixed migratetypes")
    out = make_findings(detector=INFO.id, severity=INFO.severity, seq=seq[idx], ts=col(a, "ts", np.int64)[j],
                        cpu=cpu[idx], pfn=pfn[j], block=blk, event="mm_page_alloc",
                        printed_mt=req[j], block_mt=bmt[idx], explanation=expl)
    return with_stats(out, **stats)
