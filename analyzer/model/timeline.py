"""Per-pageblock state history from "assertion rows", resolved in one vectorised pass.

Every source of knowledge about a pageblock becomes a row (block, seq, sub, kind, mt,
source, confidence):

* SET rows fix the type (boot default, CMA reservation, kprobe write, extfrag claim,
  isolation, restore, an observation).
* Hazard rows say an *untraced* retype may have happened here; they never change the
  type, only lower the confidence of the type in force:
  CAND  - a possible highatomic reserve (the block could now be HIGHATOMIC): -> unknown
  TOUCH - a possible buddy-merge retype (>= 6.10): -> at most inferred
  LOST  - the trace lost events here: -> at most inferred
  Hazards only affect mergeable types (UNMOVABLE/MOVABLE/RECLAIMABLE): CMA and ISOLATE
  blocks cannot be converted by those mechanisms.

Rows are sorted once by (block, seq, sub); the type in force is the last SET's
(forward fill with maximum.accumulate), hazards since that SET come from cumulative
sums.  A row at seq s applies to records with seq > s (contract section 2b).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cext import load as load_cext

_cpair = load_cext("analyzer.model._pair")  # compiled per-block interval search; see analyzer/cext.py

SET, CAND, TOUCH, LOST = 0, 1, 2, 3
KNOWN, INFERRED, UNKNOWN = 2, 1, 0
CONF_NAMES = {KNOWN: "known", INFERRED: "inferred", UNKNOWN: "unknown"}

SOURCES = ("boot", "cma-reserve", "kprobe", "extfrag", "isolation", "restore",
           "drain-observed", "zone-locked-observed", "free-observed", "backfill")
SRC = {name: i for i, name in enumerate(SOURCES)}


@dataclass
class Rows:
    """Columnar assertion rows (all arrays the same length)."""

    block: np.ndarray   # int64
    seq: np.ndarray     # int64
    sub: np.ndarray     # int8  tie-break at equal seq
    ts: np.ndarray      # int64
    kind: np.ndarray    # int8
    mt: np.ndarray      # int8 (SET rows)
    src: np.ndarray     # int8 (SET rows)
    conf: np.ndarray    # int8 (SET rows)

    @staticmethod
    def make(block, seq, ts, kind, mt=-1, src=0, conf=KNOWN, sub=0) -> "Rows":
        block = np.asarray(block, dtype=np.int64)
        n = len(block)

        def col(v, dt):
            a = np.asarray(v, dtype=dt)
            return np.full(n, a, dtype=dt) if a.ndim == 0 else a
        return Rows(block, col(seq, np.int64), col(sub, np.int8), col(ts, np.int64), col(kind, np.int8),
                    col(mt, np.int8), col(src, np.int8), col(conf, np.int8))

    @staticmethod
    def concat(parts: list["Rows"]) -> "Rows":
        parts = [p for p in parts if len(p.block)] or parts[:1]
        f = Rows.__dataclass_fields__
        return Rows(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in f})

    def take(self, idx) -> "Rows":
        return Rows(**{k: getattr(self, k)[idx] for k in Rows.__dataclass_fields__})

    def __len__(self) -> int:
        return len(self.block)


MERGEABLE_MAX = 2


def ffill_lookup(kb: np.ndarray, kt: np.ndarray, qb: np.ndarray, qt: np.ndarray, strict: bool) -> np.ndarray:
    """For each query (qb, qt): index of the last key row with kb == qb and kt < qt (strict) or
    kt <= qt, in the key arrays (which must be sorted by (kb, kt)); -1 if none.

    One merge-sort of keys and queries plus a forward fill: no overflow-prone combined keys.
    """
    n, m = len(kb), len(qb)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    if n == 0:
        return np.full(m, -1, dtype=np.int64)
    ab = np.concatenate([kb, qb])
    at = np.concatenate([kt, qt])
    # at equal time, strict puts queries before keys, non-strict after
    tie = np.concatenate([np.full(n, 1 if strict else 0, np.int8), np.full(m, 0 if strict else 1, np.int8)])
    o = np.lexsort((tie, at, ab))
    isk = o < n
    fill = np.maximum.accumulate(np.where(isk, o, -1))
    qpos = np.flatnonzero(~isk)
    res = np.empty(m, dtype=np.int64)
    cand = fill[qpos]
    okc = cand >= 0
    good = okc & (kb[np.maximum(cand, 0)] == ab[o[qpos]])
    res[o[qpos] - n] = np.where(good, cand, -1)
    return res   # types 0..2 can be converted by untraced mechanisms


@dataclass
class Timeline:
    """Resolved intervals, sorted by (block, start_seq); lookups by (block, seq) or (block, ts)."""

    block: np.ndarray
    start_seq: np.ndarray
    start_ts: np.ndarray
    mt: np.ndarray        # -1 when confidence is unknown
    guess: np.ndarray     # last SET type even when unknown
    conf: np.ndarray
    src: np.ndarray
    blocks: np.ndarray    # sorted unique blocks of the universe

    def _index(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.blocks)
        if n and int(self.blocks[-1]) - int(self.blocks[0]) + 1 == n:   # dense universe: arithmetic
            pos = block - self.blocks[0]
            ok = (pos >= 0) & (pos < n)
            return np.where(ok, pos, 0), ok
        pos = np.searchsorted(self.blocks, block)
        pos = np.minimum(pos, max(len(self.blocks) - 1, 0))
        ok = self.blocks[pos] == block if len(self.blocks) else np.zeros(len(block), dtype=bool)
        return pos, ok

    def at(self, block: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """Interval index in force just before record `seq` in `block` (-1 outside the universe)."""
        block = np.asarray(block, dtype=np.int64)
        seq = np.asarray(seq, dtype=np.int64)
        smax = max(int(self.start_seq.max(initial=0)), int(seq.max(initial=0))) + 2
        if len(self.blocks) * smax < (1 << 62) and len(self.block):
            # combined (block rank, seq) key: one searchsorted into the (small) interval table
            cached = getattr(self, "_key", None)
            if cached is None or cached[0] != smax:
                kpos, kok = self._index(self.block)
                key = kpos * smax + (self.start_seq + 1)
                starts = None   # C path: rows of each block rank, when keys are sorted block-major
                if _cpair is not None and kok.all() and bool(np.all(key[1:] >= key[:-1])):
                    starts = np.searchsorted(kpos, np.arange(len(self.blocks) + 1), side="left")
                self._key = (smax, key, starts)
            key, starts = self._key[1], self._key[2]
            qpos, ok = self._index(block)
            if starts is not None:
                # = the searchsorted below, searching only the query's block (no random
                # binary search over the whole table)
                i = _cpair.at(starts, self.start_seq + 1, np.ascontiguousarray(qpos, dtype=np.int64), seq + 1)
            else:
                i = np.searchsorted(key, qpos * smax + (seq + 1), side="left") - 1
            ok &= i >= 0
            i = np.maximum(i, 0)
            return np.where(ok & (self.block[i] == block), i, -1)
        return ffill_lookup(self.block, self.start_seq, block, seq, strict=True)

    def at_ts(self, block: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Interval index in force at time `ts` (intervals starting at ts included)."""
        return ffill_lookup(self.block, self.start_ts, np.asarray(block, dtype=np.int64),
                            np.asarray(ts, dtype=np.int64), strict=False)

    def end_ts(self, trace_end_ts: int) -> np.ndarray:
        nxt = np.empty_like(self.start_ts)
        nxt[:-1] = self.start_ts[1:]
        last = np.ones(len(self.block), dtype=bool)
        last[:-1] = self.block[1:] != self.block[:-1]
        nxt[last] = trace_end_ts
        return np.maximum(nxt, self.start_ts)

    def end_seq(self, trace_end_seq: int) -> np.ndarray:
        nxt = np.empty_like(self.start_seq)
        nxt[:-1] = self.start_seq[1:]
        last = np.ones(len(self.block), dtype=bool)
        last[:-1] = self.block[1:] != self.block[:-1]
        nxt[last] = trace_end_seq
        return nxt


