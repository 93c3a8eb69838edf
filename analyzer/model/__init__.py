"""The pageblock model: per-block migratetype history, isolation windows, pcp residency.

`build_model(trace, meta, kernel)` implements docs/contracts.md section 2b.  Two
histories are built from the same events:

* the tracepoint-only inference (what any trace allows, infer.py), and
* when the `set_pfnblock_flags_mask` kprobe is in the trace, the ground-truth history:
  inference up to the moment the kprobe went live, every kprobe write after it.

`Model.blocks` is the ground-truth history when there is one, else the inference;
`Model.agreement` says how often the inference was right where it claimed anything.

Modules: events.py (read once, numpy columns), isolation.py (windows from cma_* /
test_pages_isolated / migrate_range_info), infer.py (assertion rows and the confidence
policy), timeline.py (vectorised resolution into intervals, lookups, agreement), pcp.py
(pcp stays), synthetic.py (an in-memory Trace for unit tests).

Sources of a block's type (`SOURCES`): boot (MOVABLE default), cma-reserve, kprobe,
extfrag (change_ownership=1), isolation / restore (windows), drain-observed /
zone-locked-observed (a live type printed by >= 6.10, or a 6.1 drain printing ISOLATE),
free-observed (6.1: a drained page freed to pcp prints its block's type at free time),
backfill (the first revealed type carried back to the trace start when nothing traced
changed the block before).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from ..capture import CaptureMeta
from ..kernels import ISOLATE, MOVABLE, KernelBehavior
from ..readers.base import Trace
from . import infer
from .events import Table, kprobe_marker_seq, read_events
from .groundtruth import translate_tracepoints, unify
from .isolation import Windows, find_windows, offlined_spans
from .pcp import pair as _pair, residency as _residency
from .timeline import CONF_NAMES, INFERRED, KNOWN, SOURCES, UNKNOWN, Rows, Timeline, agreement

if TYPE_CHECKING:
    from .consistency import Consistency

__all__ = ["build_model", "Model", "BlockState", "SOURCES"]


@dataclass
class BlockState:
    """Vectorised answer of `Model.block_type_at` (one entry per query)."""

    mt: np.ndarray             # int8, -1 unknown
    confidence: np.ndarray     # int8: 2 known, 1 inferred, 0 unknown
    source: np.ndarray         # int8 code into SOURCES (-1 outside the model)
    isolated: np.ndarray       # bool
    zone_isolated: np.ndarray  # bool
    block: np.ndarray          # int64
    guess: np.ndarray          # int8: the type last set even where confidence is unknown


class _LazyFrames(Mapping):
    """events: short name -> DataFrame, converted from Arrow only when asked for."""

    def __init__(self, tables: dict[str, Table]):
        self._t = {k: v for k, v in tables.items()}
        self._df: dict[str, pd.DataFrame] = {}

    def __getitem__(self, key: str) -> pd.DataFrame:
        if key not in self._df:
            self._df[key] = self._t[key].df()
        return self._df[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)


@dataclass
class Model:
    blocks: pd.DataFrame
    isolation: pd.DataFrame
    residency: pd.DataFrame
    ground_truth: bool
    agreement: dict | None
    warnings: list[str]
    pageblock_order: int
    trace_end_ts: int
    events: Mapping
    # extras
    trace_start_ts: int = 0
    trace_end_seq: int = 0
    kernel: KernelBehavior | None = None
    meta: CaptureMeta | None = None
    timeline: Timeline | None = None            # the history `blocks` shows
    inference: Timeline | None = None           # tracepoint-only history
    inference_blocks: pd.DataFrame | None = None
    kprobe_live_seq: int | None = None
    kprobe_live_ts: int | None = None
    zone_names: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    # (block, from_seq, to_seq): ISOLATE but offlined, not in nr_isolate_pageblock (isolation.offlined_spans)
    offlined: tuple[np.ndarray, np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, np.int64),) * 3)
    # a view of one pageblock partition (analyzer/partitioned_analysis.py): `events` and
    # `residency` hold its blocks' records only, `cpu_events` the whole trace's records the
    # detectors' same-CPU look-ups need
    partition_local: bool = False
    cpu_events: Mapping | None = None
    # id(timeline) -> zone index -> (sorted ISOLATE start seqs, sorted end seqs): zone_isolated's cache
    _iso: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict, repr=False)
    _ctx: infer.Context | None = field(default=None, repr=False)

    # -- lookups -----------------------------------------------------------------
    def block_type_at(self, pfn: np.ndarray, seq: np.ndarray, use: str = "model",
                      zone_isolated: bool = True) -> BlockState:
        """State just before the record with `seq` (use="inference" for the tracepoint-only view).

        zone_isolated=False skips that column (all False) when the caller does not need it.
        """
        tl = self.timeline if use == "model" else self.inference
        pfn = np.asarray(pfn).astype(np.uint64).view(np.int64)
        seq = np.asarray(seq, dtype=np.int64)
        block = pfn >> self.pageblock_order
        i = tl.at(block, seq)
        ok = i >= 0
        ii = np.maximum(i, 0)
        n = len(tl.mt)       # an empty history answers "unknown" (and has no row 0 to index)
        mt = np.where(ok, tl.mt[ii], -1).astype(np.int8) if n else np.full(len(block), -1, np.int8)
        guess = np.where(ok, tl.guess[ii], -1).astype(np.int8) if n else mt.copy()
        conf = np.where(ok, tl.conf[ii], 0).astype(np.int8) if n else np.zeros(len(block), np.int8)
        src = np.where(ok, tl.src[ii], -1).astype(np.int8) if n else mt.copy()
        zi = self._zone_isolated(tl, block, seq) if zone_isolated else np.zeros(len(block), dtype=bool)
        return BlockState(mt, conf, src, guess == ISOLATE, zi, block, guess)

    def _context(self) -> infer.Context:
        """The build's block/zone context; a Model assembled by hand has none to ask."""
        if self._ctx is None:
            raise RuntimeError("Model built without its inference context: zone isolation is unknown")
        return self._ctx

    def _zone_isolated(self, tl: Timeline, block: np.ndarray, seq: np.ndarray) -> np.ndarray:
        """Whether the zone counts an isolated pageblock (nr_isolate_pageblock > 0) before `seq`.

        Offlined blocks stay ISOLATE but are not counted (`offlined`): each such span is
        an "end" at its start and a "start" at its end in the running count."""
        key = id(tl)
        if key not in self._iso:
            ends = tl.end_seq(self.trace_end_seq)
            sel = np.flatnonzero(tl.guess == ISOLATE)
            a_b, a_s, a_e = tl.block[sel], tl.start_seq[sel], ends[sel]
            if tl is self.timeline and len(self.offlined[0]):
                ob, os_, oe = self.offlined
                oe = np.where(oe < 0, self.trace_end_seq, oe)
                a_b = np.concatenate([a_b, ob])
                a_s, a_e = np.concatenate([a_s, oe]), np.concatenate([a_e, os_])
            z = self._context().zone_index(a_b)
            self._iso[key] = {int(zz): (np.sort(a_s[z == zz]), np.sort(a_e[z == zz])) for zz in np.unique(z)}
        out = np.zeros(len(block), dtype=bool)
        if not self._iso[key]:
            return out
        qz = self._context().zone_index(block)
        for zz, (a, b) in self._iso[key].items():
            m = qz == zz
            if m.any():
                q = seq[m]
                out[m] = (np.searchsorted(a, q, side="left") - np.searchsorted(b, q, side="left")) > 0
        return out

    def block_history(self, block: int, use: str = "model") -> pd.DataFrame:
        df = self.blocks if use == "model" else self.inference_blocks
        return df[df["block"] == block]

    def consistency(self) -> Consistency:
        """Reconstructed end-state block counts vs /proc/pagetypeinfo-end (model/consistency.py)."""
        from .consistency import check
        return check(self, self.meta)

    def summary(self) -> dict:
        return {"ground_truth": self.ground_truth, "agreement": self.agreement, "warnings": self.warnings,
                "pageblock_order": self.pageblock_order, "stats": self.stats,
                "kprobe_live_ts": self.kprobe_live_ts}


