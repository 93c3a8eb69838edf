"""Where a cma_alloc() call's time went, from record timestamps.

The tracepoints bracket an alloc_contig_range() attempt only loosely: cma_alloc_start (or the
previous busy retry), mm_alloc_contig_migrate_range_info (end of migration, 6.9 .. 6.16),
test_pages_isolated, then busy_retry / finish.  Where the set_pfnblock_flags_mask kprobe is in
the capture, its last Isolate write on the attempt's blocks marks the end of the isolation step,
so isolation and migration are told apart on kernels without the migrate-range event too.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels import ISOLATE
from .calls import Attempt, Call, column

KPROBE_TYPE = ("flags", "mt", "migratetype")


class IsolateWrites:
    """The kprobe's Isolate writes (pfn, seq, ts), sorted by seq."""

    def __init__(self, model: Any):
        pfn, seq, ts = [], [], []
        for name, df in (getattr(model, "events", None) or {}).items():
            if not str(name).startswith("kprobe:") or df is None or not len(df) or "pfn" not in df.columns:
                continue
            field = next((f for f in KPROBE_TYPE if f in df.columns), None)
            if field is None:
                continue
            ok = (column(df, field, np.int64, -1) & 7) == ISOLATE
            if "mask" in df.columns:
                ok &= column(df, "mask", np.int64, 0) == 7
            pfn.append(column(df, "pfn", np.uint64, 0).view(np.int64)[ok])
            seq.append(column(df, "seq", np.int64, -1)[ok])
            ts.append(column(df, "ts", np.int64, 0)[ok])
        self.pfn = np.concatenate(pfn) if pfn else np.zeros(0, np.int64)
        self.seq = np.concatenate(seq) if seq else np.zeros(0, np.int64)
        self.ts = np.concatenate(ts) if ts else np.zeros(0, np.int64)

    def last(self, lo: int, hi: int, after_seq: int, before_seq: int) -> int | None:
        """ts of the last Isolate write on [lo, hi) between the two records, or None."""
        if not len(self.seq):
            return None
        m = (self.pfn >= lo) & (self.pfn < hi) & (self.seq > after_seq) & (self.seq < before_seq)
        return int(self.ts[m].max()) if m.any() else None


def split(c: Call, iso: IsolateWrites, pbo: int) -> list[dict]:
    """[{phase, ns}] for the call: failed attempts whole, the last attempt step by step."""
    out: list[dict] = []
    for a in c.attempts:
        if a.outcome == "busy":
            out.append({"phase": f"failed attempt at 0x{a.pfn:x}", "ns": a.end_ts - a.start_ts})
            continue
        out += _steps(c, a, iso, pbo)
    if c.kind == "cma" and c.complete and not c.attempts:
        out.append({"phase": "bitmap search (no range tried)", "ns": c.end_ts - c.start_ts})
    return [x for x in out if x["ns"] >= 0]


def _steps(c: Call, a: Attempt, iso: IsolateWrites, pbo: int) -> list[dict]:
    marks = sorted([(m.ts, m.seq, "mri") for m in a.migrate] + [(t.ts, t.seq, "tpi") for t in a.tests])
    out: list[dict] = []
    prev, last_kind = a.start_ts, "start"
    if c.kind == "cma" and marks:
        lo, hi = a.isolated(pbo)
        done = iso.last(lo, hi, a.start_seq, marks[0][1])
        if done is not None:
            out.append({"phase": "isolation (last Isolate write, kprobe)", "ns": done - prev})
            prev, last_kind = done, "isolated"
    for ts, _seq, kind in marks:
        if kind == "mri":
            label = "migration" if last_kind == "isolated" else "isolation + migration"
        elif last_kind == "mri":
            label = "pcp drain + isolation test"
        elif last_kind == "isolated":
            label = "migration + isolation test"
        else:
            label = "isolation + migration + isolation test"
        out.append({"phase": label, "ns": ts - prev})
        prev, last_kind = ts, kind
    if c.kind == "cma":
        out.append({"phase": "after the test (take the range off the freelists, prepare the pages, restore the blocks)",
                    "ns": a.end_ts - prev})
    return out
