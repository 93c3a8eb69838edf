"""S1: pcp-drain mismatch, the bug class of the 2012 CMA v19 thread.

On kernels that cache a page's migratetype while it sits on a pcp list (< 6.10),
`mm_page_pcpu_drain` prints that cached type; if the pageblock was retyped in the
meantime (S1a) or the page was refilled from a freelist that did not match its
block (S1b), the page lands on the wrong buddy freelist.  While a block of the zone
is isolated, 3.18+ kernels re-read the live block type, so only drains while no block
of the zone is isolated can show the bug; from 6.10 the drain always prints the live
type.  Which of these the traced kernel does is taken from what the trace showed
(analyzer/model/behaviour.py) where the kprobe allows measuring it, else from the
version table.

Where the kernel printed the live type and the model disagrees, the model missed a
retype: a model warning ("MW"), never a kernel bug - unless the block type rests on
the kprobe itself: a mismatch against the ground truth is always the kernel's.
Drains of a page of an isolated block onto another freelist are S6's.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..kernels import KernelBehavior
from ._common import (DetectorResult, MT_ISOLATE, ModelView, TIER_NAMES, TIER_PROBE, UNVERIFIED_SOURCES, col, concat_findings,
                      drain_judgement, empty_findings, event_frame, evidence_tier, make_findings, match_leave, s_hex, s_int,
                      s_mt, s_pick, source_table, vjoin, with_stats)
from .registry import MODEL_WARNING, DetectorInfo, FindingKind

INFO = DetectorInfo(
    id="S1", order=10, severity="high",
    meaning="pcp drain put a page on a freelist whose type differs from its pageblock (stale pcp migratetype)",
    kernels="< 6.10 (pcp migratetype cache); on >= 6.10 a mismatch is a model warning (MW) unless the kprobe saw the type",
    findings=(FindingKind("S1a", "o"), FindingKind("S1b", "s")),
    needs=("mm_page_pcpu_drain",),
)


def applies(kernel: KernelBehavior) -> bool:
    # Always runs: on live-type kernels it checks the model instead of the kernel.
    return True


def detect(model: ModelView, kernel: KernelBehavior) -> DetectorResult:
    d = event_frame(model, "mm_page_pcpu_drain")
    if d is None:
        return with_stats(empty_findings(), checked=0, skipped_unknown=0)
    seq = col(d, "seq", np.int64)
    pfn = col(d, "pfn", np.uint64)
    printed = col(d, "migratetype", np.int16, -1)
    st, known, unverified, prints_live, tier = drain_judgement(model, kernel, d)
    bmt = np.asarray(st.mt, np.int16)
    probe = known & (tier == TIER_PROBE)
    race = probe & (bmt == MT_ISOLATE) & (printed != MT_ISOLATE)      # S6's
    mism = (known | unverified) & (printed != bmt) & ~race
    # a mismatch against the kprobe's type is the kernel's, whatever the print mode
    kernel_bug = mism & known & (~prints_live | probe)
    model_warn = mism & prints_live & ~probe
    skipped = int((~known).sum())

    frames = []
    idx = np.flatnonzero(kernel_bug)
    if len(idx):
        frames.append(_kernel_findings(model, d, st, idx, seq, pfn, printed, bmt, prints_live))
    idx = np.flatnonzero(model_warn)
    if len(idx):
        frames.append(_model_warnings(model, d, st, idx, seq, pfn, printed, bmt, kernel.live_drain))
    out = concat_findings(frames)
    return with_stats(out, checked=int(known.sum()), skipped_unknown=skipped,
                      skipped_unverified_mismatch=int((mism & ~prints_live & unverified).sum()),
                      in_isolation_window=int((known & prints_live & ~np.full(len(seq), kernel.live_drain)).sum()))


def _kernel_findings(model, d, st, idx, seq, pfn, printed, bmt, prints_live):
    ridx, res = match_leave(model, "drain", seq[idx])
    n = len(idx)
    sub = np.array(["S1a"] * n, dtype=object)
    enter_kind = np.array(["?"] * n, dtype=object)
    cached = np.full(n, -1, np.int16)
    enter_mt = np.full(n, -1, np.int16)
    enter_seq = np.full(n, -1, np.int64)
    enter_cpu = np.full(n, -1, np.int64)
    have = ridx >= 0
    if res is not None and have.any():
        sub_res = res.iloc[ridx[have]]
        enter_kind[have] = sub_res["enter_kind"].astype(str).to_numpy()
        cached[have] = col(sub_res, "cached_mt", np.int16, -1)
        enter_mt[have] = col(sub_res, "block_mt_enter", np.int16, -1)
        enter_seq[have] = col(sub_res, "enter_seq", np.int64, -1)
        enter_cpu[have] = col(sub_res, "cpu", np.int64, -1)
    polluted = have & (enter_kind == "refill") & (enter_mt >= 0) & (cached != enter_mt)
    sub[polluted] = "S1b"

    order = col(d, "order", np.int64)[idx]
    cpu = col(d, "cpu", np.int32)[idx]
    zone_iso = np.asarray(st.zone_isolated, bool)[idx]
    blk = np.asarray(st.block)[idx]
    head = vjoin("drain on cpu", s_int(cpu), " put pfn ", s_hex(pfn[idx]), " (order ", s_int(order), ") on the ",
                 s_mt(printed[idx]), " freelist, but pageblock ", s_int(blk), " is ", s_mt(bmt[idx]), " (",
                 s_pick(TIER_NAMES, evidence_tier(model, st, seq)[idx]), ", ",
                 s_pick(source_table(model), np.asarray(st.source)[idx]), ")")
    head = pc.if_else(pa.array(zone_iso & ~prints_live[idx]),
                      vjoin(head, " (the zone had an isolated block, but this kernel does "
                                  "not re-read the block type on drain)"), head)
    head = pc.if_else(pa.array(prints_live[idx]),
                      vjoin(head, " (this drain should have printed the live block type, and the kprobe "
                                  "recorded the block's type: the kernel printed another)"), head)
    how = pa.array(np.where(enter_kind == "free", "freed to", "refilled into").astype(object), pa.string())
    ent = vjoin(" pcp cpu", s_int(enter_cpu), " at seq ", s_int(enter_seq))
    t_b = vjoin("; the page was refilled into", ent, " from the ", s_mt(cached), " freelist while its block was ",
                s_mt(enter_mt), " (S1b: refilled from a polluted freelist)")
    t_a = vjoin("; the page was ", how, ent, " cached as ", s_mt(cached), " while the block was ", s_mt(enter_mt),
                ", and the block was retyped while the page sat on the pcp list (S1a: stale pcp migratetype)")
    t_n = ("; the page entered the pcp list before the trace (or untraced), so its cached type is stale "
           "against the block (S1a)")
    tail = pc.if_else(pa.array(polluted), t_b, pc.if_else(pa.array(have), t_a, t_n))
    expl = vjoin(head, tail)
    return make_findings(detector=sub.tolist(), severity=INFO.severity, seq=seq[idx],
                         ts=col(d, "ts", np.int64)[idx], cpu=cpu, pfn=pfn[idx], block=blk,
                         event="mm_page_pcpu_drain", printed_mt=printed[idx], block_mt=bmt[idx],
                         explanation=expl)


def _model_warnings(model, d, st, idx, seq, pfn, printed, bmt, live):
    cpu = col(d, "cpu", np.int32)[idx]
    blk = np.asarray(st.block)[idx]
    why = ("this kernel's drain prints the live pageblock type" if live else
           "a block of the zone was isolated, so the kernel printed the live pageblock type")
    src = s_pick(source_table(model), np.asarray(st.source)[idx])
    cause = pc.if_else(pc.is_in(src, pa.array(list(UNVERIFIED_SOURCES))),
                       ", so the model's unconfirmed guess is wrong (most likely the block was retyped before "
                       "tracing began)",
                       ", so the model missed a retype (untraced or outside the inferred isolation window)")
    expl = vjoin("drain of pfn ", s_hex(pfn[idx]), " printed ", s_mt(printed[idx]), " but the model has pageblock ",
                 s_int(blk), " as ", s_mt(bmt[idx]), " (", src, "); ", why, cause, "; not a kernel bug")
    return make_findings(detector=MODEL_WARNING.id, severity=MODEL_WARNING.severity, seq=seq[idx],
                         ts=col(d, "ts", np.int64)[idx], cpu=cpu, pfn=pfn[idx], block=blk,
                         event="mm_page_pcpu_drain", printed_mt=printed[idx], block_mt=bmt[idx],
                         explanation=expl)
