"""`analyze()` of a big trace one pageblock partition at a time: peak memory set by the chunk size.

The trace is planned and spilled into per-partition files (analyzer/partition.py), the model
is built per partition and merged (analyzer/model/partitioned.py), then every partition is
read once more to measure the kernel's prints (model/behaviour.py: counts that add up) and,
after a rebuild when the prints are judged by the observed semantics, once more for the
detectors.  Each partition's detectors see a view of the merged model: the whole history
(block types, zone isolation, windows) with the partition's own records and pcp stays, and
the whole trace's allocation/zone_locked/fallback records for the same-CPU look-ups of S2
and S4 (`Model.cpu_events`: a few columns of three events).  Their results add up: findings
are concatenated and sorted like run_all's, counts summed; S3's lost CMA blocks and A1 (the
/proc snapshots) are judged once on the merged model.

What a partitioned Analysis holds of the per-event frames (`model.events`, `model.residency`):
the records and pcp stays of the pages inside a CMA area or an isolation window (what the CMA
report, its busy pages' stories and `history` of such a page read) and every record of the
shared events (cma_*, test_pages_isolated, print, ...); not the rest, so `history` of another
page and the residency export need an unpartitioned run.  Everything `--json`, the console and
the HTML summary read is there and equal to the unpartitioned analysis.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from .detectors import ALL, DetectorResult, assemble, empty_findings
from .detectors import s3_cma_escape
from .detectors._common import concat_findings
from .model import Model, _LazyFrames, _mt_at
from .model import partitioned as mp
from .model.behaviour import drain_counts, effective_modes, measure, zone_locked_counts
from .model.events import MODEL_EVENTS, Table
from .model.query import col
from .model.pcp import pair, residency
from .partition import PartitionTrace, plan, spill, spill_dir

# columns of the whole trace the detectors' same-CPU look-ups read (S2, S4)
CPU_COLUMNS = {"mm_page_alloc": ("seq", "cpu"),
               "mm_page_alloc_zone_locked": ("seq", "cpu", "pfn"),
               "mm_page_alloc_extfrag": ("seq", "cpu", "pfn", "fallback_order", "alloc_migratetype")}
# detector notes that say something of the kernel, not a count: equal in every partition
_NOT_COUNTS = ("known_cause_present",)
_GLOBAL = ("A1",)        # detectors that read the capture, not records: run once


def _view(model: Model, pt: PartitionTrace, meta, kernel, refill: np.ndarray,
          cpu_events: Mapping | None) -> tuple[Model, dict[str, Table]]:
    base, kp = mp._read(pt, meta)
    stays = pair(base, kernel, meta.pageblock_order, refill)
    tl = model.timeline
    assert tl is not None
    res = residency(stays, lambda pfn, seq: _mt_at(tl, pfn, seq, meta.pageblock_order))
    ev = {**base, **kp}
    return replace(model, events=_LazyFrames(ev), residency=res, partition_local=True, cpu_events=cpu_events), ev


def _ranges(meta, windows) -> tuple[np.ndarray, np.ndarray]:
    """Sorted disjoint [lo, hi) pfn ranges of the CMA areas and isolation windows."""
    lo = [int(b) for _, b, _n in meta.cma_areas] + [int(x) for x in windows.start_pfn]
    hi = [int(b) + int(n) for _, b, n in meta.cma_areas] + [int(x) for x in windows.end_pfn]
    if not lo:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    o = np.argsort(lo, kind="stable")
    out_lo: list[int] = []
    out_hi: list[int] = []
    for a, b in zip(np.asarray(lo)[o].tolist(), np.asarray(hi)[o].tolist()):
        if out_hi and a <= out_hi[-1]:
            out_hi[-1] = max(out_hi[-1], b)
        else:
            out_lo.append(a)
            out_hi.append(b)
    return np.asarray(out_lo, np.int64), np.asarray(out_hi, np.int64)


def _touches(pfn: np.ndarray, order: np.ndarray | None, rng: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Rows whose pages [pfn, pfn + 2^order) meet one of the ranges."""
    lo, hi = rng
    if not len(lo):
        return np.zeros(len(pfn), bool)
    o = np.clip(order, 0, 40) if order is not None else np.zeros(len(pfn), np.int64)
    end = pfn + np.left_shift(np.int64(1), o.astype(np.int64))
    j = np.searchsorted(lo, end, side="left") - 1
    return (pfn >= 0) & (j >= 0) & (hi[np.maximum(j, 0)] > pfn)


