"""Per-page pcp residency: when each page sat on a per-cpu list, and with which type.

Entering a pcp list:
* free: `mm_page_free` of a pcp-allowed order (<= PAGE_ALLOC_COSTLY_ORDER, or the THP
  order = pageblock order) whose block is not isolated at that moment (isolated blocks
  bypass the pcp lists).  The cached type is the block type at free time (6.1's
  `free_unref_page_prepare()` caches `get_pfnblock_migratetype()`; >= 6.10 has no cache
  and the value is the pcp list the page went to).  `mm_page_free_batched` duplicates
  an `mm_page_free` of the same page and is not counted again.
* refill: `mm_page_alloc_zone_locked`.  Its `percpu_refill` flag is computed from order
  and type only (include/trace/events/kmem.h, class mm_page) and cannot tell rmqueue_bulk() from a direct rmqueue_buddy()
  allocation, so we use the shape of the stream instead: rmqueue_bulk() emits a burst of
  >= 2 zone_locked events of one order on one CPU with nothing but extfrag/kprobe
  events of that CPU in between; a single zone_locked event immediately followed on its
  CPU by an `mm_page_alloc` of the same pfn is a direct allocation, not a pcp stay.
  Cached type = the zone_locked migratetype (6.1 `set_pcppage_migratetype()`).
Leaving: `mm_page_alloc` (same pfn and order) or `mm_page_pcpu_drain`.  A page whose next
event is another entry gets leave_kind "untraced": either it never was on a pcp list
(mm_page_free looks the same for frees that go straight to the buddy: boot-time
__free_pages_core, freed init memory, pcp lock contention, non-pcp hugetlb frees) or it
left without an event (alloc_pages_bulk() hands pages out without mm_page_alloc).  On
the 6.1 corpus capture that is 1% of the stays; every drain closes a stay.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ..cext import load as load_cext
from ..capture import PFN_LIMIT
from ..kernels import ISOLATE, MIGRATE_PCPTYPES, MOVABLE, PAGE_ALLOC_COSTLY_ORDER, KernelBehavior
from .events import Table

_cpair = load_cext("analyzer.model._pair")  # compiled successor walk (analyzer/model/_pair.c); optional, see analyzer/cext.py

ENTER_KINDS = ("free", "refill")
# pfns at or above PFN_LIMIT (or negative: -1UL "no page") never enter the pairing: they
# would only make the dense per-pfn tables huge.
LEAVE_KINDS = ("alloc", "drain", "open", "untraced")


def _any_between(tables: list[Table], cpu: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether some record of the given tables ran on `cpu` with a < seq < b.

    Per table: the rows with a < seq < b are one slice [lo, hi) of the seq-sorted table;
    a per-CPU running count says whether the slice holds a row of that CPU.
    """
    hit = np.zeros(len(a), dtype=bool)
    for t in tables:
        if not len(t) or not len(a):
            continue
        s, tc = t["seq"], t["cpu"]
        lo = np.searchsorted(s, a, side="right")
        hi = np.searchsorted(s, b, side="left")
        q = np.flatnonzero(hi > lo)
        if not len(q):
            continue
        for c in np.unique(cpu[q]):
            m = q[cpu[q] == c]
            cc = np.zeros(len(s) + 1, dtype=np.int64)
            np.cumsum(tc == c, out=cc[1:])
            hit[m] |= cc[hi[m]] > cc[lo[m]]
    return hit