def sort_key(rows: Rows) -> np.ndarray | None:
    """One int64 key ordering rows by (block, seq, sub), or None if it could overflow."""
    if not len(rows):
        return np.zeros(0, np.int64)
    b0, b1 = int(rows.block.min()), int(rows.block.max())
    s0, s1 = int(rows.seq.min()), int(rows.seq.max())
    span = (s1 - s0 + 1) * 8
    if (b1 - b0 + 1) * span >= (1 << 62):
        return None
    return ((rows.block - b0) * (s1 - s0 + 1) + (rows.seq - s0)) * 8 + rows.sub.astype(np.int64)


class SortedRows:
    """Base rows sorted once; `with_extra()` merges a few more rows in linear time.

    The observation fixed point re-resolves the same base rows many times with a growing
    set of accepted observations, so the base is never sorted again.
    """

    def __init__(self, rows: Rows):
        self.rows = rows
        allk = sort_key(rows)
        if allk is not None and len(rows):
            o = np.argsort(allk, kind="stable")
            self.sorted = rows.take(o)
            self.skey = allk[o]

    def with_extra(self, extra: Rows) -> Rows:
        """(base + extra) sorted by (block, seq, sub); extra rows sort after base rows on ties."""
        if not len(extra):
            return self.sorted if hasattr(self, "sorted") else _lexsorted(self.rows)
        if not hasattr(self, "sorted"):
            return _lexsorted(Rows.concat([self.rows, extra]))
        # keys must share one origin: the combined range of base and extra
        b0 = min(int(self.sorted.block[0]), int(extra.block.min()))
        b1 = max(int(self.sorted.block[-1]), int(extra.block.max()))
        s0 = min(int(self.rows.seq.min()), int(extra.seq.min()))
        s1 = max(int(self.rows.seq.max()), int(extra.seq.max()))
        if (b1 - b0 + 1) * (s1 - s0 + 1) * 8 >= (1 << 62):
            return _lexsorted(Rows.concat([self.rows, extra]))
        def k(r: Rows) -> np.ndarray:
            return ((r.block - b0) * (s1 - s0 + 1) + (r.seq - s0)) * 8 + r.sub.astype(np.int64)
        bk = k(self.sorted)
        ek = k(extra)
        eo = np.argsort(ek, kind="stable")
        ek = ek[eo]
        pos = np.searchsorted(bk, ek, side="right") + np.arange(len(ek))
        n = len(bk) + len(ek)
        is_extra = np.zeros(n, dtype=bool)
        is_extra[pos] = True
        out = {}
        for f in Rows.__dataclass_fields__:
            a, e = getattr(self.sorted, f), getattr(extra, f)[eo]
            m = np.empty(n, dtype=a.dtype)
            m[pos] = e
            m[~is_extra] = a
            out[f] = m
        return Rows(**out)


