"""Assertion rows from tracepoints (the inference) and from the ground-truth kprobe.

Confidence policy of the tracepoint-only inference (conservative, see timeline.py for
how hazards lower it):

* MOVABLE and CMA states are `known` when set by a traced fact (boot default with the
  CMA areas known, CMA reservation, extfrag claim, CMA restore, an observation of the
  live type): without the kprobe, the only untraced ways out of them are a highatomic
  reserve (hazard CAND at every order>0 __GFP_HIGH allocation in the block) and, on
  >= 6.10, the buddy-merge retype (hazard TOUCH at every free in the block's MAX_ORDER
  buddy group).  A MOVABLE restore after an alloc_contig window is only `inferred`
  (the window itself is partly guessed).
* UNMOVABLE / RECLAIMABLE / HIGHATOMIC states are never better than `inferred`: the
  compaction free scanner and free page reporting (__isolate_free_page), failed
  isolations and highatomic unreserve convert them without any tracepoint.
* ISOLATE from an inferred window is `inferred` (window edges are approximate).
* Without the CMA areas, the boot default MOVABLE is only `inferred`.

Observations (the kernel printing a *live* block type):
* >= 6.10: every mm_page_pcpu_drain and mm_page_alloc_zone_locked.
* 6.1: a drain printing MIGRATE_ISOLATE (cached types never are ISOLATE), and later
  drains in the same zone inside that isolation window (the zone is then known to have
  an isolated block, so free_pcppages_bulk() re-read the live type).
An observation becomes a SET row only where it disagrees with the current state (or,
with ground truth live, raises its confidence): agreeing ones add nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels import CMA, GFP_HIGH, ISOLATE, MOVABLE, KernelBehavior
from .events import KPROBE_TYPE_FIELDS, Table
from .isolation import Windows, active_count, exclusion_windows, window_blocks
from .timeline import CAND, INFERRED, KNOWN, LOST, SET, SRC, TOUCH, UNKNOWN, Rows, SortedRows, Timeline, resolve

MAX_PAGE_ORDER = 10   # MAX_ORDER-1 (6.1) / MAX_PAGE_ORDER (6.12) on 4K-page arm64 and x86_64 Debian


@dataclass
class Context:
    pbo: int
    blocks: np.ndarray        # sorted universe of blocks
    block_zone: np.ndarray    # zone index per universe block
    zone_names: list[str]
    cma_block: np.ndarray     # bool per universe block
    cma_known: bool
    t0_ts: int
    end_ts: int
    end_seq: int
    kernel: KernelBehavior
    # a pageblock partition (analyzer/partition.py) tracks a slice of the blocks but asks
    # zones of the whole universe: (all blocks, their zone index); None: `blocks` is all
    zones_of: tuple[np.ndarray, np.ndarray] | None = None

    def zone_index(self, block: np.ndarray) -> np.ndarray:
        blocks, bz = self.zones_of if self.zones_of is not None else (self.blocks, self.block_zone)
        n = len(blocks)
        if not n:                   # no tracked block at all: every block is outside the zones
            return np.full(len(block), -1, dtype=np.int64)
        if int(blocks[-1]) - int(blocks[0]) + 1 == n:   # dense universe: arithmetic
            pos = np.asarray(block, dtype=np.int64) - blocks[0]
            ok = (pos >= 0) & (pos < n)
            return np.where(ok, bz[np.where(ok, pos, 0)], -1)
        pos = np.clip(np.searchsorted(blocks, block), 0, n - 1)
        return np.where(blocks[pos] == block, bz[pos], -1)


def conf_by_type(mt: np.ndarray) -> np.ndarray:
    mt = np.asarray(mt)
    return np.where((mt == MOVABLE) | (mt == CMA), KNOWN, INFERRED).astype(np.int8)


def boot_rows(ctx: Context) -> Rows:
    mt = np.where(ctx.cma_block, CMA, MOVABLE).astype(np.int8)
    src = np.where(ctx.cma_block, SRC["cma-reserve"], SRC["boot"]).astype(np.int8)
    # Never `known` for MOVABLE: the allocator runs (and steals blocks) before tracing starts.
    conf = np.where(ctx.cma_block, KNOWN, INFERRED).astype(np.int8)
    return Rows.make(ctx.blocks, -1, ctx.t0_ts, SET, mt, src, conf)


def extfrag_rows(ext: Table, ctx: Context) -> Rows:
    """change_ownership=1: the block(s) at pfn now have alloc_migratetype.

    A >= pageblock fallback buddy retypes 2^(fallback_order - pageblock_order) aligned blocks.
    """
    if not len(ext):
        return Rows.make([], 0, 0, SET)
    sel = np.flatnonzero(ext["change_ownership"] == 1)
    pfn, fo = ext["pfn"][sel], ext["fallback_order"][sel]
    n = np.where(fo >= ctx.pbo, np.left_shift(1, np.maximum(fo - ctx.pbo, 0)), 1).astype(np.int64)
    head = np.where(fo >= ctx.pbo, (pfn >> fo) << fo, pfn) >> ctx.pbo
    rep = np.repeat(np.arange(len(sel)), n)
    off = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    mt = ext["alloc_migratetype"][sel][rep].astype(np.int8)
    return Rows.make(head[rep] + off, ext["seq"][sel][rep], ext["ts"][sel][rep], SET, mt,
                     SRC["extfrag"], conf_by_type(mt))


def window_rows(w: Windows, ctx: Context) -> Rows:
    if not len(w):
        return Rows.make([], 0, 0, SET)
    wi, blk = window_blocks(w, ctx.pbo)
    zero = w.end_seq[wi] <= w.start_seq[wi]
    iso = Rows.make(blk, w.start_seq[wi], w.start_ts[wi], SET, ISOLATE, SRC["isolation"], INFERRED, sub=1)
    rmt = w.restore_mt[wi]
    rconf = np.where(rmt == CMA, KNOWN, INFERRED).astype(np.int8)
    rst = Rows.make(blk, w.end_seq[wi], w.end_ts[wi], SET, rmt, SRC["restore"], rconf,
                    sub=np.where(zero, 2, 0))
    return Rows.concat([iso, rst])


def gfp_high(gfp: np.ndarray) -> np.ndarray:
    """__GFP_HIGH set?  Numeric flags (trace.dat) or the symbolic text of text traces."""
    if gfp.dtype.kind in "iu":
        return (gfp & GFP_HIGH) != 0
    out = np.zeros(len(gfp), dtype=bool)
    for i, v in enumerate(gfp):          # text traces only: a few thousand rows at most
        if v is None:
            continue
        toks = str(v).split("|")
        out[i] = any(t in ("__GFP_HIGH", "GFP_ATOMIC") or (t.startswith("0x") and int(t, 16) & GFP_HIGH)
                     for t in toks)
    return out


def hazard_rows(ev: dict[str, Table], ctx: Context) -> Rows:
    parts = []
    al = ev["mm_page_alloc"]
    if len(al) and al.has("gfp_flags"):
        sel = np.flatnonzero((al["order"] > 0) & gfp_high(al["gfp_flags"]) & (al["pfn"] >= 0))
        parts.append(Rows.make(al["pfn"][sel] >> ctx.pbo, al["seq"][sel], al["ts"][sel], CAND))
    fr = ev["mm_page_free"]
    grp = MAX_PAGE_ORDER - ctx.pbo
    if ctx.kernel.merge_retypes_buddy and len(fr) and grp >= 1:
        ok = fr["pfn"] >= 0
        b = fr["pfn"][ok] >> ctx.pbo
        s, t = fr["seq"][ok], fr["ts"][ok]
        for k in range(1, 1 << grp):        # every other block of the MAX_ORDER buddy group
            parts.append(Rows.make(b ^ k, s, t, TOUCH))
    r = Rows.concat(parts) if parts else Rows.make([], 0, 0, CAND)
    keep = np.isin(r.block, ctx.blocks)
    return r.take(np.flatnonzero(keep))


def thin_hazards(hazards: Rows, sets: Rows, obs: "Obs") -> Rows:
    """Drop hazard rows that cannot matter: between two consecutive points where a block's
    type may be set (a SET row or any observation of that block), only its first hazard of
    each kind lowers the confidence; the rest repeat it."""
    if len(hazards) < 2:
        return hazards
    hb0, hb1 = int(hazards.block.min()), int(hazards.block.max())
    if hb1 - hb0 < (1 << 24):     # blocks with hazards: a presence table instead of unique/isin
        present = np.zeros(hb1 - hb0 + 1, dtype=bool)
        present[hazards.block - hb0] = True

        def has_hazard(b: np.ndarray) -> np.ndarray:
            i = b - hb0
            ok = (i >= 0) & (i <= hb1 - hb0)
            return ok & present[np.where(ok, i, 0)]
    else:
        hb = np.unique(hazards.block)

        def has_hazard(b: np.ndarray) -> np.ndarray:
            return np.isin(b, hb)
    so = has_hazard(sets.block)          # only blocks that have hazards matter
    oo = has_hazard(obs.block)
    pb = np.concatenate([sets.block[so], obs.block[oo]])
    ps = np.concatenate([sets.seq[so], obs.seq[oo]])
    b0 = int(min(pb.min(initial=0), hazards.block.min()))
    s0 = int(min(ps.min(initial=0), hazards.seq.min()))
    s1 = int(max(ps.max(initial=0), hazards.seq.max())) + 1
    nb = int(max(pb.max(initial=0), hazards.block.max())) - b0 + 1
    if nb * (s1 - s0 + 1) * 4 >= (1 << 62):
        return hazards
    span = s1 - s0 + 1
    pk = ((pb - b0) * span + (ps - s0))[block_seq_order(pb, ps)]
    oh = block_seq_order(hazards.block, hazards.seq)     # (block, seq, index) order
    hk = (hazards.block[oh] - b0) * span + (hazards.seq[oh] - s0)
    # a hazard at the same seq as a SET sorts after it (sub order): count points with key <= hk
    gap = np.searchsorted(pk, hk, side="right")
    # gap is non-decreasing along oh and blocks are contiguous: (block, gap) segments are
    # runs; keep, per kind, the first row of each segment (the earliest by seq, then index)
    seg = np.cumsum(np.concatenate([[True], (gap[1:] != gap[:-1]) | (hazards.block[oh][1:] != hazards.block[oh][:-1])]))
    kind = hazards.kind[oh]
    kept = []
    for kd in np.unique(kind):
        i = np.flatnonzero(kind == kd)
        first = np.ones(len(i), dtype=bool)
        first[1:] = seg[i][1:] != seg[i][:-1]
        kept.append(oh[i[first]])
    return hazards.take(np.sort(np.concatenate(kept)))


def block_seq_order(block: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Permutation sorting by (block, seq), ties by index (= np.lexsort((seq, block))).

    Inputs are concatenations of seq-sorted runs: a stable sort by seq merges them, then a
    stable sort by block offset (a radix sort when it fits 16 bits) groups them.
    """
    if not len(block):
        return np.zeros(0, dtype=np.int64)
    b0, b1 = int(block.min()), int(block.max())
    if b1 - b0 >= (1 << 16):
        return np.lexsort((seq, block))
    o = np.argsort(seq, kind="stable")
    return o[np.argsort((block[o] - b0).astype(np.uint16), kind="stable")]