def refill_mask(ev: dict[str, Table]) -> np.ndarray:
    """Which zone_locked rows put their page on a pcp list (see module doc)."""
    zl = ev["mm_page_alloc_zone_locked"]
    n = len(zl)
    if n == 0:
        return np.zeros(0, dtype=bool)
    cpu, seq, order, pfn = zl["cpu"], zl["seq"], zl["order"], zl["pfn"]
    breakers = [ev["mm_page_alloc"], ev["mm_page_free"], ev["mm_page_pcpu_drain"], ev["mm_page_free_batched"]]
    # previous zone_locked row of the same CPU (rows are seq-sorted: a stable sort by cpu)
    c16 = cpu.astype(np.uint16) if 0 <= int(cpu.min()) and int(cpu.max()) < (1 << 16) else cpu
    o = np.argsort(c16, kind="stable")
    prev = np.full(n, -1, dtype=np.int64)
    same = cpu[o][1:] == cpu[o][:-1]
    prev[o[1:][same]] = o[:-1][same]
    has_prev = prev >= 0
    pp = np.maximum(prev, 0)
    joined = has_prev & (order[pp] == order)
    # adjacent records (seq + 1) have nothing in between; only the others need a look-up
    look = np.flatnonzero(joined & (seq - seq[pp] > 1))
    joined[look] = ~_any_between(breakers, cpu[look], seq[pp][look], seq[look])
    # burst id: a new burst starts where a row does not join its predecessor (in per-CPU order)
    start = ~joined[o]
    bid_sorted = np.cumsum(start) - 1
    bid = np.empty(n, dtype=np.int64)
    bid[o] = bid_sorted
    size = np.bincount(bid)[bid]
    refill = size >= 2
    single = np.flatnonzero(~refill)
    if len(single):
        al = ev["mm_page_alloc"]
        direct = np.zeros(len(single), dtype=bool)
        if len(al):
            acpu, aseq, apfn = al["cpu"], al["seq"], al["pfn"]
            for c in np.unique(cpu[single]):       # not bincount: a corrupt cpu number would size it
                m = single[cpu[single] == c]
                sel = np.flatnonzero(acpu == c)
                if not len(sel):
                    continue
                j = np.searchsorted(aseq[sel], seq[m], side="right")
                okj = j < len(sel)
                jj = sel[np.minimum(j, len(sel) - 1)]
                hit = okj & (apfn[jj] == pfn[m])
                # nothing else of this CPU in between (adjacent records need no look-up)
                lk = np.flatnonzero(hit & (aseq[jj] - seq[m] > 1))
                hit[lk] = ~_any_between(breakers, cpu[m][lk], seq[m][lk], aseq[jj][lk])
                direct[np.searchsorted(single, m)] = hit
        refill[single] = ~direct
    return refill


@dataclass
class Stays:
    """Paired pcp stays (numpy, sorted by enter_seq), independent of the block model."""

    pfn: np.ndarray
    order: np.ndarray
    cpu: np.ndarray
    enter_seq: np.ndarray
    enter_ts: np.ndarray
    enter_kind: np.ndarray    # 0 free, 1 refill
    zl_mt: np.ndarray         # refill: zone_locked migratetype; free: -1
    leave_seq: np.ndarray     # -1 open
    leave_ts: np.ndarray
    leave_kind: np.ndarray    # 0 alloc, 1 drain, 2 open, 3 untraced
    leave_printed_mt: np.ndarray


def valid_pfn(pfn: np.ndarray) -> np.ndarray:
    """Rows whose pfn can be a real page frame (0 <= pfn < PFN_LIMIT)."""
    return (pfn >= 0) & (pfn < PFN_LIMIT)


def _gather(mask: np.ndarray):
    """Row selection that skips the copy when every row is kept."""
    if mask.all():
        return lambda a: a
    idx = np.flatnonzero(mask)
    return lambda a: a[idx]


