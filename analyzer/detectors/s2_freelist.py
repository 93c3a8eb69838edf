"""S2: allocation from a polluted freelist.

`mm_page_alloc_zone_locked` prints the freelist that `__rmqueue_smallest()` took
the page from.  When that differs from the page's pageblock type, the freelist
held a page of another block type (Johannes Weiner's "Pagealloc type mismatch"
metric).  The one legitimate cause is a fallback in the same allocation: 6.1's
`__rmqueue_fallback()` moves the victim block's free pages to the requested list
and retries, emitting `mm_page_alloc_extfrag` first.  So a mismatch is excused
when an extfrag with the same requested type, covering this page's block, ran on
the same CPU since that CPU's previous `mm_page_alloc` (i.e. in this allocation).
"""
from __future__ import annotations

import numpy as np

from ..kernels import KernelBehavior
from ._common import (DetectorResult, cpu_frame, ModelView, TIER_NAMES, col, concat_findings, empty_findings, event_frame, evidence_tier,
                      first_after, last_before, make_findings, s_hex, s_int, s_mt, s_pick, source_table,
                      typed, vjoin, with_stats)
from .registry import DetectorInfo, FindingKind

INFO = DetectorInfo(
    id="S2", order=20, severity="medium",
    meaning="page allocated from a freelist whose type differs from its pageblock, with no fallback to explain it",
    kernels="all (6.1: polluted freelists; >= 6.10 only residual multi-block buddy cases)",
    findings=(FindingKind("S2", "^"),),
    needs=("mm_page_alloc_zone_locked",),
)


def applies(kernel: KernelBehavior) -> bool:
    return True


def allocation_bounds(model, cpu, seq):
    """(seq of this CPU's previous mm_page_alloc, seq of its next one) around each record.

    Records of one allocation on a CPU sit between two `mm_page_alloc` records of
    that CPU (the event fires when `__alloc_pages()` returns).
    """
    a = cpu_frame(model, "mm_page_alloc")
    if a is None:
        return np.full(len(seq), -1, np.int64), np.full(len(seq), np.iinfo(np.int64).max, np.int64)
    a_cpu, a_seq = col(a, "cpu", np.int64), col(a, "seq", np.int64)
    p = last_before(a_cpu, a_seq, cpu, seq)
    # the allocation's own mm_page_alloc follows its zone_locked records: include it
    n = first_after(a_cpu, a_seq, cpu, seq)
    since = np.where(p >= 0, a_seq[np.maximum(p, 0)], -1)
    until = np.where(n >= 0, a_seq[np.maximum(n, 0)], np.iinfo(np.int64).max)
    return since, until


def extfrag_cover(model, ext, q_cpu, q_seq, q_block, q_mt, since_seq, until_seq):
    """True where an extfrag of this allocation (same CPU, between since and until) requested
    `q_mt` and covers q_block (6.1 emits it before the retried zone_locked, 6.12's claim path after)."""
    if ext is None or len(q_seq) == 0:
        return np.zeros(len(q_seq), bool)
    pbo = int(model.pageblock_order)
    e_cpu = col(ext, "cpu", np.int64)
    e_seq = col(ext, "seq", np.int64)
    e_blk = (col(ext, "pfn", np.uint64) >> np.uint64(pbo)).astype(np.int64)
    e_fo = col(ext, "fallback_order", np.int64)
    e_nblk = np.left_shift(1, np.maximum(e_fo - pbo, 0))
    e_amt = col(ext, "alloc_migratetype", np.int64, -1)
    # An allocation may trigger several fallbacks (one per refill iteration): walk
    # back over the few latest extfrags on this CPU, each a vectorised step.
    ok = np.zeros(len(q_seq), bool)
    cur_seq = q_seq.copy()
    active = np.ones(len(q_seq), bool)
    for _ in range(8):
        j = last_before(e_cpu, e_seq, q_cpu, cur_seq)
        active &= (j >= 0)
        jj = np.where(j >= 0, j, 0)
        active &= e_seq[jj] > since_seq
        hit = active & (e_amt[jj] == q_mt) & (q_block >= e_blk[jj]) & (q_block < e_blk[jj] + e_nblk[jj])
        ok |= hit
        active &= ~hit
        if not active.any():
            break
        cur_seq = np.where(active, e_seq[jj], cur_seq)
    # 6.12 claim path: zone_locked first, then the extfrag of the same allocation
    j = first_after(e_cpu, e_seq, q_cpu, q_seq)
    jj = np.maximum(j, 0)
    ok |= ((j >= 0) & (e_seq[jj] < until_seq) & (e_amt[jj] == q_mt)
           & (q_block >= e_blk[jj]) & (q_block < e_blk[jj] + e_nblk[jj]))
    return ok


def detect(model: ModelView, kernel: KernelBehavior) -> DetectorResult:
    z = event_frame(model, "mm_page_alloc_zone_locked")
    if z is None:
        return with_stats(empty_findings(), checked=0, skipped_unknown=0)
    seq = col(z, "seq", np.int64)
    pfn = col(z, "pfn", np.uint64)
    cpu = col(z, "cpu", np.int64)
    printed = col(z, "migratetype", np.int16, -1)
    st = model.block_type_at(pfn, seq)
    bmt = np.asarray(st.mt, np.int16)
    known, unverified = typed(model, st)
    isolated = np.asarray(st.isolated, bool)
    mism = known & ~isolated & (printed != bmt)
    seed_mism = int((unverified & ~isolated & (printed != bmt)).sum())
    idx = np.flatnonzero(mism)
    excused = 0
    if len(idx):
        since, until = allocation_bounds(model, cpu[idx], seq[idx])
        blk = np.asarray(st.block, np.int64)[idx]
        cov = extfrag_cover(model, cpu_frame(model, "mm_page_alloc_extfrag"), cpu[idx], seq[idx],
                            blk, printed[idx].astype(np.int64), since, until)
        excused = int(cov.sum())
        idx = idx[~cov]
    if not len(idx):
        return with_stats(empty_findings(), checked=int(known.sum()), skipped_unknown=int((~known).sum()),
                          excused_by_fallback=excused, skipped_unverified_mismatch=seed_mism)
    blk = np.asarray(st.block)[idx]
    expl = vjoin("cpu", s_int(cpu[idx]), " took pfn ", s_hex(pfn[idx]), " (order ",
                 s_int(col(z, "order", np.int64)[idx]), ") from the ", s_mt(printed[idx]),
                 " freelist, but pageblock ", s_int(blk), " is ", s_mt(bmt[idx]), " (",
                 s_pick(TIER_NAMES, evidence_tier(model, st, seq)[idx]), ", ",
                 s_pick(source_table(model), np.asarray(st.source)[idx]),
                 ") and no fallback (mm_page_alloc_extfrag) in this allocation moved it there: the freelist "
                 "was polluted earlier")
    out = make_findings(detector=INFO.id, severity=INFO.severity, seq=seq[idx], ts=col(z, "ts", np.int64)[idx],
                        cpu=cpu[idx], pfn=pfn[idx], block=blk, event="mm_page_alloc_zone_locked",
                        printed_mt=printed[idx], block_mt=bmt[idx], explanation=expl)
    return with_stats(concat_findings([out]), checked=int(known.sum()),
                      skipped_unknown=int((~known).sum()), excused_by_fallback=excused,
                      skipped_unverified_mismatch=seed_mism)
