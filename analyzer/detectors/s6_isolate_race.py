"""S6: the isolate-vs-pcp race of the 2012 CMA v19 thread.

A page sits on a pcp list cached as (say) CMA; cma_alloc isolates its pageblock; the
page is then drained to the *CMA* freelist although the block is MIGRATE_ISOLATE.
The allocator can hand it out again while the block is isolated (S5) and the page is
counted as free CMA memory twice once the block is restored (the "freepage counting
problem" 51bb1a4093cc fixed in v3.18 by re-reading the block type in
free_pcppages_bulk() while the zone has an isolated block).

Signature: `mm_page_pcpu_drain` of a page whose block the kprobe ground truth has as
ISOLATE at that moment, printing (= putting it on) a freelist other than ISOLATE.  A
correct kernel never does this, whatever its version, so this does not depend on the
version table.  Isolation that is only inferred from cma/test_pages events is not
enough (the window edges are approximate): those drains are counted, not reported.
"""
from __future__ import annotations

import numpy as np

from ..kernels import KernelBehavior
from ._common import (DetectorResult, MT_ISOLATE, ModelView, TIER_PROBE, col, drain_judgement, empty_findings, event_frame, make_findings,
                      match_leave, s_hex, s_int, s_mt, vjoin, with_stats)
from .registry import DetectorInfo, FindingKind

INFO = DetectorInfo(
    id="S6", order=60, severity="critical",
    meaning="drain put a page of an isolated pageblock on a non-isolate freelist (the 2012 isolate-vs-pcp race)",
    kernels="all (< 3.18, or 51bb1a4093cc missing or broken)",
    findings=(FindingKind("S6", "*"),),
    needs=("mm_page_pcpu_drain",),
)


def applies(kernel: KernelBehavior) -> bool:
    return True


def detect(model: ModelView, kernel: KernelBehavior) -> DetectorResult:
    d = event_frame(model, "mm_page_pcpu_drain")
    if d is None:
        return with_stats(empty_findings(), checked=0, skipped_unknown=0)
    seq = col(d, "seq", np.int64)
    pfn = col(d, "pfn", np.uint64)
    printed = col(d, "migratetype", np.int16, -1)
    st, known, _unv, _live, tier = drain_judgement(model, kernel, d)
    bmt = np.asarray(st.mt, np.int16)
    guess = np.asarray(st.guess if hasattr(st, "guess") else st.mt, np.int16)
    iso = guess == MT_ISOLATE
    probe = known & (tier == TIER_PROBE)
    race = probe & (bmt == MT_ISOLATE) & (printed != MT_ISOLATE)
    inferred_only = iso & ~probe & (printed != MT_ISOLATE)
    # checked: every drain whose block type is usable; the race can only show on the probe-isolated ones
    stats = dict(checked=int(known.sum()), skipped_unknown=int((~known).sum()),
                 drains_in_isolated_blocks=int((probe & iso).sum()),
                 isolated_drains_inferred_only=int(inferred_only.sum()))
    idx = np.flatnonzero(race)
    if not len(idx):
        return with_stats(empty_findings(), **stats)
    ridx, res = match_leave(model, "drain", seq[idx])
    owner = np.full(len(idx), -1, np.int64)
    have = ridx >= 0
    if res is not None and have.any():
        sub = res.iloc[ridx[have]]
        owner[have] = col(sub, "cpu", np.int64, -1)
    cpu = col(d, "cpu", np.int64)[idx]
    owner = np.where(owner >= 0, owner, cpu)
    blk = np.asarray(st.block)[idx]
    expl = vjoin("drain on cpu", s_int(cpu), " put pfn ", s_hex(pfn[idx]), " (order ",
                 s_int(col(d, "order", np.int64)[idx]), ") from pcp cpu", s_int(owner), " on the ",
                 s_mt(printed[idx]), " freelist while the kprobe had pageblock ", s_int(blk),
                 " as Isolate: the page was cached on the pcp list before the block was isolated and the "
                 "drain did not re-read the block type (the 2012 isolate-vs-pcp race); the page can be "
                 "allocated from the isolated block and is counted as free twice when the block is restored")
    out = make_findings(detector=INFO.id, severity=INFO.severity, seq=seq[idx], ts=col(d, "ts", np.int64)[idx],
                        cpu=cpu, pfn=pfn[idx], block=blk, event="mm_page_pcpu_drain",
                        printed_mt=printed[idx], block_mt=bmt[idx], explanation=expl)
    return with_stats(out, **stats)
