"""Detectors S1-S6 and A1: each flags records whose printed migratetype contradicts the model
(or, A1, free-page counters that contradict the freelists).

One module per observable signature, each with `INFO` (a registry.DetectorInfo: id, meaning,
kernels, severity, order, finding ids with their plot markers, the model events it needs),
`applies(kernel)` and `detect(model, kernel) -> DetectorResult` (the findings frame with what
the detector checked and skipped).  `ALL` is the registry, in report order; the console, JSON, HTML, plots and `--help` read it.  `run_all` runs it and also returns
the per-detector table: status ("checked", "not checked" when the events it needs are absent,
"not applicable" for this kernel, or the detector's own `status_without_input`, e.g. A1's "no
snapshots"), counts, and what the findings rest on (evidence tiers).
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import pandas as pd

from ..kernels import KernelBehavior
from ..model.query import ModelView

from . import (a1_accounting, s1_pcp_drain, s2_freelist, s3_cma_escape, s4_thp_pcp, s5_isolation_leak,
               s6_isolate_race)
from ._common import (FINDING_COLUMNS, DetectorResult, REPORTED_TIERS, SEVERITY_RANK, TIER_NAMES, col, concat_findings,
                      empty_findings, evidence_tier)
from .registry import MODEL_WARNING, DetectorInfo, FindingKind


class Detector(Protocol):
    """What a detector module provides (contracts section 2b)."""

    INFO: DetectorInfo

    def applies(self, kernel: KernelBehavior) -> bool: ...

    def detect(self, model: ModelView, kernel: KernelBehavior) -> DetectorResult: ...


_MODULES: list[Detector] = [s1_pcp_drain, s2_freelist, s3_cma_escape, s4_thp_pcp, s5_isolation_leak,
                            s6_isolate_race, a1_accounting]
ALL: list[Detector] = sorted(_MODULES, key=lambda m: m.INFO.order)

__all__ = ["ALL", "run_all", "DetectorResult", "FINDING_COLUMNS", "SEVERITY_RANK", "MODEL_WARNING_IDS", "missing_events",
           "infos", "finding_kinds", "report_order", "DetectorInfo", "FindingKind", "MODEL_WARNING"]

# Detector ids that mean "the model is unsure", not "the kernel misbehaved".
MODEL_WARNING_IDS = (MODEL_WARNING.id,)


def infos() -> list[DetectorInfo]:
    """Every detector's declaration in report order, the model-warning pseudo-detector last."""
    return [m.INFO for m in ALL] + [MODEL_WARNING]


def finding_kinds() -> list[FindingKind]:
    """Every finding id (S1a, S1b, S2, ..., MW) with its plot marker, in report order."""
    return [k for i in infos() for k in i.findings]


def report_order() -> list[str]:
    """Detector ids and their finding ids in report order: S1, S1a, S1b, S2, ..., A1, MW."""
    out: list[str] = []
    for i in infos():
        out += [i.id] + [k.id for k in i.findings if k.id != i.id]
    return out


def _check_registry() -> None:
    """Ids and markers are unique: a clash would merge two detectors in the reports."""
    ids = report_order()
    marks = [k.marker for k in finding_kinds()]
    if len(set(ids)) != len(ids) or len(set(marks)) != len(marks):
        raise RuntimeError(f"detector registry: duplicate ids or markers: {ids} {marks}")


_check_registry()
# Finding events that are not about one page's block (no evidence tier to look up).
_NO_BLOCK_EVENTS = ("accounting:",)


def missing_events(mod: Detector, model: ModelView) -> list[str]:
    """The events `mod` needs that the trace does not have (empty: it can run)."""
    ev = getattr(model, "events", None) or {}

    def present(name: str) -> bool:
        return name in ev and ev[name] is not None and len(ev[name]) > 0
    miss = [n for n in mod.INFO.needs if not present(n)]
    anyof = list(mod.INFO.needs_any)
    if anyof and not any(present(n) for n in anyof):
        miss.append(" or ".join(anyof))
    return miss