def lost_rows(lost_ts: np.ndarray, lost_seq: np.ndarray, ctx: Context) -> Rows:
    if not len(lost_seq):
        return Rows.make([], 0, 0, LOST)
    nb = len(ctx.blocks)
    return Rows.make(np.tile(ctx.blocks, len(lost_seq)), np.repeat(lost_seq, nb), np.repeat(lost_ts, nb), LOST)


def kprobe_rows(kp: list[Table], ctx: Context) -> Rows:
    parts = []
    for t in kp:
        if not len(t):
            continue
        sel = np.flatnonzero(t["mask"] == 7) if t.has("mask") else np.arange(len(t))
        field = next((f for f in KPROBE_TYPE_FIELDS if t.has(f)), None)
        if field is None or not t.has("pfn"):
            continue
        raw = t[field][sel]
        # a clear of the 6.17+ isolate bit whose preserved type the probe never saw (groundtruth.py):
        # type unknown here, resolved from the history before it by the model
        unknown = raw < 0
        mt = np.where(unknown, -1, raw & 7).astype(np.int8)
        parts.append(Rows.make(t["pfn"][sel] >> ctx.pbo, t["seq"][sel], t["ts"][sel], SET, mt,
                               SRC["kprobe"], np.where(unknown, UNKNOWN, KNOWN)))
    return Rows.concat(parts) if parts else Rows.make([], 0, 0, SET)