# ----------------------------------------------------------------------------- build
def _progress(progress) -> Callable[[str], None]:
    if progress is None:
        return lambda _s: None
    if hasattr(progress, "add_task"):
        task = progress.add_task("model", total=7)

        def step(s: str) -> None:
            progress.update(task, advance=1, description=f"model: {s}")
        return step
    return progress


def _span(ev: dict[str, Table]) -> tuple[int, int, int]:
    t0, t1, s1 = None, None, -1
    for t in ev.values():
        if len(t):
            ts, sq = t["ts"], t["seq"]
            t0 = int(ts[0]) if t0 is None else min(t0, int(ts[0]))
            t1 = int(ts[-1]) if t1 is None else max(t1, int(ts[-1]))
            s1 = max(s1, int(sq[-1]))
    return (t0 or 0), (t1 or 0), s1 + 1


_PFN_COLS = {"mm_page_alloc": "pfn", "mm_page_free": "pfn", "mm_page_free_batched": "pfn",
             "mm_page_pcpu_drain": "pfn", "mm_page_alloc_zone_locked": "pfn", "mm_page_alloc_extfrag": "pfn"}


def pfn_blocks(ev: dict[str, Table], pbo: int) -> dict[str, np.ndarray]:
    """The distinct pageblocks each per-pfn event touches (what `_universe` adds beyond the zones)."""
    out = {}
    for short, col in _PFN_COLS.items():
        t = ev[short]
        if len(t):
            out[short] = np.unique(t[col][t[col] >= 0] >> pbo)
    return out