def _lexsorted(rows: Rows) -> Rows:
    return rows.take(np.lexsort((rows.sub, rows.seq, rows.block)))


def resolve(rows: Rows, universe: np.ndarray, presorted: bool = False) -> Timeline:
    """Turn assertion rows into intervals (one per change of type/confidence/source)."""
    r = rows if presorted else _lexsorted(rows)
    n = len(r)
    idx = np.arange(n)
    is_set = r.kind == SET
    first = np.ones(n, dtype=bool)
    first[1:] = r.block[1:] != r.block[:-1]
    if np.any(first & ~is_set):
        raise ValueError("every block's rows must start with a SET row (its boot state)")
    last_set = np.maximum.accumulate(np.where(is_set, idx, 0))
    mt = r.mt[last_set]
    src = r.src[last_set]
    conf = r.conf[last_set].copy()
    mergeable = (mt >= 0) & (mt <= MERGEABLE_MAX)
    for kind, cap, applies in ((CAND, UNKNOWN, mergeable), (TOUCH, INFERRED, mergeable),
                               (LOST, INFERRED, np.ones(n, dtype=bool))):
        flag = r.kind == kind
        if not flag.any():
            continue
        cs = np.cumsum(flag)
        seen = (cs - cs[last_set]) > 0
        conf = np.where(seen & applies, np.minimum(conf, cap), conf)
    # the state after the last row of each (block, seq) group is what later records see
    last_of_seq = np.ones(n, dtype=bool)
    last_of_seq[:-1] = (r.block[1:] != r.block[:-1]) | (r.seq[1:] != r.seq[:-1])
    k = np.flatnonzero(last_of_seq)
    b, s, ts = r.block[k], r.seq[k], r.ts[k]
    mt, src, conf = mt[k], src[k], conf[k]
    change = np.ones(len(k), dtype=bool)
    change[1:] = ((b[1:] != b[:-1]) | (mt[1:] != mt[:-1]) | (src[1:] != src[:-1]) | (conf[1:] != conf[:-1]))
    c = np.flatnonzero(change)
    guess = mt[c].astype(np.int8)
    cf = conf[c].astype(np.int8)
    shown = np.where(cf == UNKNOWN, -1, guess).astype(np.int8)
    return Timeline(b[c], s[c], ts[c], shown, guess, cf, src[c].astype(np.int8),
                    np.unique(np.asarray(universe, dtype=np.int64)))


