"""What the traced kernel's prints mean, measured from the trace instead of read from the
version table.

A harness kernel is patched by definition, so `analyzer/kernels.py` only says what a
release *should* do.  Wherever the set_pfnblock_flags_mask kprobe establishes a block's
type (evidence tier "probe"), a print can be compared with it:

* drains (`mm_page_pcpu_drain`): a drained page whose pcp-cached type (from the pcp
  stay the drain closes) differs from its block's probe type is *informative*: the
  printed type follows either the cached type or the live type.  Counted separately
  while a block of the zone is isolated and while none is, this tells the three modes of
  kernels.DRAIN_MODES apart: "cached-always" (no re-read, < 3.18 or 51bb1a4093cc
  reverted), "cached" (re-read only while isolated, 3.18 .. 6.9), "live" (>= 6.10).
* zone_locked (`mm_page_alloc_zone_locked`): prints that differ from the probe type
  show the "freelist" semantics; none at all is consistent with "block".

`measure(model)` returns the JSON-able dict the analysis exposes as `behaviour`;
`effective_modes()` turns it into the semantics the records are judged by.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels import DRAIN_CACHED, DRAIN_CACHED_ALWAYS, DRAIN_LIVE, DRAIN_MODES, ZL_BLOCK, ZL_FREELIST
from .query import TIER_PROBE, col, evidence_tier, str_eq

# A part (isolated / not isolated) is decided when this share of its informative drains
# print one way; below it the kernel is reported as "mixed" and not judged by it.
MAJORITY = 0.9
# (while no block of the zone is isolated, while one is) -> mode
_PARTS = {DRAIN_CACHED_ALWAYS: ("cached", "cached"), DRAIN_CACHED: ("cached", "live"), DRAIN_LIVE: ("live", "live")}
_SAY = {
    ("isolated", "cached"): "drains do not re-read the block type while a block of the zone is isolated",
    ("isolated", "live"): "drains re-read the block type while a block of the zone is isolated",
    ("not_isolated", "cached"): "drains print the cached pcp type while no block of the zone is isolated",
    ("not_isolated", "live"): "drains print the live block type while no block of the zone is isolated",
}


def _events(model, name: str):
    ev = getattr(model, "events", None) or {}
    df = ev.get(name) if name in ev else None
    return df if df is not None and len(df) else None


def _part(printed: np.ndarray, live: np.ndarray, cached: np.ndarray) -> dict:
    return _part_of(int(len(printed)), int((printed == live).sum()), int((printed == cached).sum()))


def _part_of(n: int, a: int, b: int) -> dict:
    out: dict[str, Any] = {"informative": n, "printed_live": a, "printed_cached": b, "printed_other": n - a - b, "verdict": None}
    if n:
        if a >= MAJORITY * n:
            out["verdict"] = "live"
        elif b >= MAJORITY * n:
            out["verdict"] = "cached"
        else:
            out["verdict"] = "mixed"
    return out


def drain_counts(model) -> dict[str, Any] | None:
    """What `_drain` measures, as counts that add up over pageblock partitions (None: nothing
    to measure: no drains, no ground truth or no pcp stays)."""
    live_seq = getattr(model, "kprobe_live_seq", None)
    if _events(model, "mm_page_pcpu_drain") is None or not getattr(model, "ground_truth", False) \
            or live_seq is None:
        return None
    # drains that closed a pcp stay: the stay knows the cached type and the printed one
    stays = getattr(model, "residency", None)
    if stays is None or not len(stays):
        return None
    sel = np.flatnonzero(str_eq(stays, "leave_kind", "drain"))
    leave = col(stays, "leave_seq", np.int64, -1)[sel]
    sel = sel[leave > live_seq]
    seq = col(stays, "leave_seq", np.int64, -1)[sel]
    pfn = col(stays, "pfn", np.uint64)[sel]
    printed = col(stays, "leave_printed_mt", np.int16, -1)[sel]
    cached = col(stays, "cached_mt", np.int16, -1)[sel]
    st = model.block_type_at(pfn, seq)
    truth = np.asarray(st.mt, np.int16)
    probe = (evidence_tier(model, st, seq) == TIER_PROBE) & (truth >= 0)
    out: dict[str, Any] = {"ground_truth_drains": int(probe.sum())}
    info = probe & (cached >= 0) & (cached != truth)
    iso = np.asarray(st.zone_isolated, bool)
    for name, m in (("not_isolated", info & ~iso), ("isolated", info & iso)):
        out[name] = (int(m.sum()), int((printed[m] == truth[m]).sum()), int((printed[m] == cached[m]).sum()))
    return out


def _drain(model, expected: str, counts: dict[str, Any] | None = None, given: bool = False) -> dict:
    """`counts`/`given`: drain_counts() summed over partitions (given=True even when None)."""
    res: dict[str, Any] = {"expected": expected, "observed": None, "agree": None, "ground_truth_drains": 0,
           "not_isolated": _part(np.zeros(0), np.zeros(0), np.zeros(0)),
           "isolated": _part(np.zeros(0), np.zeros(0), np.zeros(0)), "disagreements": []}
    for i, name in enumerate(("not_isolated", "isolated")):
        res[name]["expected"] = _PARTS[expected][i]
    c = counts if given else drain_counts(model)
    if c is None:
        return res
    res["ground_truth_drains"] = c["ground_truth_drains"]
    for name in ("not_isolated", "isolated"):
        res[name] = _part_of(*c[name])
    for i, name in enumerate(("not_isolated", "isolated")):
        res[name]["expected"] = _PARTS[expected][i]
    ni, isol = res["not_isolated"]["verdict"], res["isolated"]["verdict"]
    measured = {k: v for k, v in (("not_isolated", ni), ("isolated", isol)) if v in ("live", "cached")}
    cands = [m for m in DRAIN_MODES
             if all(_PARTS[m][0 if k == "not_isolated" else 1] == v for k, v in measured.items())]
    # observed: the one mode the measured parts allow; when they allow several, the table's if it
    # is among them (the trace is consistent with it; `determined_by` says which parts were seen)
    if len(cands) == 1 or (measured and expected in cands):
        res["observed"] = cands[0] if len(cands) == 1 else expected
    res["determined_by"] = sorted(measured)
    if measured:
        exp = _PARTS[expected]
        res["disagreements"] = [_SAY[(k, v)] for k, v in measured.items()
                                if exp[0 if k == "not_isolated" else 1] != v]
        res["agree"] = not res["disagreements"]
        res["consistent_with"] = cands
    return res


def zone_locked_counts(model) -> tuple[int, int] | None:
    """(records the probe knows the block of, of those printing the block's type); None: none to measure."""
    z = _events(model, "mm_page_alloc_zone_locked")
    live_seq = getattr(model, "kprobe_live_seq", None)
    if z is None or not getattr(model, "ground_truth", False) or live_seq is None:
        return None
    seq = col(z, "seq", np.int64)
    keep = np.flatnonzero(seq > live_seq)
    seq = seq[keep]
    st = model.block_type_at(col(z, "pfn", np.uint64)[keep], seq, zone_isolated=False)
    truth = np.asarray(st.mt, np.int16)
    probe = (evidence_tier(model, st, seq) == TIER_PROBE) & (truth >= 0)
    printed = col(z, "migratetype", np.int16, -1)[keep][probe]
    return int(probe.sum()), int((printed == truth[probe]).sum())


def _zone_locked(model, expected: str, counts: tuple[int, int] | None = None, given: bool = False) -> dict:
    res: dict[str, Any] = {"expected": expected, "observed": None, "agree": None, "ground_truth_records": 0,
           "printed_block": 0, "printed_other": 0}
    c = counts if given else zone_locked_counts(model)
    if c is None:
        return res
    n, same = c
    res.update(ground_truth_records=n, printed_block=same, printed_other=n - same)
    if n:
        res["observed"] = ZL_BLOCK if same == n else ZL_FREELIST
        # "freelist" allows prints that match the block; only "block" can be contradicted
        res["agree"] = not (expected == ZL_BLOCK and res["observed"] == ZL_FREELIST)
    return res


def measure(model, kernel, counts: tuple[Any, Any] | None = None) -> dict:
    """{"drain": {...}, "zone_locked": {...}, "summary": [lines]} (see module doc).

    `counts`: (drain_counts, zone_locked_counts) summed over pageblock partitions, when
    `model` is their merged model (it holds no events)."""
    given = counts is not None
    dc, zc = counts if counts is not None else (None, None)
    out: dict[str, Any] = {"drain": _drain(model, kernel.drain_prints, dc, given),
           "zone_locked": _zone_locked(model, kernel.zone_locked_prints, zc, given)}
    lines = []
    rel = kernel.describe() if kernel.version or kernel.release else "the assumed kernel"
    if out["drain"]["agree"] is False:
        lines.append(f"kernel behaves unlike {rel}: " + "; ".join(out["drain"]["disagreements"]))
    if out["zone_locked"]["agree"] is False:
        lines.append(f"kernel behaves unlike {rel}: zone_locked prints differ from the block type "
                     f"({out['zone_locked']['printed_other']} of {out['zone_locked']['ground_truth_records']})")
    out["summary"] = lines
    return out


def effective_modes(b: dict) -> tuple[str | None, str | None]:
    """(drain mode, zone_locked mode) to judge records by: what was observed where it contradicts
    the table, else None (keep the table's)."""
    d = b["drain"]
    drain = None
    if d.get("agree") is False:
        cands = d.get("consistent_with") or []
        drain = d["observed"] or (cands[0] if cands else None)
    z = b["zone_locked"]
    zl = z["observed"] if z.get("agree") is False else None
    return drain, zl