def pair(ev: dict[str, Table], kernel: KernelBehavior, pbo: int, refill: np.ndarray | None = None) -> Stays:
    """Match pcp entries (free / refill) with the next event of the same pfn.

    `refill`: the seqs of the zone_locked records that are refills, when the caller decided
    them over the whole trace (a pageblock partition sees only its blocks' records, and a
    refill burst is per CPU across blocks); None: `refill_mask` of these records.

    Rows are laid out as [frees | refills | allocs | drains], each block seq-sorted, so a
    row's kind follows from its index and entries are exactly the first n_ent rows.
    """
    fr, zl = ev["mm_page_free"], ev["mm_page_alloc_zone_locked"]
    al, dr = ev["mm_page_alloc"], ev["mm_page_pcpu_drain"]
    cols: dict[str, list[np.ndarray]] = {"pfn": [], "seq": [], "ts": [], "order": []}
    ecpu: list[np.ndarray] = []
    if len(fr):
        o = fr["order"]
        g = _gather(valid_pfn(fr["pfn"]) & ((o <= PAGE_ALLOC_COSTLY_ORDER) | ((o == pbo) & kernel.pcp_thp_order)))
    else:
        g = _gather(np.zeros(0, dtype=bool))
    for c in cols:
        cols[c].append(g(fr[c]) if len(fr) else np.zeros(0, np.int64))
    ecpu.append(g(fr["cpu"]) if len(fr) else np.zeros(0, np.int64))
    n_f = len(cols["pfn"][0])
    if len(zl):
        rm = refill_mask(ev) if refill is None else np.isin(zl["seq"], refill)
        g = _gather(rm & valid_pfn(zl["pfn"]))
        for c in cols:
            cols[c].append(g(zl[c]))
        ecpu.append(g(zl["cpu"]))
        zl_mt = g(zl["migratetype"]).astype(np.int8)
    else:
        zl_mt = np.zeros(0, np.int8)
    n_r = len(zl_mt)
    if len(al):
        g = _gather(valid_pfn(al["pfn"]))
        for c in cols:
            cols[c].append(g(al[c]))
    n_a = sum(len(x) for x in cols["pfn"]) - n_f - n_r
    if len(dr):
        g = _gather(valid_pfn(dr["pfn"]))
        dr_mt = g(dr["migratetype"]).astype(np.int8)
        for c in cols:
            cols[c].append(g(dr[c]))
    else:
        dr_mt = np.zeros(0, np.int8)
    pfn, seq, ts, order = (np.concatenate(cols[c]) for c in ("pfn", "seq", "ts", "order"))
    n, n_ent, off_d = len(pfn), n_f + n_r, n_f + n_r + n_a
    if n_ent == 0:
        z = np.zeros(0, np.int64)
        return Stays(z, z, z, z, z, z.astype(np.int8), z.astype(np.int8), z, z, z.astype(np.int8), z.astype(np.int8))
    e, x = _successors(pfn, seq, n_ent, np.array([0, n_f, n_ent, off_d, n], dtype=np.int64))
    has = x >= 0
    xx = np.maximum(x, 0)
    xkind = np.where(xx < n_ent, -1, np.where(xx < off_d, 0, 1))   # -1 entry, 0 alloc, 1 drain
    is_exit = has & (xkind >= 0) & (order[xx] == order[e])
    leave_kind = np.where(is_exit, xkind, np.where(has, 3, 2)).astype(np.int8)
    leave_seq = np.where(has, seq[xx], -1)
    leave_ts = np.where(has, ts[xx], -1)
    dmt = dr_mt[np.clip(xx - off_d, 0, max(len(dr_mt) - 1, 0))] if len(dr_mt) else np.zeros(len(xx), np.int8)
    leave_pmt = np.where(is_exit & (xkind == 1), dmt, -1).astype(np.int8)
    ekind = (e >= n_f).astype(np.int8)
    emt = np.where(ekind == 1, zl_mt[np.clip(e - n_f, 0, max(n_r - 1, 0))] if n_r else -1, -1).astype(np.int8)
    cpu_e = np.concatenate(ecpu)[e]
    return Stays(pfn[e], order[e], cpu_e, seq[e], ts[e], ekind, emt, leave_seq, leave_ts, leave_kind, leave_pmt)


