"""Consistency check: reconstructed end-of-trace block counts vs /proc/pagetypeinfo.

The "Number of blocks type" table after the run is the kernel's own count of
pageblocks per type; if the model's final per-block types add up to the same
numbers per zone, the reconstruction (boot seed + traced retypes + isolation
restore rules) missed nothing that changed the totals.  Blocks the model could
not type are shown as their own column: they can explain a difference but not
prove agreement.

On a running system (a recording that starts long after boot) the blocks' types before
the trace are unknown: only their per-type counts are (pagetypeinfo-start).  Blocks the
trace never reveals then keep an assumed type, so a shortfall they cannot fill is not a
missed retype but an unknown; the verdict is "unknown" (attrs["start_unknown"]) unless an
evidenced count exceeds the kernel's, which no start state can explain.  The zone's block
count is the kernel's own (pagetypeinfo counts online blocks; zone spans include holes
and offline memory).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..kernels import ISOLATE, MIGRATETYPE_NAMES, MOVABLE as MT_MOVABLE
from .query import UNVERIFIED_SOURCES, col

# /proc/pagetypeinfo's column names, in migratetype order: the one table's names
TYPE_NAMES = [MIGRATETYPE_NAMES[t] for t in range(ISOLATE + 1)]


def normalize_pti(obj) -> dict[str, dict[str, int]] | None:
    """{zone: {type name: blocks}} from the parsed pagetypeinfo table, whatever container it came in."""
    if obj is None:
        return None
    if isinstance(obj, pd.DataFrame):
        if {"zone", "type", "count"} <= set(obj.columns):
            out: dict[str, dict[str, int]] = {}
            for z, t, c in zip(obj["zone"], obj["type"], obj["count"]):
                out.setdefault(str(z), {})[_tname(t)] = int(c)
            return out
        if "zone" in obj.columns:
            return {str(r["zone"]): {_tname(k): int(v) for k, v in r.items() if k not in ("zone", "node")}
                    for _, r in obj.iterrows()}
    if hasattr(obj, "blocks"):            # a parsed-pagetypeinfo object
        return normalize_pti(obj.blocks)
    if isinstance(obj, dict):
        if "blocks" in obj and isinstance(obj["blocks"], (dict, pd.DataFrame)):
            return normalize_pti(obj["blocks"])
        out = {}
        for z, row in obj.items():          # keys "DMA" or (node, "DMA"): nodes are summed
            zone = str(z[-1] if isinstance(z, tuple) else z)
            acc = out.setdefault(zone, {})
            for k, v in dict(row).items():
                acc[_tname(k)] = acc.get(_tname(k), 0) + int(v)
        return out
    return None


def _tname(t) -> str:
    if isinstance(t, (int, np.integer)):
        return TYPE_NAMES[int(t)] if 0 <= int(t) < len(TYPE_NAMES) else str(t)
    s = str(t)
    for n in TYPE_NAMES:
        if s.lower() == n.lower():
            return n
    return s


def final_types(model) -> pd.DataFrame:
    """One row per pageblock: zone, block, final migratetype, source, confidence (last interval)."""
    bl = model.blocks
    if bl is None or len(bl) == 0:
        return pd.DataFrame({"zone": [], "block": [], "mt": [], "source": [], "confidence": []})
    blk = col(bl, "block", np.int64)
    # seq order is exact where timestamps tie (early boot records all have ts 0)
    key = col(bl, "start_seq", np.int64) if "start_seq" in bl.columns else col(bl, "start_ts", np.int64)
    order = np.lexsort((key, blk))
    last = order[np.r_[blk[order][1:] != blk[order][:-1], True]]
    return pd.DataFrame({
        "zone": bl["zone"].astype(str).to_numpy()[last],
        "block": blk[last],
        "mt": col(bl, "migratetype", np.int16, -1)[last],
        "source": bl["source"].astype(str).to_numpy()[last],
        "confidence": bl["confidence"].astype(str).to_numpy()[last],
    })


@dataclass
class Consistency:
    """The consistency table and its verdict, typed (the verdict used to ride in `DataFrame.attrs`,
    which pandas drops or merges silently when a frame is copied or concatenated)."""

    table: pd.DataFrame
    available: bool
    start_unknown: bool = False
    contradicted: bool | None = None
    passed: bool | None = None
    exact: bool | None = None
    unknown_blocks: int = 0
    unverified_blocks: int = 0


def check(model, meta) -> Consistency:
    """Table zone/type/reconstructed/pagetypeinfo/diff plus the evidenced part of each count.

    Verdict: available; exact (every count equal); passed (no evidenced count exceeds the
    kernel's and the unverified blocks, boot-seeded or unknown, are exactly enough to fill
    every shortfall: some assignment of them reproduces the kernel's table; None when the
    start is unknown and nothing contradicts the kernel); contradicted (an evidenced count
    exceeds the kernel's); start_unknown; unknown_blocks; unverified_blocks.
    """
    pti = normalize_pti(getattr(meta, "pagetypeinfo_end", None) if meta is not None else None)
    ft = final_types(model)
    rows = []
    zones = sorted(set(ft["zone"]) | set(pti or {}))
    unknown_total = unverified_total = 0
    passed, exact, contradicted = True, True, False
    start_unknown = live_start(model, meta)
    for z in zones:
        f = ft[ft["zone"] == z]
        unk = int((f["mt"] < 0).sum())
        unverified = ((f["mt"] < 0) | (f["source"].isin(UNVERIFIED_SOURCES)
                                       & (f["confidence"] != "known"))).to_numpy()
        # blocks of the zone the model never listed keep the boot default
        missing = _untracked_blocks(model, meta, z, f, (pti or {}).get(z))
        n_unv = int(unverified.sum()) + missing
        unknown_total += unk
        unverified_total += n_unv
        diffs, ev_diffs = [], []
        for t, name in enumerate(TYPE_NAMES):
            rec = int((f["mt"] == t).sum()) + (missing if t == MT_MOVABLE else 0)
            evid = int(((f["mt"] == t) & ~unverified).sum())
            ref = None if pti is None else pti.get(z, {}).get(name)
            diff = None if ref is None else rec - ref
            if ref is not None:
                diffs.append(diff)
                ev_diffs.append(evid - ref)
            rows.append({"zone": z, "type": name, "migratetype": t, "reconstructed": rec, "evidenced": evid,
                         "pagetypeinfo": ref, "diff": diff, "unknown": unk, "unverified": n_unv})
        if pti is not None and z in pti:
            short = sum(-d for d in ev_diffs if d < 0)
            zone_ok = all(d <= 0 for d in ev_diffs) and short == n_unv
            contradicted = contradicted or any(d > 0 for d in ev_diffs)
            exact = exact and unk == 0 and all(d == 0 for d in diffs)
            passed = passed and zone_ok
    out = pd.DataFrame(rows, columns=["zone", "type", "migratetype", "reconstructed", "evidenced", "pagetypeinfo",
                                      "diff", "unknown", "unverified"])
    verdict: bool | None
    if pti is not None and not passed and start_unknown and not contradicted:
        verdict = None          # unknown, not failed: the start types were never seen
    else:
        verdict = bool(passed) if pti is not None else None
    return Consistency(out, available=pti is not None, start_unknown=bool(start_unknown),
                       contradicted=bool(contradicted) if pti is not None else None, passed=verdict,
                       exact=bool(exact) if pti is not None else None, unknown_blocks=unknown_total,
                       unverified_blocks=unverified_total)


LIVE_START_NS = 60 * 1_000_000_000     # a trace beginning later than this after boot missed the boot


def live_start(model, meta) -> bool:
    """Whether the trace starts on a running system, with block types before it unknown.

    True when pagetypeinfo-start shows non-MOVABLE blocks (so boot already retyped some)
    and the trace begins more than a minute after boot (trace clocks count from boot), or
    the bundle was recorded live by `mtaudit record`.
    """
    start = normalize_pti(getattr(meta, "pagetypeinfo_start", None) if meta is not None else None)
    if not start or not any(n for z in start.values() for t, n in z.items() if t != TYPE_NAMES[MT_MOVABLE]):
        return False
    man = getattr(meta, "manifest", None)
    if man is not None and man.extra.get("collector") == "mtaudit record":
        return True
    return int(getattr(model, "trace_start_ts", 0) or 0) > LIVE_START_NS


def _untracked_blocks(model, meta, zone: str, f: pd.DataFrame, kernel_counts: dict | None = None) -> int:
    """Blocks of the zone that have no history row (assumed boot MOVABLE).

    With the kernel's table for the zone: its block total minus the blocks the model lists
    (pagetypeinfo skips holes and offline sections, which a zone span includes).
    """
    if kernel_counts:
        total = sum(int(v) for v in kernel_counts.values())
        return max(0, total - len(f))
    pbo = int(model.pageblock_order)
    for z in (getattr(meta, "zones", None) or []):
        name, start, end = z[0], int(z[1]), int(z[2])
        if name == zone:
            span = set(range(start >> pbo, (end + (1 << pbo) - 1) >> pbo))
            return max(0, len(span - set(f["block"].tolist())))
    return 0
