"""The pageblock model of a trace built one pageblock partition at a time (analyzer/partition.py).

Each partition's model tracks only its blocks, but a few steps of `build_model` look across
blocks; those get the whole trace's answer (`Facts`) instead of the partition's:

* the trace span (t0, end ts, end seq) and the block universe (zones, CMA areas, blocks
  outside the zones that records touch), which every block's boot row and history use;
* the lost-event windows' seqs (the first record after each loss);
* pcp refills (a refill burst is per CPU across blocks: refill_stream.py, during the spill);
* 6.1 drains inside an isolation window re-read the live type once *some* drain of the
  zone printed ISOLATE: each window's first such drain, over every block of its zone;
* zero-length isolation windows widened to their task's previous record (any block);
* the ground-truth kprobe: whether it wrote at all, its first write, isolate-bit probes;
* records dropped as corrupt.

The partition models are then merged: timelines are concatenated (blocks are disjoint,
each partition keeps the rows of its block range), the frames, agreement, consistency and
the pagetypeinfo warning are computed once on the merged timelines; counts in stats and
warnings are summed.  `survey` is the first look at a partition that gathers its share of
the facts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..capture import CaptureMeta
from ..kernels import ISOLATE, KernelBehavior
from ..readers.base import Trace
from . import Model, _blocks_frame, _isolation_frame, _LazyFrames, _universe, build_model, pagetypeinfo_warning
from . import infer, pfn_blocks, probe_bits
from .events import MODEL_EVENTS, Table, read_events
from .groundtruth import translate_tracepoints, unify
from .isolation import Windows, find_windows
from .pcp import _frame
from .timeline import Timeline, agreement

INF = np.iinfo(np.int64).max


@dataclass
class Facts:
    """What only the whole trace can tell a partition's `build_model` (see module doc)."""

    span: tuple[int, int, int]
    universe: tuple[np.ndarray, np.ndarray, list[str], np.ndarray]
    dropped: dict[str, int]
    lost_ts: np.ndarray
    lost_seq: np.ndarray
    probe_bits: bool
    probe_records: bool
    probe_first: tuple[int, int] | None
    exclusion: Windows
    first_live_drain: np.ndarray          # per window: seq of the first drain re-reading the type (-1)
    windows: Windows                      # the isolation windows (from shared records: alike in all)
    lo: int = -INF                        # this partition's blocks: [lo, hi)
    hi: int = INF
    refill: np.ndarray | None = None      # seqs of this partition's zone_locked refills

    def in_range(self, blocks: np.ndarray) -> np.ndarray:
        return (blocks >= self.lo) & (blocks < self.hi)


@dataclass
class Survey:
    """One partition's share of the Facts."""

    ends: dict[str, tuple[int, int, int, int]]        # table -> (first seq, its ts, last seq, its ts)
    dropped: dict[str, int]
    touched: dict[str, np.ndarray]
    lost_te: np.ndarray                               # the lost windows' ts_end
    lost_first: np.ndarray                            # per lost window: first seq with ts >= ts_end (INF)
    base_last: int                                    # last seq of the tracepoint tables (-1)
    probe_records: bool
    probe_bits: bool
    probe_first: tuple[int, int] | None
    windows: Windows
    excl: list[tuple[int, int]]                       # per zero-length window: (seq, ts) of the task's previous record
    drains: list[tuple[np.ndarray, np.ndarray, np.ndarray]]   # per window: (block, seq, printed ISOLATE) in it


def _read(trace: Trace, meta: CaptureMeta) -> tuple[dict[str, Table], dict[str, Table]]:
    """The model's event tables the way build_model reads them: (tracepoints, kprobes)."""
    ev = read_events(trace, meta.ground_truth_events, meta.pageblock_order)
    base = {k: t for k, t in ev.items() if not k.startswith("kprobe:")}
    translate_tracepoints(base, meta.numbering)
    kp = unify({k: t for k, t in ev.items() if k.startswith("kprobe:")}, meta.numbering, meta.pageblock_order)
    return base, kp


class _Pbo:
    def __init__(self, pbo: int):
        self.pbo = pbo


