"""Read-only questions about a built model that every layer above it asks.

The detectors, the narrative and the analysis all read model frames the same way
(a column as numpy, a string test in Arrow, the pcp stay a record ended, what a
block type at a record rests on); this is their one home, below all three.
`ModelView` is the surface of `Model` they rely on (detectors are typed against it,
so a small test model can stand in for the real one).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from .timeline import INFERRED as CONF_INFERRED, KNOWN as CONF_KNOWN, SRC


# A block type that rests only on the boot seed ("every block starts MOVABLE") is not
# evidence: blocks retyped before tracing started look exactly like that.  Nor is a
# type revealed later and projected back to the trace start ("backfill"): an untraced
# retype may sit in between.  Kernel findings, and the consistency check's "evidenced"
# counts, need a type established by evidence.
UNVERIFIED_SOURCES = ("boot", "backfill")


class ModelView(Protocol):
    """What detectors, narrative and analysis read from a model (contracts section 2b)."""

    pageblock_order: int
    blocks: pd.DataFrame
    isolation: pd.DataFrame
    residency: pd.DataFrame
    events: Mapping[str, pd.DataFrame]
    meta: Any
    ground_truth: bool
    kprobe_live_seq: int | None

    def block_type_at(self, pfn: np.ndarray, seq: np.ndarray) -> Any: ...


def col(df: pd.DataFrame | None, name: str, dtype, default=0) -> np.ndarray:
    """A column as a plain numpy array (nulls -> `default`), empty if the frame is missing."""
    if df is None or len(df) == 0 or name not in df.columns:
        n = 0 if df is None else len(df)
        return np.full(n, default, dtype=dtype)
    s = df[name]
    if isinstance(s.dtype, pd.ArrowDtype):
        arr = pa.array(s.array)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if arr.null_count:
            import pyarrow.compute as pc
            arr = pc.fill_null(arr, default)
        return arr.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return s.to_numpy(dtype=dtype, na_value=default)


def fmt_pfn(p: int) -> str:
    return f"0x{int(p):x}"


def str_eq(df: pd.DataFrame, name: str, value: str) -> np.ndarray:
    """Boolean mask `df[name] == value` computed in Arrow (no Python strings per row)."""
    import pyarrow.compute as pc
    s = df[name]
    arr = pa.array(s.array) if isinstance(s.dtype, pd.ArrowDtype) else pa.array(s.astype(str).to_numpy())
    return np.asarray(pc.fill_null(pc.equal(arr, value), False).to_numpy(zero_copy_only=False), bool)


def match_leave(model, leave_kind: str, seq: np.ndarray) -> tuple[np.ndarray, pd.DataFrame | None]:
    """Residency row index for each record seq that ended a pcp stay of `leave_kind` (-1: none).

    A record ends at most one stay, so matching on leave_seq alone is exact; only the
    matched rows' kind is checked, which keeps this cheap for the few finding rows.
    """
    res = getattr(model, "residency", None)
    out = np.full(len(seq), -1, np.int64)
    if res is None or len(res) == 0 or not len(seq):
        return out, res
    import pyarrow.compute as pc
    s = res["leave_seq"]
    arr = pa.array(s.array) if isinstance(s.dtype, pd.ArrowDtype) else pa.array(s.to_numpy())
    hit = pc.is_in(arr, value_set=pa.array(np.asarray(seq, np.int64), arr.type))
    rows = np.flatnonzero(np.asarray(pc.fill_null(hit, False).to_numpy(zero_copy_only=False), bool))
    if not len(rows):
        return out, res
    leave = col(res.iloc[rows], "leave_seq", np.int64, -1)
    kinds = res["leave_kind"].iloc[rows].astype(str).to_numpy()
    keep = kinds == leave_kind
    rows, leave = rows[keep], leave[keep]
    order = np.argsort(seq, kind="stable")
    pos = np.searchsorted(seq[order], leave)
    out[order[pos]] = rows
    return out, res


# Evidence tiers: what a block type at a record rests on (strongest first).
#   probe    - the set_pfnblock_flags_mask kprobe wrote it, or it is the boot log's CMA
#              reservation watched by a live probe (any later retype would have been seen)
#   observed - the kernel printed it as the live type (drain / zone_locked / free-time print)
#   traced   - a tracepoint fact without the probe (extfrag claim, CMA reservation, CMA restore)
#   inferred - everything else the model is not sure of (boot seed, windows, backfill)
TIER_NONE, TIER_INFERRED, TIER_TRACED, TIER_OBSERVED, TIER_PROBE = 0, 1, 2, 3, 4
TIER_NAMES = {TIER_NONE: "none", TIER_INFERRED: "inferred", TIER_TRACED: "traced",
              TIER_OBSERVED: "observed", TIER_PROBE: "probe"}
REPORTED_TIERS = ("probe", "observed", "traced", "inferred")
_OBSERVED_SOURCES = ("drain-observed", "zone-locked-observed", "free-observed")


def evidence_tier(model: ModelView, st, seq: np.ndarray) -> np.ndarray:
    """Tier code (TIER_*) of each BlockState entry at record `seq`."""
    conf = np.asarray(st.confidence)
    src = np.asarray(st.source)
    seq = np.asarray(seq, np.int64)
    live = getattr(model, "kprobe_live_seq", None)
    probe_on = (seq > int(live)) if live is not None else np.zeros(len(seq), bool)
    known = conf >= CONF_KNOWN
    out = np.where(conf >= CONF_INFERRED, TIER_INFERRED, TIER_NONE).astype(np.int8)
    out[known] = TIER_TRACED
    out[known & np.isin(src, [SRC[n] for n in _OBSERVED_SOURCES])] = TIER_OBSERVED
    out[known & ((src == SRC["kprobe"]) | ((src == SRC["cma-reserve"]) & probe_on))] = TIER_PROBE
    return out


def tier_counts(tiers: np.ndarray) -> dict[str, int]:
    t = np.asarray(tiers)
    return {TIER_NAMES[c]: int((t == c).sum()) for c in (TIER_PROBE, TIER_OBSERVED, TIER_TRACED, TIER_INFERRED)}
