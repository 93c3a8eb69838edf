"""Shared columnar helpers for the detectors.

Every detector works on whole event columns: it asks the model for the block
state of all its candidate records at once (`Model.block_type_at`) and builds
its findings frame from boolean masks.  These helpers keep that pattern short
and make every detector return the same §3 findings schema.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

FINDING_SCHEMA = pa.schema([
    pa.field("detector", pa.string()),
    pa.field("severity", pa.string()),
    pa.field("seq", pa.int64()),
    pa.field("ts", pa.int64()),
    pa.field("cpu", pa.int32()),
    pa.field("pfn", pa.uint64()),
    pa.field("block", pa.int64()),
    pa.field("event", pa.string()),
    pa.field("printed_mt", pa.int8()),
    pa.field("block_mt", pa.int8()),
    pa.field("explanation", pa.string()),
])
FINDING_COLUMNS = [f.name for f in FINDING_SCHEMA]

SEVERITY_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1, "info": 0}

# Shared model questions (one home, below detectors, narrative and analysis), re-exported here.
from ..model.query import (REPORTED_TIERS, TIER_INFERRED, TIER_NAMES, TIER_NONE, TIER_OBSERVED,  # noqa: E402,F401
                           TIER_PROBE, TIER_TRACED, UNVERIFIED_SOURCES, ModelView, col, evidence_tier,
                           fmt_pfn, match_leave, str_eq, tier_counts)
# Confidence codes and names, and block-type sources: one definition, in the model.
from ..model.timeline import SOURCES, SRC  # noqa: E402
from ..model.timeline import INFERRED as CONF_INFERRED, KNOWN as CONF_KNOWN  # noqa: E402

# re-exported for the detector modules
from ..kernels import CMA as MT_CMA, ISOLATE as MT_ISOLATE, MOVABLE as MT_MOVABLE  # noqa: E402,F401
from ..kernels import RECLAIMABLE as MT_RECLAIMABLE, UNMOVABLE as MT_UNMOVABLE  # noqa: E402,F401


from ..kernels import mt_name  # noqa: E402,F401  (re-exported: the one table)


def event_frame(model, name: str) -> pd.DataFrame | None:
    """One of the model's event frames by short name, or None when the trace has none."""
    ev = getattr(model, "events", None) or {}
    df = ev.get(name)
    if df is None or len(df) == 0:
        return None
    if not isinstance(df, pd.DataFrame):       # an Arrow table or a wrapper with .df()
        df = df.to_pandas(types_mapper=pd.ArrowDtype) if isinstance(df, pa.Table) else df.df()
    return df


def cpu_frame(model, name: str) -> pd.DataFrame | None:
    """An event frame for same-CPU neighbour look-ups (the previous allocation of a CPU, its
    fallbacks): the whole trace's records even where `model.events` holds one pageblock
    partition's (analyzer/partitioned_analysis.py gives such a model `cpu_events`)."""
    ce = getattr(model, "cpu_events", None)
    if ce is None:
        return event_frame(model, name)

    class _View:
        events = ce
    return event_frame(_View, name)


def empty_findings() -> pd.DataFrame:
    return FINDING_SCHEMA.empty_table().to_pandas(types_mapper=pd.ArrowDtype)


def make_findings(*, detector, severity, seq, ts, cpu, pfn, block, event, printed_mt,
                  block_mt, explanation) -> pd.DataFrame:
    """Findings frame (§3 schema, Arrow dtypes) from equal-length arrays or scalars."""
    n = len(seq)
    if n == 0:
        return empty_findings()

    def arr(v, typ):
        if isinstance(v, (pa.Array, pa.ChunkedArray)):
            return v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v
        if isinstance(v, (str, int, np.integer)) or v is None:
            return pa.array([v] * n, typ)
        return pa.array(np.asarray(v) if typ != pa.string() else list(v), typ)

    t = pa.table([
        arr(detector, pa.string()), arr(severity, pa.string()),
        arr(np.asarray(seq, np.int64), pa.int64()), arr(np.asarray(ts, np.int64), pa.int64()),
        arr(np.asarray(cpu, np.int32), pa.int32()), arr(np.asarray(pfn, np.uint64), pa.uint64()),
        arr(np.asarray(block, np.int64), pa.int64()), arr(event, pa.string()),
        arr(np.asarray(printed_mt).astype(np.int8), pa.int8()),
        arr(np.asarray(block_mt).astype(np.int8), pa.int8()),
        arr(explanation, pa.string()),
    ], schema=FINDING_SCHEMA)
    return t.to_pandas(types_mapper=pd.ArrowDtype)


