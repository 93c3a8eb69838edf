"""Test fixture: a tiny Model (contracts §2b) built from a hand-written story.

Detector unit tests describe a sequence of kernel events in order ("free pfn P
on cpu1", "isolate block B", "drain P as CMA", ...); `Story.build()` turns that
into the Model surface the detectors use: seq-sorted event frames with the real
column names and Arrow dtypes, `block_type_at`, `blocks`, `isolation` and
`residency`.  Block types here are whatever the story says (the test *is* the
ground truth); the real inference lives in analyzer/model and is tested on real
captures.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from analyzer import kernels

from analyzer.model.timeline import SOURCES  # noqa: E402  (the one table of block-type sources)

FIELDS = {
    "mm_page_alloc": [("pfn", pa.uint64()), ("order", pa.uint32()), ("gfp_flags", pa.uint64()),
                      ("migratetype", pa.int32())],
    "mm_page_free": [("pfn", pa.uint64()), ("order", pa.uint32())],
    "mm_page_alloc_zone_locked": [("pfn", pa.uint64()), ("order", pa.uint32()),
                                  ("migratetype", pa.int32()), ("percpu_refill", pa.int32())],
    "mm_page_pcpu_drain": [("pfn", pa.uint64()), ("order", pa.uint32()), ("migratetype", pa.int32())],
    "mm_page_alloc_extfrag": [("pfn", pa.uint64()), ("alloc_order", pa.int32()),
                              ("fallback_order", pa.int32()), ("alloc_migratetype", pa.int32()),
                              ("fallback_migratetype", pa.int32()), ("change_ownership", pa.int32())],
    "cma_alloc_start": [("name", pa.string()), ("count", pa.uint64()), ("align", pa.uint32())],
    "cma_alloc_finish": [("name", pa.string()), ("pfn", pa.uint64()), ("page", pa.uint64()),
                         ("count", pa.uint64()), ("align", pa.uint32())],
    "setmt": [("page", pa.uint64()), ("flags", pa.uint64()), ("pfn", pa.uint64()), ("mask", pa.uint64())],
}


@dataclass
class BlockState:
    mt: np.ndarray
    confidence: np.ndarray
    source: np.ndarray
    isolated: np.ndarray
    zone_isolated: np.ndarray
    block: np.ndarray


class SynthModel:
    SOURCES = SOURCES

    def __init__(self, story: "Story"):
        self.pageblock_order = story.pbo
        self._changes = story.changes          # block -> [(seq, mt, conf, source)]
        self._windows = story.windows          # [start_seq, end_seq|None, start_blk, end_blk, ...]
        self.trace_end_ts = story.seq * 1000
        self.ground_truth = False
        self.agreement = None
        self.warnings: list[str] = []
        self.meta = story.meta
        self.events = {}
        for name, rows in story.rows.items():
            cols = {"seq": pa.array([r["seq"] for r in rows], pa.int64()),
                    "ts": pa.array([r["seq"] * 1000 for r in rows], pa.int64()),
                    "cpu": pa.array([r["cpu"] for r in rows], pa.int32()),
                    "pid": pa.array([1] * len(rows), pa.int32()),
                    "comm": pa.array(["synth"] * len(rows), pa.string())}
            for f, typ in FIELDS[name]:
                cols[f] = pa.array([r.get(f, 0) for r in rows], typ)
            self.events[name] = pa.table(cols).to_pandas(types_mapper=pd.ArrowDtype)
        self.blocks = self._blocks_frame(story)
        self.isolation = self._isolation_frame(story)
        self.residency = self._residency(story)

    # -- §2b surface -------------------------------------------------------------------
    def block_type_at(self, pfn, seq) -> BlockState:
        pfn = np.asarray(pfn, np.uint64)
        seq = np.asarray(seq, np.int64)
        blk = (pfn >> np.uint64(self.pageblock_order)).astype(np.int64)
        n = len(pfn)
        mt, conf, src = np.full(n, -1, np.int8), np.zeros(n, np.int8), np.zeros(n, np.int8)
        iso, ziso = np.zeros(n, bool), np.zeros(n, bool)
        for i in range(n):
            for s, m, c, so in self._changes.get(int(blk[i]), []):
                if s < seq[i]:
                    mt[i], conf[i], src[i] = m, c, SOURCES.index(so)
            for s0, s1, b0, b1, *_ in self._windows:
                active = s0 < seq[i] and (s1 is None or seq[i] <= s1)
                if active:
                    ziso[i] = True
                    iso[i] |= b0 <= blk[i] <= b1
        return BlockState(mt, conf, src, iso, ziso, blk)

    # -- frames ------------------------------------------------------------------------
    def _blocks_frame(self, story):
        rows = []
        for b, ch in sorted(self._changes.items()):
            for k, (s, m, c, so) in enumerate(ch):
                end = ch[k + 1][0] * 1000 if k + 1 < len(ch) else self.trace_end_ts
                rows.append({"block": b, "zone": "DMA", "start_ts": s * 1000, "end_ts": end,
                             "migratetype": m, "source": so,
                             "confidence": {2: "known", 1: "inferred", 0: "unknown"}[c]})
        t = pa.Table.from_pylist(rows, schema=pa.schema([
            ("block", pa.int64()), ("zone", pa.string()), ("start_ts", pa.int64()), ("end_ts", pa.int64()),
            ("migratetype", pa.int8()), ("source", pa.string()), ("confidence", pa.string())]))
        return t.to_pandas(types_mapper=pd.ArrowDtype)

    def _isolation_frame(self, story):
        pbo = self.pageblock_order
        rows = [{"start_ts": s0 * 1000, "end_ts": (s1 if s1 is not None else story.seq) * 1000,
                 "start_pfn": b0 << pbo, "end_pfn": (b1 + 1) << pbo, "kind": kind, "name": name,
                 "restore_mt": restore}
                for s0, s1, b0, b1, kind, name, restore in self._windows]
        t = pa.Table.from_pylist(rows, schema=pa.schema([
            ("start_ts", pa.int64()), ("end_ts", pa.int64()), ("start_pfn", pa.uint64()),
            ("end_pfn", pa.uint64()), ("kind", pa.string()), ("name", pa.string()), ("restore_mt", pa.int8())]))
        return t.to_pandas(types_mapper=pd.ArrowDtype)

    def _residency(self, story):
        on, out = {}, []
        for name, r in story.ordered:
            p = r.get("pfn")
            if name == "mm_page_free" and r.get("order", 0) <= 3:
                st = self.block_type_at([p], [r["seq"]])
                on[p] = dict(pfn=p, order=r.get("order", 0), cpu=r["cpu"], enter_seq=r["seq"],
                             enter_ts=r["seq"] * 1000, enter_kind="free", cached_mt=int(st.mt[0]),
                             block_mt_enter=int(st.mt[0]))
            elif name == "mm_page_alloc_zone_locked" and r.get("_refill", True):
                st = self.block_type_at([p], [r["seq"]])
                on[p] = dict(pfn=p, order=r.get("order", 0), cpu=r["cpu"], enter_seq=r["seq"],
                             enter_ts=r["seq"] * 1000, enter_kind="refill", cached_mt=r["migratetype"],
                             block_mt_enter=int(st.mt[0]))
            elif name in ("mm_page_alloc", "mm_page_pcpu_drain") and p in on:
                row = on.pop(p)
                row.update(leave_seq=r["seq"], leave_ts=r["seq"] * 1000,
                           leave_kind="alloc" if name == "mm_page_alloc" else "drain",
                           leave_printed_mt=r["migratetype"] if name == "mm_page_pcpu_drain" else -1)
                out.append(row)
        for row in on.values():
            row.update(leave_seq=None, leave_ts=None, leave_kind="open", leave_printed_mt=-1)
            out.append(row)
        schema = pa.schema([("pfn", pa.uint64()), ("order", pa.int32()), ("cpu", pa.int32()),
                            ("enter_seq", pa.int64()), ("enter_ts", pa.int64()), ("enter_kind", pa.string()),
                            ("cached_mt", pa.int8()), ("block_mt_enter", pa.int8()), ("leave_seq", pa.int64()),
                            ("leave_ts", pa.int64()), ("leave_kind", pa.string()), ("leave_printed_mt", pa.int8())])
        return pa.Table.from_pylist(out, schema=schema).to_pandas(types_mapper=pd.ArrowDtype)


@dataclass
class Meta:
    pageblock_order: int = 9
    cma_areas: list = None
    zones: list = None
    pagetypeinfo_end: dict = None
    kernel_release: str = None
    arch: str = "arm64"
    unknowns: list = None


class Story:
    """Events in order; every call takes the next seq (ts = seq * 1000 ns)."""

    def __init__(self, nblocks: int = 8, pbo: int = 9, initial=None, cma_blocks=(), confidence: int = 2):
        self.pbo = pbo
        self.seq = 0
        self.rows: dict[str, list[dict]] = {}
        self.ordered: list[tuple[str, dict]] = []
        self.changes: dict[int, list] = {}
        self.windows: list[list] = []
        initial = initial or {}
        for b in range(nblocks):
            if b in cma_blocks:
                self.changes[b] = [(-1, kernels.CMA, confidence, "cma-reserve")]
            else:
                mt = initial.get(b, kernels.MOVABLE)
                self.changes[b] = [(-1, mt, confidence if mt >= 0 else 0, "boot")]
        areas = []
        if cma_blocks:
            lo, hi = min(cma_blocks), max(cma_blocks)
            areas = [("hugetlb0", lo << pbo, (hi - lo + 1) << pbo)]
        self.meta = Meta(pageblock_order=pbo, cma_areas=areas, zones=[("DMA", 0, nblocks << pbo)],
                         unknowns=[])

    def _ev(self, _event, **f):
        f.setdefault("cpu", 0)
        f["seq"] = self.seq
        self.seq += 1
        self.rows.setdefault(_event, []).append(f)
        self.ordered.append((_event, f))
        return f["seq"]

    def pfn(self, block: int, off: int = 0) -> int:
        return (block << self.pbo) + off

    # page events
    def free(self, pfn, cpu=0, order=0):
        return self._ev("mm_page_free", pfn=pfn, order=order, cpu=cpu)

    def alloc(self, pfn, mt, cpu=0, order=0):
        return self._ev("mm_page_alloc", pfn=pfn, order=order, migratetype=mt, cpu=cpu, gfp_flags=0)

    def zone_locked(self, pfn, mt, cpu=0, order=0, refill=True):
        return self._ev("mm_page_alloc_zone_locked", pfn=pfn, order=order, migratetype=mt, cpu=cpu,
                        percpu_refill=int(mt < 3), _refill=refill)

    def drain(self, pfn, mt, cpu=0, order=0):
        return self._ev("mm_page_pcpu_drain", pfn=pfn, order=order, migratetype=mt, cpu=cpu)

    def extfrag(self, pfn, alloc_mt, fallback_mt, change_ownership, cpu=0, alloc_order=0, fallback_order=None):
        fo = self.pbo if fallback_order is None else fallback_order
        s = self._ev("mm_page_alloc_extfrag", pfn=pfn, alloc_order=alloc_order, fallback_order=fo,
                     alloc_migratetype=alloc_mt, fallback_migratetype=fallback_mt,
                     change_ownership=change_ownership, cpu=cpu)
        if change_ownership:   # the model's extfrag rule: claim max(1, 2^(fo-pbo)) blocks
            b0 = pfn >> self.pbo
            for b in range(b0, b0 + max(1, 1 << max(fo - self.pbo, 0))):
                self.changes.setdefault(b, []).append((s, alloc_mt, 1, "extfrag"))
        return s

    # block events
    def retype(self, block, mt, source="kprobe", confidence=2):
        s = self._ev("setmt", pfn=block << self.pbo, flags=mt, mask=7, page=0)
        self.changes.setdefault(block, []).append((s, mt, confidence, source))
        return s

    def isolate(self, b0, b1, kind="cma", name="hugetlb0", count=512):
        s = self._ev("cma_alloc_start", name=name, count=count, align=9)
        for b in range(b0, b1 + 1):
            self.changes.setdefault(b, []).append((s, kernels.ISOLATE, 1, "isolation"))
        self.windows.append([s, None, b0, b1, kind, name, kernels.CMA if kind == "cma" else kernels.MOVABLE])
        return s

    def unisolate(self):
        w = self.windows[-1]
        s = self._ev("cma_alloc_finish", name=w[5], pfn=w[2] << self.pbo, page=0, count=512, align=9)
        w[1] = s
        for b in range(w[2], w[3] + 1):
            self.changes[b].append((s, w[6], 1, "restore"))
        return s

    def build(self) -> SynthModel:
        return SynthModel(self)


K61 = kernels.behavior_for("Linux (none) 6.1.0-50-arm64 #1 SMP Debian 6.1.176-1 (2026-07-02) aarch64 GNU/Linux")
K61_MAINLINE = kernels.behavior_for("6.1.0")
K612 = kernels.behavior_for("Linux (none) 6.12.117+deb13-arm64 #1 SMP Debian 6.12.117-1 aarch64 GNU/Linux")
