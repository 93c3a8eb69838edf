"""S3: CMA escape, the end state the 2012 thread describes ("finally causes pageblock
migration type change from MIGRATE_CMA to MIGRATE_MOVABLE").

Three observable forms, all of memory that should only ever serve movable
allocations (and be reclaimable by cma_alloc) leaking into general use:
  * a pfn of a CMA area put on / taken from a non-CMA freelist (zone_locked or
    drain printing a type other than CMA or ISOLATE while its block is not isolated);
  * an `mm_page_alloc_extfrag` fallback whose page lies in a CMA area but was found
    on a non-CMA freelist (the fallback table never lists CMA, so this is a stray page);
  * "CMA block lost": a pageblock that was CMA becomes any type other than CMA or
    ISOLATE in the model's history (the block is gone from the CMA pool for good).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..kernels import KernelBehavior
from ._common import (DetectorResult, MT_CMA, MT_ISOLATE, ModelView, cma_block_mask, col, concat_findings, empty_findings,
                      event_frame, make_findings, s_hex, s_int, s_mt, typed, vjoin, with_stats)
from .registry import DetectorInfo, FindingKind

INFO = DetectorInfo(
    id="S3", order=30, severity="critical",
    meaning="CMA memory on a non-CMA freelist, stolen by a fallback, or a CMA pageblock retyped (CMA block lost)",
    kernels="all (known cause: mainline < 6.1.57 pcp-trylock free path; any recurrence is a bug)",
    findings=(FindingKind("S3", "v"),),
    needs_any=("mm_page_alloc_zone_locked", "mm_page_pcpu_drain", "mm_page_alloc_extfrag"),
)


def applies(kernel: KernelBehavior) -> bool:
    return True


def detect(model: ModelView, kernel: KernelBehavior) -> DetectorResult:
    pbo = np.uint64(int(model.pageblock_order))
    frames, checked, skipped = [], 0, 0
    for name in ("mm_page_alloc_zone_locked", "mm_page_pcpu_drain"):
        e = event_frame(model, name)
        if e is None:
            continue
        pfn = col(e, "pfn", np.uint64)
        incma = cma_block_mask(model, (pfn >> pbo).astype(np.int64))
        printed = col(e, "migratetype", np.int16, -1)
        cand = np.flatnonzero(incma & (printed != MT_CMA) & (printed != MT_ISOLATE))
        checked += int(incma.sum())
        if not len(cand):
            continue
        seq = col(e, "seq", np.int64)[cand]
        st = model.block_type_at(pfn[cand], seq)
        known, _ = typed(model, st)
        skipped += int((~known).sum())
        keep = known & ~np.asarray(st.isolated, bool)
        idx = cand[keep]
        if not len(idx):
            continue
        bmt = np.asarray(st.mt, np.int16)[keep]
        blk = np.asarray(st.block)[keep]
        verb = "took" if name == "mm_page_alloc_zone_locked" else "drained"
        prep = "from" if name == "mm_page_alloc_zone_locked" else "to"
        cpu = col(e, "cpu", np.int32)[idx]
        expl = vjoin("cpu", s_int(cpu), f" {verb} pfn ", s_hex(pfn[idx]), f" of a CMA area {prep} the ",
                     s_mt(printed[idx]), " freelist (pageblock ", s_int(blk), " is ", s_mt(bmt),
                     "): CMA memory escaped to a non-CMA freelist, where unmovable allocations can take it")
        frames.append(make_findings(detector=INFO.id, severity=INFO.severity, seq=col(e, "seq", np.int64)[idx],
                                    ts=col(e, "ts", np.int64)[idx], cpu=cpu, pfn=pfn[idx], block=blk,
                                    event=name, printed_mt=printed[idx], block_mt=bmt,
                                    explanation=expl))

    x = event_frame(model, "mm_page_alloc_extfrag")
    if x is not None:
        pfn = col(x, "pfn", np.uint64)
        incma = cma_block_mask(model, (pfn >> pbo).astype(np.int64))
        fb = col(x, "fallback_migratetype", np.int16, -1)
        am = col(x, "alloc_migratetype", np.int16, -1)
        idx = np.flatnonzero(incma & (fb != MT_CMA))
        checked += int(incma.sum())
        if len(idx):
            seq = col(x, "seq", np.int64)[idx]
            st = model.block_type_at(pfn[idx], seq)
            cpu = col(x, "cpu", np.int32)[idx]
            co = col(x, "change_ownership", np.int64)[idx]
            expl = vjoin("cpu", s_int(cpu), " fell back for a ", s_mt(am[idx]), " request and found pfn ",
                         s_hex(pfn[idx]), " of a CMA area on the ", s_mt(fb[idx]), " freelist",
                         pc.if_else(pa.array(co != 0), vjoin(" and claimed its pageblock for ", s_mt(am[idx])), ""),
                         ": CMA memory was already on a non-CMA freelist (escaped earlier)")
            frames.append(make_findings(detector=INFO.id, severity=INFO.severity, seq=seq,
                                        ts=col(x, "ts", np.int64)[idx], cpu=cpu, pfn=pfn[idx],
                                        block=np.asarray(st.block), event="mm_page_alloc_extfrag",
                                        printed_mt=fb[idx], block_mt=np.asarray(st.mt, np.int16),
                                        explanation=expl))

    if not getattr(model, "partition_local", False):   # a pageblock partition: said once, of the whole history
        frames.append(_lost_blocks(model))
    out = concat_findings(frames)
    # 7b086755fb8c: the known cause on this kernel (pcp trylock failure frees CMA pages as MOVABLE)
    return with_stats(out, checked=checked, skipped_unknown=skipped,
                      known_cause_present=bool(getattr(kernel, "cma_wrong_buddy_list", False)))


def _lost_blocks(model):
    """Transitions CMA(-> ISOLATE)* -> other known type in the block history."""
    bl = getattr(model, "blocks", None)
    if bl is None or len(bl) == 0:
        return empty_findings()
    blk = col(bl, "block", np.int64)
    start = col(bl, "start_ts", np.int64)
    mt = col(bl, "migratetype", np.int16, -1)
    order = np.lexsort((start, blk))
    blk, start, mt = blk[order], start[order], mt[order]
    src = bl["source"].astype(str).to_numpy()[order]
    # last non-ISOLATE, known type before each interval, within the same block
    valid = (mt >= 0) & (mt != MT_ISOLATE)
    pos = np.arange(len(mt))
    last_valid = np.maximum.accumulate(np.where(valid, pos, -1))
    prev = np.concatenate(([-1], last_valid[:-1]))
    pv = np.maximum(prev, 0)
    same_block = (prev >= 0) & (blk[pv] == blk)
    lost = same_block & (mt[pv] == MT_CMA) & valid & (mt != MT_CMA)
    idx = np.flatnonzero(lost)
    if not len(idx):
        return empty_findings()
    if "start_seq" in bl.columns:
        seq = col(bl, "start_seq", np.int64, -1)[order][idx]
    else:
        seq = _seq_at_ts(model, start[idx])
    pbo = int(model.pageblock_order)
    expl = vjoin("pageblock ", s_int(blk[idx]), " was CMA and became ", s_mt(mt[idx]), " (source: ",
                 pa.array(src[idx].astype(object), pa.string()),
                 "): the block is lost from the CMA pool (cma_alloc can no longer rely on it)")
    return make_findings(detector=INFO.id, severity=INFO.severity, seq=seq, ts=start[idx], cpu=np.full(len(idx), -1),
                         pfn=(blk[idx].astype(np.uint64) << np.uint64(pbo)), block=blk[idx],
                         event="cma-block-lost", printed_mt=mt[idx], block_mt=mt[idx], explanation=expl)


def _seq_at_ts(model, ts: np.ndarray) -> np.ndarray:
    """Seq of the first model event at or after each timestamp (seq order is time order).

    Block history is kept in time; findings need a seq to sort and to look up.
    """
    seqs, tss = [], []
    for df in (getattr(model, "events", None) or {}).values():
        if df is not None and len(df):
            seqs.append(col(df, "seq", np.int64))
            tss.append(col(df, "ts", np.int64))
    if not seqs:
        return np.full(len(ts), -1, np.int64)
    s = np.concatenate(seqs)
    t = np.concatenate(tss)
    o = np.argsort(s, kind="stable")
    s, t = s[o], t[o]
    pos = np.searchsorted(t, ts, side="left")
    return np.where(pos < len(s), s[np.minimum(pos, len(s) - 1)], s[-1] if len(s) else -1)