def run_all(model: ModelView, kernel: KernelBehavior,
            progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(findings, detectors table).  A detector that does not apply, or lacks its events, is not run."""
    results = []
    for mod in ALL:
        applies = bool(mod.applies(kernel))
        miss = missing_events(mod, model) if applies else []
        res = mod.detect(model, kernel) if applies and not miss else DetectorResult(empty_findings())
        if progress is not None:
            progress(mod.INFO.id)
        results.append((applies, miss, res))
    return assemble(model, results)


def assemble(model: ModelView, results: list[tuple[bool, list[str], DetectorResult]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(findings, detectors table) from each detector's (applies, missing events, result), in ALL order.

    Apart from run_all, the pageblock-partition driver (analyzer/partitioned_analysis.py) calls
    it with results merged over its partitions."""
    frames, rows = [], []
    for mod, (applies, miss, res) in zip(ALL, results):
        info = mod.INFO
        df = res.findings
        frames.append(df)
        ids = df["detector"].astype(str).value_counts().to_dict() if len(df) else {}
        tiers = _tiers(model, df)
        notes = dict(res.notes)
        if not applies:
            status = "not applicable"
        elif miss:
            status = "not checked"
            notes["missing_events"] = miss
        elif info.status_without_input and not res.checked:
            status = info.status_without_input
        else:
            status = "checked"
        rows.append({
            "id": info.id, "meaning": info.meaning, "kernels": info.kernels, "applies": applies,
            "status": status,
            "count": int(sum(v for k, v in ids.items() if k not in MODEL_WARNING_IDS)),
            "severity": info.severity,
            "subcounts": {k: int(v) for k, v in sorted(ids.items())},
            "checked": res.checked,
            "skipped_unknown": res.skipped_unknown,
            "on_known": tiers["probe"] + tiers["observed"] + tiers["traced"], "on_inferred": tiers["inferred"],
            "evidence": tiers,
            "notes": notes,
        })
    findings = concat_findings(frames)
    mw_id = MODEL_WARNING.id
    mw = int((findings["detector"] == mw_id).sum()) if len(findings) else 0
    rows.append({"id": mw_id, "meaning": MODEL_WARNING.meaning,
                 "kernels": MODEL_WARNING.kernels, "applies": True, "status": "checked",
                 "count": mw, "severity": MODEL_WARNING.severity, "subcounts": {mw_id: mw}, "checked": 0,
                 "skipped_unknown": 0, "on_known": None, "on_inferred": None, "evidence": None, "notes": {}})
    table = pd.DataFrame(rows)
    for c in ("on_known", "on_inferred"):
        table[c] = pd.array(table[c].tolist(), dtype="Int64")
    return findings, table


def finding_tiers(model: ModelView, df: pd.DataFrame) -> np.ndarray:
    """Evidence tier name of each finding row ("" for findings not about a block)."""
    out = np.full(len(df), "", dtype=object)
    if not len(df):
        return out
    ev = df["event"].astype(str).to_numpy()
    about_block = ~np.array([e.startswith(_NO_BLOCK_EVENTS) for e in ev], bool)
    if not about_block.any():
        return out
    sel = np.flatnonzero(about_block)
    pfn = col(df, "pfn", np.uint64)[sel]
    seq = col(df, "seq", np.int64)[sel]
    # block-lost rows are stamped at the retype record itself: the state *after* it counts
    lost = ev[sel] == "cma-block-lost"
    seq_q = np.where(lost, seq + 1, seq)
    st = model.block_type_at(pfn, seq_q)
    t = evidence_tier(model, st, seq_q)
    out[sel] = [TIER_NAMES[int(x)] for x in t]
    return out


def _tiers(model: ModelView, df: pd.DataFrame) -> dict[str, int]:
    """Kernel findings of one detector by what their block type rests on."""
    out = {k: 0 for k in REPORTED_TIERS}
    if not len(df):
        return out
    keep = (~df["detector"].astype(str).isin(MODEL_WARNING_IDS)).to_numpy()
    names = finding_tiers(model, df[keep])
    for k in REPORTED_TIERS:
        out[k] = int((names == k).sum())
    return out