def survey(trace: Trace, meta: CaptureMeta, kernel: KernelBehavior) -> Survey:
    pbo = meta.pageblock_order
    base, kp = _read(trace, meta)
    ev = {**base, **kp}
    ends = {k: (int(t["seq"][0]), int(t["ts"][0]), int(t["seq"][-1]), int(t["ts"][-1]))
            for k, t in ev.items() if len(t)}
    dropped = {k: t.dropped for k, t in ev.items() if getattr(t, "dropped", 0)}
    lost = trace.lost
    te = lost.column("ts_end").to_numpy(zero_copy_only=False).astype(np.int64) if lost is not None \
        and lost.num_rows else np.zeros(0, np.int64)
    lost_first = np.full(len(te), INF, np.int64)
    base_last = -1
    for t in base.values():
        if len(t):
            base_last = max(base_last, int(t["seq"][-1]))
            j = np.searchsorted(t["ts"], te, side="left")
            ok = j < len(t)
            lost_first[ok] = np.minimum(lost_first[ok], t["seq"][np.minimum(j, len(t) - 1)][ok])
    kpl = list(kp.values())
    kr = infer.kprobe_rows(kpl, _Pbo(pbo))  # type: ignore[arg-type]
    first = None
    if len(kr.seq):
        k = int(np.argmin(kr.seq))
        first = int(kr.seq[k]), int(kr.ts[k])
    w = find_windows(base, pbo, kernel.cma_finish_has_errorno, kernel.cma_fail_pfn0)
    excl = []
    for i in np.flatnonzero(w.start_seq >= w.end_seq):
        p, s = int(w.pid[i]), int(w.start_seq[i])
        best_s, best_t = -1, 0
        for t in base.values():
            if not len(t) or not t.has("pid"):
                continue
            end = int(np.searchsorted(t["seq"], s, side="left"))
            m = np.flatnonzero(t["pid"][:end] == p)
            if len(m) and int(t["seq"][m[-1]]) > best_s:
                best_s, best_t = int(t["seq"][m[-1]]), int(t["ts"][m[-1]])
        excl.append((best_s, best_t))
    dr = base["mm_page_pcpu_drain"]
    drains = []
    for wi in range(len(w)):
        if not len(dr):
            drains.append((np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)))
            continue
        lo = np.searchsorted(dr["seq"], w.start_seq[wi], side="right")
        hi = np.searchsorted(dr["seq"], w.end_seq[wi], side="right")
        drains.append((dr["pfn"][lo:hi] >> pbo, dr["seq"][lo:hi], dr["migratetype"][lo:hi] == ISOLATE))
    return Survey(ends, dropped, pfn_blocks(base, pbo), te, lost_first, base_last,
                  bool(kpl and any(len(t) for t in kpl)), probe_bits(kp), first, w, excl, drains)


def combine(parts: list[Survey], meta: CaptureMeta, shared: set[str]) -> Facts:
    """The whole trace's Facts from every partition's Survey (`shared`: tables every partition holds whole)."""
    pbo = meta.pageblock_order
    firsts: dict[str, tuple[int, int]] = {}
    lasts: dict[str, tuple[int, int]] = {}
    for sv in parts:
        for k, (s0, t0, s1, t1) in sv.ends.items():
            if k not in firsts or s0 < firsts[k][0]:
                firsts[k] = (s0, t0)
            if k not in lasts or s1 > lasts[k][0]:
                lasts[k] = (s1, t1)
    t0 = min((v[1] for v in firsts.values()), default=0)
    t1 = max((v[1] for v in lasts.values()), default=0)
    s1 = max((v[0] for v in lasts.values()), default=-1) + 1
    dropped: dict[str, int] = {}
    for i, sv in enumerate(parts):
        for k, n in sv.dropped.items():
            if k not in shared or i == 0:
                dropped[k] = dropped.get(k, 0) + n
    touched: dict[str, np.ndarray] = {}
    for sv in parts:
        for k, b in sv.touched.items():
            touched[k] = np.union1d(touched[k], b) if k in touched else b
    universe = _universe(None, meta, pbo, touched)
    lf = np.min(np.stack([sv.lost_first for sv in parts]), axis=0) if parts else np.zeros(0, np.int64)
    base_last = max((sv.base_last for sv in parts), default=-1)
    if len(lf) and base_last >= 0:      # model._lost: the first record at or after each window's end
        lost_ts, lost_seq = parts[0].lost_te, np.where(lf == INF, base_last, lf) - 1
    else:
        lost_ts, lost_seq = np.zeros(0, np.int64), np.zeros(0, np.int64)
    probe_first = min((sv.probe_first for sv in parts if sv.probe_first is not None), default=None)
    w = parts[0].windows
    excl = _exclusion(w, [sv.excl for sv in parts])
    zone_of = infer.Context(pbo, universe[0], universe[1], universe[2], universe[3], True, t0, t1, s1,
                            None)
    first_live = _first_live_drains(w, [sv.drains for sv in parts], zone_of)
    return Facts((t0, t1, s1), universe, dropped, lost_ts, lost_seq,
                 any(sv.probe_bits for sv in parts), any(sv.probe_records for sv in parts), probe_first,
                 excl, first_live, w)