@dataclass
class Obs:
    block: np.ndarray
    seq: np.ndarray
    ts: np.ndarray
    mt: np.ndarray
    src: np.ndarray

    def take(self, idx) -> "Obs":
        return Obs(self.block[idx], self.seq[idx], self.ts[idx], self.mt[idx], self.src[idx])


def observations(ev: dict[str, Table], ctx: Context, w: Windows, stays=None, glob=None) -> Obs:
    """`glob` (a pageblock partition's analyzer/model/partitioned.Facts): what the zone-wide
    steps need from the whole trace (widened windows, each window's first live drain)."""
    dr, zl = ev["mm_page_pcpu_drain"], ev["mm_page_alloc_zone_locked"]
    parts: list[Obs] = []
    if not ctx.kernel.live_drain and stays is not None and len(stays.pfn):
        # 6.1: a drained page that entered the pcp list by a free prints the type its block
        # had at free time (free_unref_page_prepare cached get_pfnblock_migratetype) -
        # unless the zone had an isolated block when it was drained (then: live type).
        sel = (stays.enter_kind == 0) & (stays.leave_kind == 1) & (stays.leave_printed_mt >= 0) \
            & (stays.leave_printed_mt != ISOLATE)
        idx = np.flatnonzero(sel)
        blk = stays.pfn[idx] >> ctx.pbo
        if len(w) and len(idx):
            # zero-length windows (no event bracketed the isolation) are widened first: a drain
            # inside them re-read the live type, it is no free-time print
            w = exclusion_windows(w, ev) if glob is None else glob.exclusion
            wz = ctx.zone_index(w.start_pfn >> ctx.pbo)
            dz = ctx.zone_index(blk)
            busy = np.zeros(len(idx), dtype=bool)
            for z in np.unique(wz):
                m = dz == z
                busy[m] = active_count(w, wz == z, stays.leave_seq[idx][m]) > 0
            idx, blk = idx[~busy], blk[~busy]
        parts.append(Obs(blk, stays.enter_seq[idx], stays.enter_ts[idx], stays.leave_printed_mt[idx],
                         np.full(len(idx), SRC["free-observed"], np.int8)))
    if ctx.kernel.live_drain:
        if len(dr):
            parts.append(Obs(dr["pfn"] >> ctx.pbo, dr["seq"], dr["ts"], dr["migratetype"].astype(np.int8),
                             np.full(len(dr), SRC["drain-observed"], np.int8)))
        if ctx.kernel.zone_locked_prints == "block" and len(zl):
            parts.append(Obs(zl["pfn"] >> ctx.pbo, zl["seq"], zl["ts"], zl["migratetype"].astype(np.int8),
                             np.full(len(zl), SRC["zone-locked-observed"], np.int8)))
    elif len(dr) and ctx.kernel.drain_rereads_when_isolated:
        # (a kernel that does not re-read the block type while isolated prints no live type at all)
        mt = dr["migratetype"]
        blk = dr["pfn"] >> ctx.pbo
        take = mt == ISOLATE
        if glob is not None:      # the first drain of each window's zone that re-read the type
            seq = dr["seq"]
            dz = ctx.zone_index(blk)
            for i in range(len(w)):
                f0 = int(glob.first_live_drain[i])
                if f0 < 0:
                    continue
                lo = np.searchsorted(seq, f0, side="left")
                hi = np.searchsorted(seq, w.end_seq[i], side="right")
                wz = ctx.zone_index(np.array([w.start_pfn[i] >> ctx.pbo]))[0]
                take[lo:hi] |= dz[lo:hi] == wz
        elif len(w) and take.any():
            dz = ctx.zone_index(blk)
            seq = dr["seq"]
            for i in range(len(w)):
                lo = np.searchsorted(seq, w.start_seq[i], side="right")
                hi = np.searchsorted(seq, w.end_seq[i], side="right")
                wz = ctx.zone_index(np.array([w.start_pfn[i] >> ctx.pbo]))[0]
                f = np.flatnonzero(take[lo:hi] & (dz[lo:hi] == wz))
                if len(f):
                    seg = slice(lo + f[0], hi)
                    take[seg] |= dz[seg] == wz
        idx = np.flatnonzero(take)
        parts.append(Obs(blk[idx], dr["seq"][idx], dr["ts"][idx], mt[idx].astype(np.int8),
                         np.full(len(idx), SRC["drain-observed"], np.int8)))
    if not parts:
        z = np.zeros(0, np.int64)
        return Obs(z, z, z, np.zeros(0, np.int8), np.zeros(0, np.int8))
    o = Obs(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("block", "seq", "ts", "mt", "src")))
    keep = np.flatnonzero(np.isin(o.block, ctx.blocks) & (o.mt >= 0))
    return o.take(keep)