def _kept(ev: dict[str, Table], res, rng, routed_short: set[str], first: bool):
    """The records and pcp stays of the pages in `rng`; shared tables whole (from the first partition)."""
    out: dict[str, pa.Table] = {}
    for k, t in ev.items():
        if k in routed_short or k.startswith("kprobe:"):     # ground-truth probes: per pfn (partition.routed_events)
            if len(t) and t.has("pfn"):
                m = _touches(t["pfn"], t["order"] if t.has("order") else None, rng)
                out[k] = t.arrow.filter(pa.array(m))
            else:
                out[k] = t.arrow
        elif first:
            out[k] = t.arrow
    r = None
    if res is not None and len(res):
        m = _touches(col(res, "pfn", np.uint64).view(np.int64), col(res, "order", np.int64), rng)
        r = res[m]
    return out, r


def _add(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict):
        return {k: _add(a.get(k), b.get(k)) for k in a.keys() | b.keys()}
    if isinstance(a, tuple):
        return tuple(x + y for x, y in zip(a, b))
    return a + b


def _merge_results(results: list[DetectorResult]) -> DetectorResult:
    notes: dict[str, Any] = {}
    for r in results:
        for k, v in r.notes.items():
            if k not in notes:
                notes[k] = v
            elif k not in _NOT_COUNTS and isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                notes[k] = notes[k] + v
    frames = [r.findings for r in results if len(r.findings)]
    return DetectorResult(concat_findings(frames) if frames else empty_findings(),
                          sum(r.checked for r in results), sum(r.skipped_unknown for r in results), notes)


class _Steps:
    """Progress on a rich Progress (or nothing): plan, spill, then each partition of each pass."""

    def __init__(self, progress):
        self.p = progress if hasattr(progress, "add_task") else None
        self.task = self.p.add_task("partitions: plan", total=None) if self.p is not None else None

    def __call__(self, what: str, total: int | None = None) -> None:
        if self.p is not None:
            self.p.update(self.task, description=f"partitions: {what}", completed=0, total=total)

    def advance(self) -> None:
        if self.p is not None:
            self.p.update(self.task, advance=1)