def _exclusion(w: Windows, per_part: list[list[tuple[int, int]]]) -> Windows:
    zero = np.flatnonzero(w.start_seq >= w.end_seq)
    if not len(zero):
        return w
    start_seq, start_ts = w.start_seq.copy(), w.start_ts.copy()
    for j, i in enumerate(zero):
        best_s, best_t = max((pp[j] for pp in per_part), key=lambda x: x[0])
        start_seq[i], start_ts[i] = best_s, (best_t if best_s >= 0 else 0)
    return Windows(start_seq, w.end_seq, start_ts, w.end_ts, w.start_pfn, w.end_pfn, w.kind, w.name,
                   w.restore_mt, w.outcome, w.pid)


def _first_live_drains(w: Windows, per_part: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
                       ctx: infer.Context) -> np.ndarray:
    """Per window, the seq from which infer.observations takes every drain of its zone (6.1).

    The single-trace loop marks, window by window, the drains of the window's zone from the
    first one already taken (printed ISOLATE, or marked by an earlier window of that zone).
    The first taken drain of window i is its first ISOLATE print, or an earlier window k's
    first (if inside window i), or window i's first drain of the zone (if inside window k)."""
    out = np.full(len(w), -1, np.int64)
    if not len(w):
        return out
    wz = ctx.zone_index(w.start_pfn >> ctx.pbo)
    if not any(pp[i][2].any() for pp in per_part for i in range(len(w))):
        return out
    for i in range(len(w)):
        z = wz[i]
        first_iso, first_any = INF, INF
        for pp in per_part:
            blk, seq, iso = pp[i]
            if not len(blk):
                continue
            inz = ctx.zone_index(blk) == z
            if inz.any():
                first_any = min(first_any, int(seq[inz].min()))
                if (inz & iso).any():
                    first_iso = min(first_iso, int(seq[inz & iso].min()))
        cands = [first_iso]
        for k in range(i):
            if wz[k] != z or out[k] < 0:
                continue
            if out[k] > w.start_seq[i]:
                if out[k] <= w.end_seq[i]:
                    cands.append(int(out[k]))
            elif first_any <= w.end_seq[k]:
                cands.append(first_any)
        f = min(cands)
        out[i] = f if f < INF else -1
    return out


# --------------------------------------------------------------------------- merge
def _cut(tl: Timeline, lo: int, hi: int) -> Timeline:
    m = (tl.block >= lo) & (tl.block < hi)
    return Timeline(tl.block[m], tl.start_seq[m], tl.start_ts[m], tl.mt[m], tl.guess[m], tl.conf[m], tl.src[m],
                    tl.blocks)


def _concat(parts: list[Timeline], universe: np.ndarray) -> Timeline:
    def cat(f: str) -> np.ndarray:
        return np.concatenate([getattr(p, f) for p in parts])
    return Timeline(cat("block"), cat("start_seq"), cat("start_ts"), cat("mt"), cat("guess"), cat("conf"),
                    cat("src"), np.unique(universe))


_NUM = re.compile(r"\d+")
# warnings a partition says about its own records: their counts add up (the rest are the
# whole trace's, said alike by every partition)
_COUNTED = ("observation fixed point not reached", "live-type observations contradict")


def merge_warnings(lists: list[list[str]]) -> list[str]:
    """One list in the single-trace order: the whole-trace warnings once, the counted ones summed."""
    def key(wn: str) -> str:
        return _NUM.sub("#", wn)

    order: list[tuple[str, int]] = []
    text: dict[tuple[str, int], list[str]] = {}
    for lst in lists:
        seen: dict[str, int] = {}
        prev = -1
        for wn in lst:
            k = key(wn)
            n = seen.get(k, 0)
            seen[k] = n + 1
            kk = (k, n)
            if kk not in text:
                order.insert(prev + 1, kk)
                text[kk] = []
            text[kk].append(wn)
            prev = order.index(kk)
    out = []
    for kk in order:
        ws = text[kk]
        if any(c in kk[0] for c in _COUNTED) and len(ws) > 1:
            nums = [[int(x) for x in _NUM.findall(wn)] for wn in ws]
            i = 1 if kk[0].startswith("observation fixed point") else 0
            total = sum(n[i] for n in nums)
            it = iter(_NUM.finditer(ws[0]))
            parts, pos = [], 0
            for j, m in enumerate(it):
                parts.append(ws[0][pos:m.start()])
                parts.append(str(total) if j == i else m.group())
                pos = m.end()
            parts.append(ws[0][pos:])
            out.append("".join(parts))
        else:
            out.append(ws[0])
    return out