def spans(tl: Timeline, t0: int, t1: int) -> tuple[np.ndarray, ...]:
    """Clip intervals to [t0, t1): (block, start, end, interval index) with end > start."""
    end = tl.end_ts(t1)
    s = np.maximum(tl.start_ts, t0)
    e = np.minimum(end, t1)
    keep = e > s
    return tl.block[keep], s[keep], e[keep], np.flatnonzero(keep)


def agreement(truth: Timeline, guess: Timeline, t0: int, t1: int) -> dict:
    """Share of block-time (ns) where `guess` claimed known/inferred and equals `truth`.

    Measured over [t0, t1) (from the moment the ground truth is live) and only where the
    truth itself is `known`.
    """
    blocks = np.union1d(truth.blocks, guess.blocks)
    pts_b = np.concatenate([truth.block, guess.block, blocks])
    pts_t = np.concatenate([np.maximum(truth.start_ts, t0), np.maximum(guess.start_ts, t0),
                            np.full(len(blocks), t0, dtype=np.int64)])
    o = np.lexsort((pts_t, pts_b))
    pb, pt = pts_b[o], pts_t[o]
    keep = np.ones(len(pb), dtype=bool)
    keep[1:] = (pb[1:] != pb[:-1]) | (pt[1:] != pt[:-1])
    pb, pt = pb[keep], pt[keep]
    nxt = np.empty_like(pt)
    nxt[:-1] = pt[1:]
    lastb = np.ones(len(pb), dtype=bool)
    lastb[:-1] = pb[1:] != pb[:-1]
    nxt[lastb] = t1
    dur = np.clip(nxt, t0, t1) - np.clip(pt, t0, t1)

    def lookup(tl: Timeline) -> np.ndarray:
        return tl.at_ts(pb, pt)

    def pick(a: np.ndarray, i: np.ndarray, fill: int) -> np.ndarray:   # an empty timeline has no row 0
        return np.where(i >= 0, a[np.maximum(i, 0)], fill) if len(a) else np.full(len(i), fill)

    it, ig = lookup(truth), lookup(guess)
    tconf, tmt = pick(truth.conf, it, -1), pick(truth.guess, it, -1)
    gconf, gmt = pick(guess.conf, ig, -1), pick(guess.guess, ig, -2)
    base = (tconf == KNOWN) & (dur > 0)
    claimed = base & (gconf >= INFERRED)
    agree = claimed & (gmt == tmt)
    known_c = base & (gconf == KNOWN)
    inf_c = base & (gconf == INFERRED)
    tot = float(dur[base].sum())
    cl = float(dur[claimed].sum())
    res: dict[str, Any] = {
        "rate": (float(dur[agree].sum()) / cl) if cl else None,
        "coverage": (cl / tot) if tot else None,
        "known_rate": (float(dur[known_c & (gmt == tmt)].sum()) / float(dur[known_c].sum())) if dur[known_c].sum() else None,
        "inferred_rate": (float(dur[inf_c & (gmt == tmt)].sum()) / float(dur[inf_c].sum())) if dur[inf_c].sum() else None,
        "truth_known_block_seconds": tot / 1e9,
        "claimed_block_seconds": cl / 1e9,
        "disagree_block_seconds": (cl - float(dur[agree].sum())) / 1e9,
        "window_start_ts": int(t0), "window_end_ts": int(t1),
    }
    bad = claimed & ~agree
    ub, inv = np.unique(pb[bad], return_inverse=True)
    per = np.bincount(inv, weights=dur[bad]) if len(ub) else np.zeros(0)
    top = np.argsort(-per, kind="stable")[:50]
    res["disagreeing_blocks"] = [int(ub[i]) for i in top]            # worst first
    res["disagreeing_block_seconds"] = [float(per[i]) / 1e9 for i in top]
    res["n_disagreeing_blocks"] = int(len(ub))
    # the same measure restricted to truth set by the probe itself (not by the boot log or by
    # an observation the inference also saw): the strictest view
    tsrc = pick(truth.src, it, -1)
    bk = claimed & (tsrc == SRC["kprobe"])
    res["kprobe_only_rate"] = (float(dur[bk & agree].sum()) / float(dur[bk].sum())) if dur[bk].sum() else None
    res["kprobe_only_block_seconds"] = float(dur[bk].sum()) / 1e9
    return res