def analyze_partitioned(trace, meta, kernel, chunk_events: int, tmpdir: str | None = None,
                        stats: dict | None = None, progress=None) -> dict[str, Any]:
    """The fields of the Analysis of `trace` (analysis.Analysis(**this)), with at most about
    `chunk_events` per-pfn records in memory at once.

    `stats`, when given, receives what was held (partitions, peak records of a partition)."""
    pbo = meta.pageblock_order
    step = _Steps(progress)
    p = plan(trace, pbo, chunk_events)
    with spill_dir(tmpdir) as d:
        step(f"spilling {p.k} partitions")
        sp = spill(trace, p, d)
        traces = [PartitionTrace(trace, sp, i) for i in range(p.k)]
        ranges = [p.block_range(i) for i in range(p.k)]
        refill = [t.refill_seqs for t in traces]          # read when a partition is built
        step("survey", p.k)
        surveys = []
        peak = 0
        for t in traces:
            surveys.append(mp.survey(t, meta, kernel))
            peak = _peak(t, peak)
            step.advance()
        facts = mp.combine(surveys, meta, mp.shared_tables(set(p.routed)))
        del surveys
        step("models", p.k)
        model = _build(traces, meta, kernel, facts, ranges, refill, step)
        # the kernel's prints, measured over every partition; the whole trace's look-up columns
        dc = zc = None
        cpu_parts: dict[str, list[pa.Table]] = {k: [] for k in CPU_COLUMNS}
        step("kernel prints", p.k)
        for i, t in enumerate(traces):
            view, ev = _view(model, t, meta, kernel, refill[i](), None)
            dc, zc = _add(dc, drain_counts(view)), _add(zc, zone_locked_counts(view))
            for k, cols in CPU_COLUMNS.items():
                tab = ev[k]
                if len(tab) and all(tab.has(c) for c in cols):
                    cpu_parts[k].append(tab.arrow.select(list(cols)))
            del view, ev
            peak = _peak(t, peak)
            step.advance()
        behaviour = measure(model, kernel, (dc, zc))
        table_kernel = kernel
        drain, zl = effective_modes(behaviour)
        judged = kernel.with_observed(drain=drain, zone_locked=zl)
        if judged is not kernel:
            step("models (observed semantics)", p.k)
            model = _build(traces, meta, judged, facts, ranges, refill, step)
            kernel = judged
        cpu_events = _LazyFrames({k: Table(k, pa.concat_tables(v).sort_by("seq")) for k, v in cpu_parts.items() if v})
        del cpu_parts
        per: dict[str, list[DetectorResult]] = {m.INFO.id: [] for m in ALL}
        present: set[str] = set()
        step("detectors", p.k)
        rng = _ranges(meta, facts.windows)
        routed_short = {k for k, full in MODEL_EVENTS.items() if full in p.routed}
        kept_ev: list[dict[str, pa.Table]] = []
        kept_res = []
        for i, t in enumerate(traces):
            view, ev = _view(model, t, meta, kernel, refill[i](), cpu_events)
            present |= {k for k, tab in ev.items() if len(tab)}
            kev, kres = _kept(ev, view.residency, rng, routed_short, i == 0)
            kept_ev.append(kev)
            if kres is not None:
                kept_res.append(kres)
            for mod in ALL:
                if mod.INFO.id not in _GLOBAL and mod.applies(kernel):
                    per[mod.INFO.id].append(mod.detect(view, kernel))
            del view, ev
            peak = _peak(t, peak)
            step.advance()
        results = []
        for mod in ALL:
            info = mod.INFO
            applies = bool(mod.applies(kernel))
            miss = [n for n in info.needs if n not in present] if applies else []
            if applies and info.needs_any and not any(n in present for n in info.needs_any):
                miss.append(" or ".join(info.needs_any))
            if not applies or miss:
                res = DetectorResult(empty_findings())
            elif info.id in _GLOBAL:
                res = mod.detect(model, kernel)
            else:
                res = _merge_results(per[info.id])
                if mod is s3_cma_escape:
                    lost = s3_cma_escape._lost_blocks(model)
                    if len(lost):
                        res.findings = concat_findings([res.findings, lost])
            results.append((applies, miss, res))
        model = replace(model, cpu_events=None, events=_LazyFrames(_concat_kept(kept_ev)),
                        residency=mp._merge_residency(kept_res))
        del kept_ev, kept_res
        findings, detectors = assemble(model, results)
    if stats is not None:
        stats.update(partitions=p.k, peak_partition_records=peak, plan_events=p.total_events,
                     spill_peak_batch=sp.peak_batch_rows)
    cons = model.consistency()
    import pandas as pd
    lost_df = (sp.lost if sp.lost is not None else trace.lost).to_pandas(types_mapper=pd.ArrowDtype)
    counts = sp.event_counts()       # trace.events() would index a trace.dat in memory
    return dict(meta=meta, kernel=kernel, model=model, findings=findings, detectors=detectors,
                consistency=cons, lost=lost_df, event_counts=counts, behaviour=behaviour, table_kernel=table_kernel)


def _concat_kept(parts: list[dict[str, pa.Table]]) -> dict[str, Table]:
    out: dict[str, Table] = {}
    for k in parts[0] if parts else {}:
        tabs = [p[k] for p in parts if k in p]
        tabs = [x for x in tabs if x.num_rows] or tabs[:1]   # an empty one keeps the untranslated schema
        t = pa.concat_tables(tabs) if len(tabs) > 1 else tabs[0]
        out[k] = Table(k, t.sort_by("seq") if t.num_rows > 1 else t)
    return out


def _peak(t: PartitionTrace, peak: int) -> int:
    """The most records one partition handed out in one pass (its counter restarts)."""
    peak = max(peak, t.rows_loaded)
    t.rows_loaded = 0
    return peak


def _build(traces, meta, kernel, facts, ranges, refill, step) -> Model:
    parts = []
    for i, t in enumerate(traces):
        m = mp.build_model(t, meta, kernel, glob=mp.part_facts(facts, i, len(traces), ranges[i], refill[i]()))
        parts.append(mp.keep(m, mp.part_facts(facts, i, len(traces), ranges[i], None)))
        del m
        t.rows_loaded = 0
        step.advance()
    return mp.merge(parts, facts, meta, kernel, facts.windows)
