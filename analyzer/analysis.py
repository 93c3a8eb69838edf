"""`analyze(trace, meta) -> Analysis`: model + detectors + consistency in one object.

This is the Python API of contracts §3 and what the CLI and the reports read.
It never compares kernel versions itself: the KernelBehavior from
analyzer/kernels.py says what a printed migratetype should mean, and where the kprobe
ground truth allows, analyzer/model/behaviour.py measures what it does mean; records
are judged by the measured behaviour when the two disagree.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .capture import CaptureMeta
from .detectors import MODEL_WARNING_IDS, SEVERITY_RANK, finding_tiers, run_all
from .model.query import REPORTED_TIERS, col
from .kernels import KernelBehavior
from .model import Model
from .model.consistency import Consistency, check as _check_consistency

# of the `--json` document (what `regress` reads): bump when a key changes meaning or goes away
SCHEMA_VERSION = 1
TOP_BLOCKS = 10


# exit statuses of analysis commands
EXIT_CLEAN, EXIT_FINDINGS, EXIT_INCONCLUSIVE = 0, 1, 3


@dataclass
class Analysis:
    meta: CaptureMeta
    kernel: KernelBehavior           # what the records were judged by (table, or observed where they differ)
    model: Model
    findings: pd.DataFrame
    detectors: pd.DataFrame
    consistency: Consistency
    lost: pd.DataFrame
    event_counts: dict = field(default_factory=dict)
    # what the kernel's prints were measured to mean (analyzer/model/behaviour.py)
    behaviour: dict = field(default_factory=dict)
    table_kernel: KernelBehavior | None = None   # what the version table alone said

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
        return f[~f["detector"].astype(str).isin(MODEL_WARNING_IDS)] if len(f) else f

    def evidence(self) -> dict[str, int]:
        """Kernel findings by what their block type rests on: probe / observed / traced / inferred."""
        names = finding_tiers(self.model, self.kernel_findings)
        return {k: int((names == k).sum()) for k in REPORTED_TIERS}

    def not_checked(self) -> list[str]:
        """Detectors that apply but could not run for lack of the events they need."""
        d = self.detectors
        if "status" not in d.columns:
            return []
        return [str(i) for i, s in zip(d["id"], d["status"]) if s == "not checked"]

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
        """1 kernel findings; else 3 when a detector could not check (evidence missing) or the
        kernel is unknown (a clean verdict would rest on the assumed 6.1 semantics); else 0."""
        if len(self.kernel_findings):
            return EXIT_FINDINGS
        if self.not_checked() or getattr(self.kernel, "version", 0) is None:
            return EXIT_INCONCLUSIVE
        return EXIT_CLEAN

    def summary(self, with_rows: bool = True) -> dict:
        """JSON-able dict: what `--json` writes."""
        f = self.findings
        by = f["detector"].astype(str).value_counts().to_dict() if len(f) else {}
        m = self.model
        cons = self.consistency
        out = {
            "tool": "mtaudit",
            "schema_version": SCHEMA_VERSION,
            "capture": _meta_summary(self.meta),
            "kernel": {"release": self.kernel.release,
                       "describe": self.kernel.describe(),
                       "drain_prints": self.kernel.drain_prints,
                       "zone_locked_prints": self.kernel.zone_locked_prints,
                       "table_drain_prints": (self.table_kernel or self.kernel).drain_prints,
                       "judged_by_observed": list(self.kernel.observed),
                       "assumed": list(self.kernel.assumed)},
            "behaviour": _jsonable(self.behaviour),
            "evidence": self.evidence(),
            "not_checked": self.not_checked(),
            "events": {k: int(v) for k, v in self.event_counts.items()},
            "detectors": [_jsonable(r) for r in self.detectors.to_dict("records")],
            "findings": {"total": int(len(f)), "kernel": int(len(self.kernel_findings)),
                         "model_warnings": int(by.get("MW", 0)), "evidence": self.evidence(),
                         "by_detector": {k: int(v) for k, v in sorted(by.items())}},
            "top_blocks": self.top_blocks(),
            "lost_events": self.lost_summary(),
            "consistency": {"available": cons.available, "passed": cons.passed,
                            "exact": cons.exact, "unknown_blocks": cons.unknown_blocks,
                            "unverified_blocks": cons.unverified_blocks,
                            "rows": [_jsonable(r) for r in cons.table.to_dict("records")]},
            "model": {"ground_truth": bool(m.ground_truth),
                      "agreement": _jsonable(m.agreement),
                      "warnings": list(m.warnings),
                      "pageblock_order": int(m.pageblock_order),
                      "blocks_by_confidence": _conf_counts(m.blocks)},
            "exit_status": self.exit_status(),
        }
        if with_rows:
            rows = f.assign(evidence=finding_tiers(m, f)) if len(f) else f
            out["finding_rows"] = [_jsonable(r) for r in rows.to_dict("records")]
            out["block_history"] = [_jsonable(r) for r in m.blocks.to_dict("records")]
            out["isolation_windows"] = [_jsonable(r) for r in m.isolation.to_dict("records")]
        return out


def analyze(trace, meta=None, kernel=None, progress=None, chunk_events: int | None = None) -> Analysis:
    """Build the model of a trace (or capture path) and run every detector on it.

    `trace`: a Trace, or a path to a capture directory / .tar.zst / trace file.
    `meta`: CaptureMeta (None: what the trace alone tells).  `kernel`: KernelBehavior
    (None: from the capture's uname/release).  `progress`: passed to build_model.
    `chunk_events`: analyze by pageblock partitions of about that many records each
    (analyzer/partitioned_analysis.py: memory set by the chunk, not the trace; same result);
    None: do so when the trace has more records than MTAUDIT_CHUNK_EVENTS (default
    partition.DEFAULT_CHUNK_EVENTS); 0: never.
    """
    from .capture import CaptureMeta, check_extents, load_capture
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
    check_extents(meta)   # zones/CMA areas from code too: inside real memory, not 2^52 pageblocks
    if kernel is None:
        kernel = behavior_for(getattr(meta, "kernel_id", None) or getattr(trace.meta, "uname", None)
                              or getattr(trace.meta, "kernel_release", None))
    whole_note = None
    if chunk_events != 0:
        from .partition import chunk_events_default, records_estimate
        limit = chunk_events or chunk_events_default()
        big = not chunk_events and records_estimate(trace) > limit
        if chunk_events or (big and trace.streams):
            from .partitioned_analysis import analyze_partitioned
            return Analysis(**analyze_partitioned(trace, meta, kernel, limit, progress=progress))
        if big:   # measured: partitions over perf.data took 3x the time and more memory than none
            whole_note = (f"more than {limit:,} records, but this reader ({trace.meta.format}) cannot stream: "
                          "analyzed whole, memory grows with the trace (record a trace.dat with "
                          "`mtaudit record --backend tracefs` for bounded memory)")
    from .model.behaviour import effective_modes, measure
    model = build_model(trace, meta, kernel, progress=progress)
    behaviour = measure(model, kernel)
    table_kernel = kernel
    drain, zl = effective_modes(behaviour)
    judged = kernel.with_observed(drain=drain, zone_locked=zl)
    if judged is not kernel:
        # the prints mean what the trace showed: rebuild so that no print of this kernel is
        # taken as evidence of a block type under the table's (wrong) semantics
        model = build_model(trace, meta, judged, progress=progress)
        kernel = judged
    task = progress.add_task("detectors", total=8) if hasattr(progress, "add_task") else None
    findings, detectors = run_all(
        model, kernel, progress=(lambda d: progress.update(task, advance=1, description=f"detector {d}"))
        if task is not None else None)
    cons = model.consistency() if model.meta is meta else _check_consistency(model, meta)
    if whole_note:
        model.warnings.append(whole_note)
    # every reader implements `lost` and `events()` (abstract in readers.base.Trace): an error
    # here is a reader bug and must surface, never read as "no events lost"
    lost = trace.lost_df()
    counts = dict(trace.events())   # the reader's own counts (the model's frames would convert every one)
    return Analysis(meta=meta, kernel=kernel, model=model, findings=findings, detectors=detectors,
                    consistency=cons, lost=lost, event_counts=counts, behaviour=behaviour,
                    table_kernel=table_kernel)


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
