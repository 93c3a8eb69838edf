"""`analyze(trace, meta) -> Analysis`: model + detectors + consistency in one object.

This is the Python API of contracts §3 and what the CLI and the reports read.
It never compares kernel versions itself: the KernelBehavior from
analyzer/kernels.py decides what a printed migratetype means.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .detectors import SEVERITY_RANK, run_all
from .detectors import consistency as _consistency
from .detectors._common import col

TOP_BLOCKS = 10


@dataclass
class Analysis:
    meta: object
    kernel: object
    model: object
    findings: pd.DataFrame
    detectors: pd.DataFrame
    consistency: pd.DataFrame
    lost: pd.DataFrame
    event_counts: dict = field(default_factory=dict)

    # -- §3 frames ---------------------------------------------------------------------
    @property
    def blocks(self) -> pd.DataFrame:
        return self.model.blocks

    @property
    def isolation(self) -> pd.DataFrame:
        return self.model.isolation

    @property
    def kernel_findings(self) -> pd.DataFrame:
        """Findings that claim kernel misbehaviour (everything but model warnings)."""
        f = self.findings
        return f[f["detector"].astype(str) != "MW"] if len(f) else f

    def history(self, pfn: int | None = None, block: int | None = None) -> pd.DataFrame:
        from .narrative import history
        return history(self.model, pfn=pfn, block=block, findings=self.findings)

    def narrative(self, pfn: int) -> list[str]:
        from .narrative import narrative
        return narrative(self.model, pfn, findings=self.findings)

    # -- summaries ---------------------------------------------------------------------
    def top_blocks(self, n: int = TOP_BLOCKS) -> list[dict]:
        f = self.kernel_findings
        if not len(f):
            return []
        blk = col(f, "block", np.int64)
        det = f["detector"].astype(str).to_numpy()
        sev = np.array([SEVERITY_RANK.get(s, 0) for s in f["severity"].astype(str)])
        out = []
        uniq, counts = np.unique(blk, return_counts=True)
        worst = {b: int(sev[blk == b].max()) for b in uniq}
        order = sorted(range(len(uniq)), key=lambda i: (-worst[uniq[i]], -counts[i], uniq[i]))[:n]
        pbo = int(self.model.pageblock_order)
        for i in order:
            b = int(uniq[i])
            ids, c = np.unique(det[blk == b], return_counts=True)
            out.append({"block": b, "start_pfn": hex(b << pbo), "findings": int(counts[i]),
                        "by_detector": {str(k): int(v) for k, v in zip(ids, c)},
                        "zone": _zone_of(self.meta, b)})
        return out

    def lost_summary(self) -> dict:
        """Lost-event windows and how many findings come after one (their evidence may be incomplete)."""
        lost = self.lost
        wins = []
        if lost is not None and len(lost):
            for r in lost.itertuples(index=False):
                wins.append({"cpu": int(r.cpu), "ts_start": int(r.ts_start), "ts_end": int(r.ts_end),
                             "count": int(r.count)})
        after = 0
        if wins and len(self.findings):
            first = min(w["ts_start"] for w in wins)
            after = int((col(self.findings, "ts", np.int64) >= first).sum())
        manifest_lost = dict(getattr(self.meta, "lost_events", {}) or {})
        return {"windows": wins, "total": int(sum(max(w["count"], 0) for w in wins)),
                "manifest": manifest_lost, "findings_after_first_loss": after,
                "effect": ("events lost: a retype or pcp stay may be missing after the first loss, so "
                           "findings after it have lowered confidence" if wins or any(manifest_lost.values())
                           else "no events lost")}

    def exit_status(self) -> int:
        return 1 if len(self.kernel_findings) else 0

    def summary(self, with_rows: bool = True) -> dict:
        """JSON-able dict: what `--json` writes."""
        f = self.findings
        by = f["detector"].astype(str).value_counts().to_dict() if len(f) else {}
        m = self.model
        cons = self.consistency
        out = {
            "tool": "mtaudit",
            "capture": _meta_summary(self.meta),
            "kernel": {"release": getattr(self.kernel, "release", None),
                       "describe": self.kernel.describe() if hasattr(self.kernel, "describe") else None,
                       "drain_prints": getattr(self.kernel, "drain_prints", None),
                       "assumed": list(getattr(self.kernel, "assumed", []) or [])},
            "events": {k: int(v) for k, v in self.event_counts.items()},
            "detectors": [_jsonable(r) for r in self.detectors.to_dict("records")],
            "findings": {"total": int(len(f)), "kernel": int(len(self.kernel_findings)),
                         "model_warnings": int(by.get("MW", 0)),
                         "by_detector": {k: int(v) for k, v in sorted(by.items())}},
            "top_blocks": self.top_blocks(),
            "lost_events": self.lost_summary(),
            "consistency": {"available": cons.attrs.get("available"), "passed": cons.attrs.get("passed"),
                            "exact": cons.attrs.get("exact"), "unknown_blocks": cons.attrs.get("unknown_blocks"),
                            "unverified_blocks": cons.attrs.get("unverified_blocks"),
                            "rows": [_jsonable(r) for r in cons.to_dict("records")]},
            "model": {"ground_truth": bool(getattr(m, "ground_truth", False)),
                      "agreement": _jsonable(getattr(m, "agreement", None)),
                      "warnings": list(getattr(m, "warnings", []) or []),
                      "pageblock_order": int(m.pageblock_order),
                      "blocks_by_confidence": _conf_counts(m.blocks)},
            "exit_status": self.exit_status(),
        }
        if with_rows:
            out["finding_rows"] = [_jsonable(r) for r in f.to_dict("records")]
            out["block_history"] = [_jsonable(r) for r in m.blocks.to_dict("records")]
            out["isolation_windows"] = [_jsonable(r) for r in m.isolation.to_dict("records")]
        return out


def analyze(trace, meta=None, kernel=None, progress=None) -> Analysis:
    """Build the model of a trace (or capture path) and run every detector on it.

    `trace`: a Trace, or a path to a capture directory / .tar.zst / trace file.
    `meta`: CaptureMeta (None: what the trace alone tells).  `kernel`: KernelBehavior
    (None: from the capture's uname/release).  `progress`: passed to build_model.
    """
    from .capture import CaptureMeta, load_capture
    from .kernels import behavior_for
    from .model import build_model
    if isinstance(trace, (str, os.PathLike)):
        trace, meta2 = load_capture(trace)
        meta = meta or meta2
    if meta is None:
        meta = CaptureMeta(source=getattr(trace.meta, "path", "?"), kind="trace")
        meta.kernel_release = getattr(trace.meta, "kernel_release", None)
        meta.uname = getattr(trace.meta, "uname", None)
        meta.unknowns.append("no capture metadata: zones, CMA areas and pagetypeinfo unknown")
    if kernel is None:
        kernel = behavior_for(getattr(meta, "kernel_id", None) or getattr(trace.meta, "uname", None)
                              or getattr(trace.meta, "kernel_release", None))
    model = build_model(trace, meta, kernel, progress=progress)
    if getattr(model, "meta", None) is None:
        try:
            model.meta = meta
        except AttributeError:
            pass
    task = progress.add_task("detectors", total=6) if hasattr(progress, "add_task") else None
    findings, detectors = run_all(
        model, kernel, progress=(lambda d: progress.update(task, advance=1, description=f"detector {d}"))
        if task is not None else None)
    cons = _consistency.check(model, meta)
    try:
        lost = trace.lost_df()
    except Exception:   # a reader without loss information
        lost = pd.DataFrame(columns=["cpu", "ts_start", "ts_end", "count"])
    try:   # the reader's own counts: asking the model's frames would convert every one of them
        counts = dict(trace.events())
    except Exception:
        counts = {}
    return Analysis(meta=meta, kernel=kernel, model=model, findings=findings, detectors=detectors,
                    consistency=cons, lost=lost, event_counts=counts)


# ------------------------------------------------------------------------------ helpers
def _zone_of(meta, block: int):
    f = getattr(meta, "zone_of_block", None)
    return f(block) if f else None


def _meta_summary(meta) -> dict:
    if hasattr(meta, "summary"):
        return _jsonable(meta.summary())
    return {}


def _conf_counts(blocks: pd.DataFrame) -> dict:
    if blocks is None or len(blocks) == 0:
        return {}
    return {str(k): int(v) for k, v in blocks["confidence"].astype(str).value_counts().items()}


def _jsonable(x):
    """Plain JSON types from numpy/pandas/Arrow scalars and containers."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if np.isnan(x) else float(x)
    try:
        if pd.isna(x):
            return None
    except (TypeError, ValueError):
        pass
    return str(x)