@dataclass
class PartResult:
    """What is kept of one partition's model after its build (small: per block change)."""

    timeline: Timeline
    inference: Timeline
    stats: dict[str, Any]
    warnings: list[str]
    offlined: tuple[np.ndarray, np.ndarray, np.ndarray]
    ground_truth: bool
    live: tuple[int | None, int | None]
    windows: pd.DataFrame
    residency: pd.DataFrame | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def keep(m: Model, g: Facts, residency: bool = False) -> PartResult:
    assert m.timeline is not None and m.inference is not None
    return PartResult(_cut(m.timeline, g.lo, g.hi), _cut(m.inference, g.lo, g.hi), dict(m.stats), list(m.warnings),
                      m.offlined, m.ground_truth, (m.kprobe_live_seq, m.kprobe_live_ts), m.isolation,
                      m.residency if residency else None)


def merge(parts: list[PartResult], facts: Facts, meta: CaptureMeta, kernel: KernelBehavior,
          windows: Windows) -> Model:
    """The whole trace's Model from its partitions' (no per-event frames: `events` and
    `residency` stay with the partitions)."""
    pbo = meta.pageblock_order
    blocks, bzone, znames, cma = facts.universe
    t0, t1, s1 = facts.span
    cma_known = bool(meta.cma_areas) or not any("CMA areas unknown" in u for u in meta.unknowns)
    ctx = infer.Context(pbo, blocks, bzone, znames, cma, cma_known, t0, t1, s1, kernel)
    tl = _concat([p.timeline for p in parts], blocks)
    same = all(p.timeline is p.inference for p in parts)
    itl = tl if same else _concat([p.inference for p in parts], blocks)
    p0 = parts[0]
    stats: dict[str, Any] = {}
    for p in parts:
        for k, v in p.stats.items():
            stats[k] = stats.get(k, 0) + v
    ob = np.concatenate([p.offlined[0] for p in parts])
    os_ = np.concatenate([p.offlined[1] for p in parts])
    oe = np.concatenate([p.offlined[2] for p in parts])
    o = np.lexsort((ob, os_))
    offlined = (ob[o], os_[o], oe[o])
    if "offlined_blocks" in stats:
        stats["offlined_blocks"] = int(len(np.unique(ob)))
    live_seq, live_ts = p0.live
    agree = agreement(tl, itl, live_ts, t1) if p0.ground_truth and live_ts is not None else None
    warnings = merge_warnings([p.warnings for p in parts])
    blocks_df = _blocks_frame(tl, ctx, t1, s1)
    inf_df = blocks_df if itl is tl else _blocks_frame(itl, ctx, t1, s1)
    res = [p.residency for p in parts if p.residency is not None]
    residency = _merge_residency(res)
    model = Model(blocks=blocks_df, isolation=_isolation_frame(windows, ctx), residency=residency,
                  ground_truth=p0.ground_truth, agreement=agree, warnings=warnings, pageblock_order=pbo,
                  trace_end_ts=t1, events=_LazyFrames({}), trace_start_ts=t0, trace_end_seq=s1, kernel=kernel,
                  meta=meta, timeline=tl, inference=itl, inference_blocks=inf_df, kprobe_live_seq=live_seq,
                  kprobe_live_ts=live_ts, zone_names=znames, stats=stats, offlined=offlined, _ctx=ctx)
    if meta.pagetypeinfo_end is not None:
        pagetypeinfo_warning(model, warnings)
    return model


def _merge_residency(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return _frame(*(np.zeros(0, np.int64) for _ in range(13)))
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values("enter_seq", kind="stable", ignore_index=True)


def shared_tables(routed: set[str]) -> set[str]:
    """Model table names every partition holds whole (their dropped counts are said once)."""
    return {short for short, full in MODEL_EVENTS.items() if full not in routed}


def build(traces: Sequence[Trace], meta: CaptureMeta, kernel: KernelBehavior, routed: set[str],
          refills: list[np.ndarray], ranges: list[tuple[int, int]], residency: bool = False,
          facts: Facts | None = None) -> tuple[Model, Facts]:
    """Survey every partition, then build and merge their models (one partition in memory at a time)."""
    if facts is None:
        facts = combine([survey(t, meta, kernel) for t in traces], meta, shared_tables(routed))
    parts = []
    for i, t in enumerate(traces):
        m = build_model(t, meta, kernel, glob=part_facts(facts, i, len(traces), ranges[i], refills[i]))
        parts.append(keep(m, part_facts(facts, i, len(traces), ranges[i], None), residency))
        del m
    return merge(parts, facts, meta, kernel, facts.windows), facts


def part_facts(facts: Facts, i: int, k: int, rng: tuple[int, int], refill: np.ndarray | None) -> Facts:
    """Partition i of k's Facts: its block range (open at both ends of the trace) and refills."""
    return replace(facts, lo=-INF if i == 0 else rng[0], hi=INF if i == k - 1 else rng[1], refill=refill)