def concat_findings(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return empty_findings()
    tables = [pa.Table.from_pandas(f[FINDING_COLUMNS], schema=FINDING_SCHEMA, preserve_index=False)
              for f in frames]
    t = pa.concat_tables(tables).sort_by([("seq", "ascending"), ("detector", "ascending")])
    return t.to_pandas(types_mapper=pd.ArrowDtype)


@dataclass
class DetectorResult:
    """One detector's findings plus what it looked at and had to skip.

    Typed, so the counts cannot silently vanish the way pandas `DataFrame.attrs` do when a frame
    is copied, sliced or concatenated; `notes` carries detector-specific extras (for the JSON).
    """

    findings: pd.DataFrame
    checked: int = 0
    skipped_unknown: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


def with_stats(df: pd.DataFrame, *, checked: int, skipped_unknown: int, **extra: Any) -> DetectorResult:
    """Pair the findings with what the detector looked at and what it had to skip."""
    notes = {k: int(v) if isinstance(v, (int, np.integer)) else v for k, v in extra.items()}
    return DetectorResult(df, int(checked), int(skipped_unknown), notes)


def _same_cpu_neighbour(ref_cpu: np.ndarray, ref_seq: np.ndarray, q_cpu: np.ndarray,
                        q_seq: np.ndarray, after: bool) -> np.ndarray:
    """Nearest reference row on the query's CPU before (or after) its seq; -1 where none.

    Same-CPU ordering is what tells records of one allocation apart from the
    interleaved records of other CPUs; one sort of a (cpu, seq) key does it for all.
    """
    if len(ref_seq) == 0 or len(q_seq) == 0:
        return np.full(len(q_seq), -1, np.int64)
    rkey = (ref_cpu.astype(np.int64) << 42) | ref_seq.astype(np.int64)
    order = np.argsort(rkey, kind="stable")
    rkey_s = rkey[order]
    qkey = (q_cpu.astype(np.int64) << 42) | q_seq.astype(np.int64)
    if after:
        pos = np.searchsorted(rkey_s, qkey, side="right")
        ok = pos < len(rkey_s)
    else:
        pos = np.searchsorted(rkey_s, qkey, side="left") - 1
        ok = pos >= 0
    cand = order[np.where(ok, pos, 0)]
    idx = np.full(len(q_seq), -1, np.int64)
    same = ok & (ref_cpu[cand].astype(np.int64) == q_cpu.astype(np.int64))
    idx[same] = cand[same]
    return idx


def last_before(ref_cpu: np.ndarray, ref_seq: np.ndarray,
                q_cpu: np.ndarray, q_seq: np.ndarray) -> np.ndarray:
    """Index into the reference rows of the latest row on the same CPU with seq < q_seq (-1: none)."""
    return _same_cpu_neighbour(ref_cpu, ref_seq, q_cpu, q_seq, after=False)


def cma_block_mask(model, blocks: np.ndarray) -> np.ndarray:
    """True for pageblocks inside a CMA area (capture metadata), or ever typed CMA in the model."""
    mask = np.zeros(len(blocks), bool)
    pbo = int(getattr(model, "pageblock_order", 9))
    meta = getattr(model, "meta", None)
    for area in (getattr(meta, "cma_areas", None) or []):
        _, base, count = area
        lo = int(base) >> pbo
        hi = (int(base) + int(count) + (1 << pbo) - 1) >> pbo
        mask |= (blocks >= lo) & (blocks < hi)
    bl = getattr(model, "blocks", None)
    if bl is not None and len(bl):
        ever = np.unique(col(bl, "block", np.int64)[col(bl, "migratetype", np.int8, -1) == MT_CMA])
        mask |= np.isin(blocks, ever)
    return mask


def first_after(ref_cpu: np.ndarray, ref_seq: np.ndarray,
                q_cpu: np.ndarray, q_seq: np.ndarray) -> np.ndarray:
    """Index of the earliest reference row on the same CPU with seq > q_seq (-1: none)."""
    return _same_cpu_neighbour(ref_cpu, ref_seq, q_cpu, q_seq, after=True)




def typed(model, st) -> tuple[np.ndarray, np.ndarray]:
    """(usable, unverified) masks for a BlockState: usable = known, or inferred from evidence."""
    mt = np.asarray(st.mt)
    conf = np.asarray(st.confidence)
    src = np.asarray(st.source)
    codes = [SRC[n] for n in UNVERIFIED_SOURCES]
    seed_only = np.isin(src, codes) & (conf < CONF_KNOWN)
    have = (conf >= CONF_INFERRED) & (mt >= 0)
    return have & ~seed_only, have & seed_only


# -- vectorised explanation text ------------------------------------------------------
# Explanations are built column-wise in Arrow so a trace with 10^5 findings costs
# milliseconds, not a Python f-string per row.
def s_int(a) -> pa.Array:
    """Decimal strings of an integer array."""
    import pyarrow.compute as pc
    return pc.cast(pa.array(np.asarray(a).astype(np.int64)), pa.string())


def s_hex(a) -> pa.Array:
    """'0x...' strings of an unsigned array (16 nibbles computed with numpy, zeros trimmed)."""
    import pyarrow.compute as pc
    v = np.asarray(a).astype(np.uint64)
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nib = ((v[:, None] >> shifts[None, :]) & np.uint64(15)).astype(np.uint8)
    chars = np.frombuffer(b"0123456789abcdef", np.uint8)[nib]
    raw = pa.array(chars.reshape(len(v), 16).view("S16").ravel(), pa.binary(16)).cast(pa.string())
    trimmed = pc.utf8_ltrim(raw, characters="0")
    trimmed = pc.if_else(pc.equal(trimmed, ""), "0", trimmed)
    return pc.binary_join_element_wise("0x", trimmed, "")


def s_mt(a) -> pa.Array:
    """Migratetype names of an int array (the kernels.py table, unknown values as 'mtN')."""
    from ..kernels import MIGRATETYPE_NAMES
    v = np.asarray(a).astype(np.int64)
    uniq = np.unique(v)
    names = np.array([MIGRATETYPE_NAMES.get(int(u), f"mt{int(u)}") for u in uniq], dtype=object)
    return pa.array(names[np.searchsorted(uniq, v)], pa.string())


def s_pick(names_by_code: dict, a) -> pa.Array:
    """Strings for small integer codes (confidence, source) through a lookup table."""
    v = np.asarray(a).astype(np.int64)
    uniq = np.unique(v)
    names = np.array([names_by_code.get(int(u), "?") for u in uniq], dtype=object)
    return pa.array(names[np.searchsorted(uniq, v)] if len(v) else [], pa.string())


def vjoin(*parts) -> pa.Array:
    """Concatenate string arrays and literal strings element-wise."""
    import pyarrow.compute as pc
    n = next(len(p) for p in parts if not isinstance(p, str))
    arrs = [pa.array([p] * n, pa.string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*arrs, "")


def source_table(model=None) -> dict:
    """Source code -> name (the model's one SOURCES table)."""
    return dict(enumerate(SOURCES))


def drain_judgement(model, kernel, d):
    """Per drain: (state, usable, unverified, prints_live, tier), the one judgement S1 and S6 share.

    Kept here, not in either detector, so that neither detector imports the other."""
    seq = col(d, "seq", np.int64)
    pfn = col(d, "pfn", np.uint64)
    st = model.block_type_at(pfn, seq)
    known, unverified = typed(model, st)
    zone_iso = np.asarray(st.zone_isolated, bool)
    prints_live = np.full(len(seq), bool(kernel.live_drain)) | (zone_iso & kernel.drain_rereads_when_isolated)
    return st, known, unverified, prints_live, evidence_tier(model, st, seq)