def _universe(ev: dict[str, Table] | None, meta: CaptureMeta, pbo: int,
              touched: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Every tracked block with its zone index, the zone names and the CMA flags.  `touched`:
    pfn_blocks() of the whole trace (a partition's driver merges them), else computed from `ev`."""
    if touched is None:
        assert ev is not None
        touched = pfn_blocks(ev, pbo)
    blocks, zidx, names = [], [], []
    for zi, (name, lo, hi) in enumerate(meta.zones):
        b = np.arange(lo >> pbo, ((hi - 1) >> pbo) + 1, dtype=np.int64)
        blocks.append(b)
        zidx.append(np.full(len(b), zi, np.int32))
        names.append(name)
    known = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
    extra = []
    lo_k, hi_k = (int(known.min()), int(known.max())) if len(known) else (1, 0)
    for short in _PFN_COLS:
        b = touched.get(short)
        if b is not None and len(b) and (int(b.min()) < lo_k or int(b.max()) > hi_k or not len(known)):
            extra.append(b)
    for _, base, count in meta.cma_areas:
        extra.append(np.arange(base >> pbo, ((base + count - 1) >> pbo) + 1, dtype=np.int64))
    if extra:
        e = np.unique(np.concatenate(extra))
        e = e[~np.isin(e, known)]
        if len(e):
            names.append("?")
            blocks.append(e)
            zidx.append(np.full(len(e), len(names) - 1, np.int32))
    allb = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
    allz = np.concatenate(zidx) if zidx else np.zeros(0, np.int32)
    allb, first = np.unique(allb, return_index=True)
    allz = allz[first]
    cma = np.zeros(len(allb), dtype=bool)
    for _, base, count in meta.cma_areas:
        cma |= (allb >= base >> pbo) & (allb <= (base + count - 1) >> pbo)
    return allb, allz, names, cma


def _lost(trace: Trace, ev: dict[str, Table]) -> tuple[np.ndarray, np.ndarray]:
    lost = trace.lost      # every reader implements it: a failure is a reader bug, not "no loss"
    if lost is None or lost.num_rows == 0 or not any(len(t) for t in ev.values()):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    te = lost.column("ts_end").to_numpy(zero_copy_only=False).astype(np.int64)
    seqs = np.concatenate([t["seq"] for t in ev.values() if len(t)])
    tss = np.concatenate([t["ts"] for t in ev.values() if len(t)])
    o = np.argsort(seqs)
    j = np.searchsorted(tss[o], te, side="left")
    j = np.minimum(j, len(o) - 1)
    return te, seqs[o][j] - 1


def _blocks_frame(tl: Timeline, ctx: infer.Context, end_ts: int, end_seq: int) -> pd.DataFrame:
    z = ctx.zone_index(tl.block)
    zn = pa.array(ctx.zone_names + ["?"]).take(pa.array(np.where(z >= 0, z, len(ctx.zone_names)).astype(np.int64)))
    t = pa.table({
        "block": pa.array(tl.block),
        "zone": zn,
        "start_ts": pa.array(tl.start_ts),
        "end_ts": pa.array(tl.end_ts(end_ts)),
        "migratetype": pa.array(tl.mt.astype(np.int8)),
        "source": pa.array(list(SOURCES)).take(pa.array(tl.src.astype(np.int64))),
        "confidence": pa.array([CONF_NAMES[c] for c in (UNKNOWN, INFERRED, KNOWN)]).take(
            pa.array(tl.conf.astype(np.int64))),
        "start_seq": pa.array(tl.start_seq),
        "end_seq": pa.array(tl.end_seq(end_seq)),
        "guess_mt": pa.array(tl.guess.astype(np.int8)),
    })
    return t.to_pandas(types_mapper=pd.ArrowDtype)


def _isolation_frame(w: Windows, ctx: infer.Context) -> pd.DataFrame:
    z = ctx.zone_index(w.start_pfn >> ctx.pbo) if len(w) else np.zeros(0, np.int64)
    names = ctx.zone_names + ["?"]
    t = pa.table({
        "start_ts": pa.array(w.start_ts, pa.int64()), "end_ts": pa.array(w.end_ts, pa.int64()),
        "start_pfn": pa.array(w.start_pfn.astype(np.uint64), pa.uint64()),
        "end_pfn": pa.array(w.end_pfn.astype(np.uint64), pa.uint64()),
        "kind": pa.array(w.kind, pa.string()), "name": pa.array(w.name, pa.string()),
        "restore_mt": pa.array(w.restore_mt, pa.int8()),
        "start_seq": pa.array(w.start_seq, pa.int64()), "end_seq": pa.array(w.end_seq, pa.int64()),
        "outcome": pa.array(w.outcome, pa.string()), "pid": pa.array(w.pid, pa.int64()),
        "zone": pa.array([names[i] for i in z], pa.string()),
    })
    return t.to_pandas(types_mapper=pd.ArrowDtype)


def _mt_at(tl: Timeline, pfn: np.ndarray, seq: np.ndarray, pbo: int) -> np.ndarray:
    """`Model.block_type_at(pfn, seq).mt` alone (the pcp residency needs nothing else)."""
    block = np.asarray(pfn).astype(np.uint64).view(np.int64) >> pbo
    if not len(tl.mt):             # an empty history: every type unknown (and no row 0 to index)
        return np.full(len(block), -1, np.int8)
    i = tl.at(block, np.asarray(seq, dtype=np.int64))
    return np.where(i >= 0, tl.mt[np.maximum(i, 0)], -1).astype(np.int8)


@dataclass
class _Source:
    """Phase 1: the events, the block universe, isolation windows and what was lost."""

    ev: dict[str, Table]              # every event table, kprobe ones under "kprobe:<name>"
    base: dict[str, Table]            # the tracepoint tables alone
    kprobe: list[Table]
    ctx: infer.Context
    windows: Windows
    lost_ts: np.ndarray
    lost_seq: np.ndarray
    warnings: list[str]
    glob: Any = None                  # a pageblock partition's whole-trace facts (model/partitioned.py)


@dataclass
class _Inference:
    """Phase 2: the tracepoint-only history (assertion rows, observations, pcp stays)."""

    rows: Rows                        # SET + kept hazard rows (+ backfill)
    obs: infer.Obs
    obs_conf: np.ndarray
    stays: Any
    timeline: Timeline
    stats: dict[str, Any]


@dataclass
class _Truth:
    """Phase 3: the kprobe ground-truth history (the inference's when there is no probe)."""

    timeline: Timeline
    ground: bool = False
    agreement: dict | None = None
    live_seq: int | None = None
    live_ts: int | None = None
    offlined: tuple = field(default_factory=lambda: (np.zeros(0, np.int64),) * 3)


def build_model(trace: Trace, meta: CaptureMeta, kernel: KernelBehavior, progress=None, glob=None) -> Model:
    """Pageblock history of a capture in four phases: read, infer from tracepoints, apply the
    kprobe ground truth, assemble the frames (contracts section 2b).

    `glob`: set when `trace` is one pageblock partition of a bigger trace
    (analyzer/model/partitioned.py): the facts that only the whole trace can tell (span,
    block universe, lost windows, refills, the kprobe's start) come from it, and the model
    tracks the blocks of `glob.block_range` only."""
    step = _progress(progress)
    src = _read(trace, meta, kernel, step, glob)
    step("tracepoint inference")
    inf = _infer(src, kernel)
    truth = _ground_truth(src, inf, step)
    return _assemble(src, inf, truth, meta, kernel, step)


def _read(trace: Trace, meta: CaptureMeta, kernel: KernelBehavior, step, glob=None) -> _Source:
    pbo = meta.pageblock_order
    step("reading events")
    ev = read_events(trace, meta.ground_truth_events, pbo)
    numbering = meta.numbering
    base_ev = {k: t for k, t in ev.items() if not k.startswith("kprobe:")}
    translate_tracepoints(base_ev, numbering)
    kp_ev = unify({k: t for k, t in ev.items() if k.startswith("kprobe:")}, numbering, pbo)
    ev = {**base_ev, **kp_ev}
    kp = list(kp_ev.values())
    cma_known = bool(meta.cma_areas) or not any("CMA areas unknown" in u for u in meta.unknowns)
    if glob is None:
        t0, t1, s1 = _span(ev)
        blocks, bzone, znames, cma = _universe(base_ev, meta, pbo)
        ctx = infer.Context(pbo, blocks, bzone, znames, cma, cma_known, t0, t1, s1, kernel)
        dropped = {k: t.dropped for k, t in ev.items() if getattr(t, "dropped", 0)}
    else:
        t0, t1, s1 = glob.span
        blocks, bzone, znames, cma = glob.universe
        sel = glob.in_range(blocks)
        ctx = infer.Context(pbo, blocks[sel], bzone[sel], znames, cma[sel], cma_known, t0, t1, s1, kernel,
                            zones_of=(blocks, bzone))
        dropped = dict(glob.dropped)
    warnings: list[str] = list(kernel.assumed)
    if dropped:
        warnings.append("records with impossible page numbers or counts ignored (corrupt input): "
                        + ", ".join(f"{k} {n}" for k, n in sorted(dropped.items())))
    step("isolation windows")
    w = find_windows(base_ev, pbo, kernel.cma_finish_has_errorno, kernel.cma_fail_pfn0)
    warnings += format_checks(trace, kernel, kp_ev, None if glob is None else glob.probe_bits)
    lost_ts, lost_seq = _lost(trace, base_ev) if glob is None else (glob.lost_ts, glob.lost_seq)
    if len(lost_seq):
        warnings.append(f"{len(lost_seq)} lost-event window(s): confidence lowered to 'inferred' after each")
    elif any(v for v in meta.lost_events.values()):
        lost_txt = ", ".join(f"{c}: {n}" for c, n in meta.lost_events.items() if n)   # keys "cpuN"
        warnings.append(f"the capture reports lost events ({lost_txt}) but the trace does not say where: "
                        "retypes may be missing anywhere")
    return _Source(ev, base_ev, kp, ctx, w, lost_ts, lost_seq, warnings, glob)


def probe_bits(kp: dict[str, Table]) -> bool:
    """Whether some ground-truth record is an isolate-bit write (groundtruth.unify's probe_kind)."""
    return any(t.has("probe_kind") and bool(np.any(t["probe_kind"] > 0)) for t in kp.values())


def format_checks(trace: Trace, kernel: KernelBehavior, kp: dict[str, Table], bits: bool | None = None) -> list[str]:
    """What the trace itself shows against what analyzer/kernels.py says of this release: a
    disagreement means the release string does not describe the traced kernel.

    `bits`: probe_bits() of the whole trace when `kp` holds only a partition's records."""
    out: list[str] = []
    if kernel.version is None:
        return out
    fmts = trace.formats()
    names = {k.rsplit(":", 1)[-1]: f for k, f in fmts.items()}
    start = names.get("cma_alloc_start")
    if start is not None:
        has_counts = any(f.name == "request_count" for f in start.fields)
        if has_counts != kernel.cma_start_counts:
            out.append(f"cma_alloc_start {'has' if has_counts else 'lacks'} request_count, unlike upstream "
                       f"{'.'.join(map(str, kernel.version))}: the kernel is not what its release says")
    if "mm_alloc_contig_migrate_range_info" in names and not kernel.contig_range_info:
        out.append("the trace has mm_alloc_contig_migrate_range_info, which upstream removed in 6.17: "
                   "the kernel is not what its release says")
    bits = probe_bits(kp) if bits is None else bits
    if kp and kernel.isolate_bit and not bits and not any(f.system == "pb" and any(x.name == "bit" for x in f.fields)
                                                         for f in fmts.values()):
        out.append(f"ground truth: this kernel keeps isolation in a separate pageblock bit ({kernel.probe_scheme} "
                   "probes) but the trace has no isolate-bit probe: isolation is invisible to the probe")
    return out


def _infer(src: _Source, kernel: KernelBehavior) -> _Inference:
    ctx, base_ev, warnings = src.ctx, src.base, src.warnings
    sets = Rows.concat([infer.boot_rows(ctx), infer.extfrag_rows(base_ev["mm_page_alloc_extfrag"], ctx),
                        infer.window_rows(src.windows, ctx)])
    if src.glob is not None:      # a partition: window rows of other partitions' blocks are theirs
        sets = sets.take(np.flatnonzero(src.glob.in_range(sets.block)))
    stays = _pair(base_ev, kernel, ctx.pbo, None if src.glob is None else src.glob.refill)
    obs = infer.observations(base_ev, ctx, src.windows, stays, src.glob)
    hazards = Rows.concat([infer.hazard_rows(base_ev, ctx), infer.lost_rows(src.lost_ts, src.lost_seq, ctx)])
    kept = infer.thin_hazards(hazards, sets, obs)
    rows = Rows.concat([sets, kept])
    obs_conf = infer.conf_by_type(obs.mt)
    no_upgrade = np.zeros(len(obs.mt), bool)
    tl, accepted = infer.resolve_with_observations(rows, obs, obs_conf, no_upgrade, ctx, warnings=warnings)
    bf, bf_obs = infer.backfill(rows, obs, accepted, tl, ctx)
    if len(bf):   # keep the revealing observations visible as the point where the type was seen
        rows = Rows.concat([rows, bf])
        first = accepted.copy()       # already includes the revealing observations: few passes left
        first[bf_obs] = True
        tl, accepted = infer.resolve_with_observations(rows, obs, obs_conf, no_upgrade, ctx, initial=first,
                                                       warnings=warnings)
    stats: dict[str, Any] = {"observations": int(len(obs.mt)), "observations_used_inference": int(accepted.sum()),
                             "backfilled_blocks": int(len(bf)), "hazard_rows": int(len(hazards)),
                             "hazard_rows_kept": int(len(kept))}
    if kernel.live_drain and accepted.any():
        stats["observations_revealing"] = int(accepted.sum())
    return _Inference(rows, obs, obs_conf, stays, tl, stats)


def _ground_truth(src: _Source, inf: _Inference, step) -> _Truth:
    """Inference up to the moment the kprobe went live, every kprobe write after it."""
    has_probe = bool(src.kprobe and any(len(t) for t in src.kprobe)) if src.glob is None else src.glob.probe_records
    if not has_probe:
        if src.ctx.kernel.version is not None:
            src.warnings.append(f"no ground-truth probe records: tracepoint inference only (this kernel needs the "
                                f"'{src.ctx.kernel.probe_scheme}' probes of analyzer/probes.py)")
        return _Truth(inf.timeline)
    step("ground truth")
    ctx, obs, warnings, stats = src.ctx, inf.obs, src.warnings, inf.stats
    marker = kprobe_marker_seq(src.base["print"])
    kr = infer.kprobe_rows(src.kprobe, ctx)
    first = None if src.glob is None else src.glob.probe_first      # (seq, ts) of the whole trace's first
    if src.glob is None and len(kr.seq):
        i = int(np.argmin(kr.seq))
        first = int(kr.seq[i]), int(kr.ts[i])
    if marker is None and first is None:     # kprobe records, none on a tracked block
        live_seq, live_ts = ctx.end_seq, ctx.end_ts
    elif marker is None:
        assert first is not None
        live_seq, live_ts = first[0] - 1, first[1]
        warnings.append("no 'pb/setmt kprobe active' marker: ground truth assumed live from the first kprobe event")
    else:
        live_seq, live_ts = marker
    pre = infer.before(inf.rows, live_seq)
    post_live = obs.seq > live_seq
    gconf = np.where(post_live, KNOWN, inf.obs_conf).astype(np.int8)
    kr = kr.take(np.flatnonzero(np.isin(kr.block, ctx.blocks)))
    open_type = (kr.mt < 0) & (kr.conf == UNKNOWN)
    if open_type.any():    # 6.17+ unisolation of a block whose stored type only the history before knows
        idx = np.flatnonzero(open_type)
        itl = inf.timeline
        got = np.full(len(idx), -1, np.int64)
        conf = np.full(len(idx), UNKNOWN, np.int64)
        if len(itl.mt):
            for q in (kr.seq[idx], np.full(len(idx), live_seq)):      # at the clear, else when the probe went live
                at = itl.at(kr.block[idx], np.asarray(q, np.int64))
                ii = np.maximum(at, 0)
                ok = (got < 0) & (at >= 0) & (itl.mt[ii] >= 0) & (itl.mt[ii] != ISOLATE)
                got[ok] = itl.mt[ii][ok]
                conf[ok] = itl.conf[ii][ok]
        kr.mt[idx] = got.astype(np.int8)
        kr.conf[idx] = conf.astype(np.int8)
        stats["isolate_clears_type_from_history"] = int((got >= 0).sum())
    tl, accepted = infer.resolve_with_observations(Rows.concat([pre, kr]), obs, gconf, post_live, ctx,
                                                   warnings=warnings)
    stats["observations_used_ground_truth"] = int(accepted.sum())
    stats["kprobe_writes"] = int(len(kr))
    stats.pop("observations_revealing", None)
    offl = offlined_spans(src.base["test_pages_isolated"], src.kprobe, ctx.pbo)
    if len(offl[0]):
        stats["offlined_blocks"] = int(len(np.unique(offl[0])))
    # how often a live-type observation contradicted the kprobe truth (should be 0 on >= 6.10)
    if len(obs.mt):
        ii = tl.at(obs.block, obs.seq)
        iiz = np.maximum(ii, 0)
        contra = (ii >= 0) & post_live & (tl.conf[iiz] == KNOWN) & (tl.guess[iiz] != obs.mt)
        stats["observations_contradicting_truth"] = int(contra.sum())
        if contra.any():
            warnings.append(f"{int(contra.sum())} live-type observations contradict the kprobe ground truth "
                            "(kept the kprobe's type)")
    return _Truth(tl, True, agreement(tl, inf.timeline, live_ts, ctx.end_ts), live_seq, live_ts, offl)


def _assemble(src: _Source, inf: _Inference, truth: _Truth, meta: CaptureMeta, kernel: KernelBehavior,
              step) -> Model:
    ctx, tl, warnings = src.ctx, truth.timeline, src.warnings
    t0, t1, s1, pbo = ctx.t0_ts, ctx.end_ts, ctx.end_seq, ctx.pbo
    step("blocks")
    blocks_df = _blocks_frame(tl, ctx, t1, s1)
    inf_df = blocks_df if tl is inf.timeline else _blocks_frame(inf.timeline, ctx, t1, s1)
    step("pcp residency")
    residency = _residency(inf.stays, lambda pfn, seq: _mt_at(tl, pfn, seq, pbo))
    model = Model(blocks=blocks_df, isolation=_isolation_frame(src.windows, ctx), residency=residency,
                  ground_truth=truth.ground, agreement=truth.agreement, warnings=warnings, pageblock_order=pbo,
                  trace_end_ts=t1, events=_LazyFrames(src.ev), trace_start_ts=t0, trace_end_seq=s1,
                  kernel=kernel, meta=meta, timeline=tl, inference=inf.timeline, inference_blocks=inf_df,
                  kprobe_live_seq=truth.live_seq, kprobe_live_ts=truth.live_ts, zone_names=ctx.zone_names,
                  stats=inf.stats, offlined=truth.offlined, _ctx=ctx)
    if meta.pagetypeinfo_end is not None and src.glob is None:   # a partition: said once, after the merge
        pagetypeinfo_warning(model, warnings)
    step("done")
    return model


def pagetypeinfo_warning(model: Model, warnings: list[str]) -> None:
    """Blocks shown MOVABLE that pagetypeinfo-end says are not: retyped before tracing."""
    c = model.consistency().table
    mov = c[c["migratetype"] == MOVABLE]
    extra = int((mov["reconstructed"] - mov["pagetypeinfo"].astype("float").fillna(mov["reconstructed"]))
                .clip(lower=0).sum())
    if extra:
        warnings.append(f"{extra} pageblock(s) the model shows as MOVABLE (boot default, never revealed) are "
                        "not MOVABLE per pagetypeinfo-end: retyped before tracing began (or untraced); "
                        "which ones cannot be told from the trace")