MAX_OBSERVATION_PASSES = 12


def resolve_with_observations(rows: Rows, obs: Obs, obs_conf: np.ndarray, upgrade: np.ndarray,
                              ctx: Context, max_iter: int = MAX_OBSERVATION_PASSES,
                              initial: np.ndarray | None = None,
                              warnings: list[str] | None = None) -> tuple[Timeline, np.ndarray]:
    """Add observations that disagree with (or, where `upgrade`, are surer than) the state.

    `upgrade` marks observations made while ground truth is live: those only refine states
    the truth does not know (they never override a kprobe write).

    Accepting one observation can make later ones disagree, so iterate to a fixed point;
    if `max_iter` passes do not reach it, say so in `warnings` (the later observations
    were not all considered) instead of stopping silently.
    """
    accepted = np.zeros(len(obs.block), dtype=bool) if initial is None else initial.copy()

    base = SortedRows(rows)

    def with_obs() -> Rows:
        a = np.flatnonzero(accepted)
        orow = Rows.make(obs.block[a], obs.seq[a], obs.ts[a], SET, obs.mt[a], obs.src[a], obs_conf[a], sub=3)
        return base.with_extra(orow)
    tl = resolve(with_obs(), ctx.blocks, presorted=True)
    check = np.arange(len(obs.block))          # which observations to (re)check
    ob0 = int(obs.block.min()) if len(obs.block) else 0
    ob_span = int(obs.block.max()) - ob0 + 1 if len(obs.block) else 0
    for _ in range(max_iter):
        if not len(check):
            break
        i = tl.at(obs.block[check], obs.seq[check])
        ii = np.maximum(i, 0)
        up = upgrade[check]
        differs = obs.mt[check] != tl.mt[ii]
        # with ground truth live (`upgrade`), an observation may only fill in what the truth
        # does not know yet; it never overrides a known (kprobe) state
        want = (i >= 0) & np.where(up, (tl.conf[ii] < KNOWN) & (differs | (tl.conf[ii] < obs_conf[check])), differs)
        new = check[want & ~accepted[check]]
        if not len(new):
            break
        # of a run of same-type observations in a block only the first can matter: once it is
        # in, the rest agree unless some row lies between them (the next pass re-checks those)
        o = new[np.lexsort((obs.seq[new], obs.block[new]))]
        keep = np.ones(len(o), dtype=bool)
        keep[1:] = (obs.block[o][1:] != obs.block[o][:-1]) | (obs.mt[o][1:] != obs.mt[o][:-1])
        new = o[keep]
        accepted[new] = True
        tl = resolve(with_obs(), ctx.blocks, presorted=True)
        # only blocks that just gained a SET can have observations that now disagree, and
        # only from that SET on (a row at seq s changes nothing at or before s; an earlier
        # observation of the block either was not wanted or was dropped as the repeat of an
        # earlier accepted one, which puts it after that block's first new SET)
        if ob_span <= (1 << 24):
            first = np.full(ob_span, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(first, obs.block[new] - ob0, obs.seq[new])
            check = np.flatnonzero((obs.seq >= first[obs.block - ob0]) & ~accepted)
        else:
            check = np.flatnonzero(np.isin(obs.block, np.unique(obs.block[new])) & ~accepted)
    else:
        if len(check) and warnings is not None:
            warnings.append(f"observation fixed point not reached after {max_iter} passes: "
                            f"{len(check)} observation(s) left unchecked (block types after them may be stale)")
    return tl, accepted


def backfill(rows: Rows, obs: Obs, accepted: np.ndarray, tl: Timeline, ctx: Context) -> tuple[Rows, np.ndarray]:
    """Rows that carry a block's first revealed type back to the start of the trace.

    If the first observation that contradicted a block's state found it still in its boot
    state (nothing traced ever changed it), the block most likely had that type before
    tracing started (early-boot steals happen before trace_event= is enabled).  Source
    "backfill", never better than `inferred`.
    """
    a = np.flatnonzero(accepted)
    if not len(a):
        return Rows.make([], 0, 0, SET), a
    o = a[np.lexsort((obs.seq[a], obs.block[a]))]
    first = np.ones(len(o), dtype=bool)
    first[1:] = obs.block[o][1:] != obs.block[o][:-1]
    f = o[first]
    i = tl.at(obs.block[f], obs.seq[f])
    ok = i >= 0
    ii = np.maximum(i, 0)
    is_first_iv = np.ones(len(f), dtype=bool)
    is_first_iv &= (ii == 0) | (tl.block[np.maximum(ii - 1, 0)] != tl.block[ii])
    # ...and no earlier observation of the block (an agreeing one would date the change later)
    o_all = block_seq_order(obs.block, obs.seq)       # = np.lexsort((obs.seq, obs.block))
    fb = np.ones(len(o_all), dtype=bool)
    fb[1:] = obs.block[o_all][1:] != obs.block[o_all][:-1]
    first_seq = dict(zip(obs.block[o_all][fb].tolist(), obs.seq[o_all][fb].tolist()))
    earliest = np.array([first_seq[b] == s for b, s in zip(obs.block[f].tolist(), obs.seq[f].tolist())], bool)
    sel = f[ok & (tl.src[ii] == SRC["boot"]) & is_first_iv & earliest]
    return Rows.make(obs.block[sel], -1, ctx.t0_ts, SET, obs.mt[sel], SRC["backfill"], INFERRED, sub=1), sel


def before(rows: Rows, seq: int) -> Rows:
    return rows.take(np.flatnonzero(rows.seq < seq))


__all__ = ["Context", "boot_rows", "extfrag_rows", "window_rows", "hazard_rows", "lost_rows",
           "kprobe_rows", "observations", "resolve_with_observations", "conf_by_type", "before",
           "UNKNOWN"]