def _successors(pfn: np.ndarray, seq: np.ndarray, n_ent: int, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(e, x): entry rows in stable seq order, and each one's next row on its pfn (-1 none).

    `bounds` delimits the seq-sorted runs.  The C walk (when built) and the numpy sort give
    identical results; numpy is the reference.
    """
    if _cpair is not None:
        res = _cpair.succ(np.ascontiguousarray(pfn, dtype=np.int64), np.ascontiguousarray(seq, dtype=np.int64),
                          bounds, n_ent)
        if res is not None:
            return res
    return _successors_numpy(pfn, seq, n_ent)


def _successors_numpy(pfn: np.ndarray, seq: np.ndarray, n_ent: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(pfn)
    o = pfn_seq_order(pfn, seq)
    ent_s = np.flatnonzero(o < n_ent)                  # positions (in sorted order) of entries
    nx_s = np.minimum(ent_s + 1, n - 1)
    ps = pfn[o]
    same_next = np.zeros(n, dtype=bool)                # sorted row and the next one: same pfn
    same_next[:-1] = ps[1:] == ps[:-1]
    same = same_next[ent_s]
    succ = np.full(n_ent, -1, dtype=np.int64)
    succ[o[ent_s]] = np.where(same, o[nx_s], -1)
    e = np.argsort(seq[:n_ent], kind="stable")         # frees and refills: a merge of two sorted runs
    return e, succ[e]


def pfn_seq_order(pfn: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Permutation sorting by (pfn, seq).

    The input is a concatenation of seq-sorted runs, so a stable sort by seq is a cheap
    merge (timsort); then an LSD radix sort on pfn in 16-bit digits (numpy's stable sort
    of uint16 is a counting sort) keeps seq order within each pfn.
    """
    o = np.argsort(seq, kind="stable")
    k = pfn[o] - pfn.min(initial=0)
    span = int(k.max(initial=0))
    if span >= 1 << 48:
        return np.lexsort((seq, pfn))
    shift = 0
    perm = None
    while True:            # digits from k itself; only the 2-byte digit is gathered by perm
        digit = ((k >> shift) & 0xFFFF).astype(np.uint16)
        perm = np.argsort(digit, kind="stable") if perm is None else perm[np.argsort(digit[perm], kind="stable")]
        shift += 16
        if span >> shift == 0:
            break
    return o[perm]


def residency(st: Stays, block_mt_at) -> pd.DataFrame:
    """One row per pcp stay.  `block_mt_at(pfn, seq) -> mt` is the model's lookup (-1 unknown).

    Frees into a block that is isolated at that moment bypass the pcp lists: dropped.
    """
    bmt = np.asarray(block_mt_at(st.pfn, st.enter_seq)).astype(np.int8)
    keep = ~((st.enter_kind == 0) & (bmt == ISOLATE))
    k = np.flatnonzero(keep)
    cached = np.where(st.enter_kind == 0, bmt, st.zl_mt).astype(np.int8)
    lst = np.where((cached >= MIGRATE_PCPTYPES) & (cached != ISOLATE), MOVABLE, cached).astype(np.int8)
    return _frame(st.pfn[k], st.order[k], st.cpu[k], st.enter_seq[k], st.enter_ts[k], st.enter_kind[k],
                  cached[k], bmt[k], st.leave_seq[k], st.leave_ts[k], st.leave_kind[k],
                  st.leave_printed_mt[k], lst[k])


def _frame(pfn, order, cpu, enter_seq, enter_ts, enter_kind, cached, bmt, leave_seq, leave_ts,
           leave_kind, leave_pmt, pcp_list) -> pd.DataFrame:
    lk = pa.array(np.asarray(leave_kind, dtype=np.int64))
    closed = np.asarray(leave_seq) >= 0
    t = pa.table({
        "pfn": pa.array(np.asarray(pfn).astype(np.uint64)),
        "order": pa.array(np.asarray(order).astype(np.int16)),
        "cpu": pa.array(np.asarray(cpu).astype(np.int32)),
        "enter_seq": pa.array(np.asarray(enter_seq, dtype=np.int64)),
        "enter_ts": pa.array(np.asarray(enter_ts, dtype=np.int64)),
        "enter_kind": pa.array(list(ENTER_KINDS)).take(pa.array(np.asarray(enter_kind, dtype=np.int64))),
        "cached_mt": pa.array(np.asarray(cached).astype(np.int8)),
        "block_mt_enter": pa.array(np.asarray(bmt).astype(np.int8)),
        "leave_seq": pa.array(np.asarray(leave_seq, dtype=np.int64), mask=~closed),
        "leave_ts": pa.array(np.asarray(leave_ts, dtype=np.int64), mask=~closed),
        "leave_kind": pa.array(list(LEAVE_KINDS)).take(lk),
        "leave_printed_mt": pa.array(np.asarray(leave_pmt).astype(np.int8)),
        "pcp_list_mt": pa.array(np.asarray(pcp_list).astype(np.int8)),
    })
    return t.to_pandas(types_mapper=pd.ArrowDtype)
