"""Isolation windows: when pageblocks were MIGRATE_ISOLATE, inferred from tracepoints.

No tracepoint fires when a block is isolated or restored (set_migratetype_isolate /
unset_migratetype_isolate), so windows are bracketed by what does fire:

* cma_alloc: `cma_alloc_start` -> one alloc_contig_range() attempt per
  `cma_alloc_busy_retry` (pfn, count) -> `cma_alloc_finish` (a new attempt only if its
  pfn differs from the last busy_retry's; pfn -1 = no range found).  Attempt k's range
  is isolated after event k-1 and restored (to MIGRATE_CMA) at event k.  Events are
  paired per pid (cma_alloc may run concurrently in several tasks).
* alloc_contig_pages()/offline (no cma events): `mm_alloc_contig_migrate_range_info`
  (>= 6.9, migratetype = the caller's type) and `test_pages_isolated` that fall in no
  cma attempt.  The isolation began before the first of them at an untraced moment; the
  window starts at the task's previous isolation-related event (its last cma_alloc
  finish/busy_retry - hugetlb falls back to alloc_contig_pages() when cma_alloc fails -
  or the end of its previous contig window), else at the first evidence.  The undo runs
  after test_pages_isolated (isolate_freepages_range() first), so the window ends at the
  task's next isolation-related event (a cma_alloc_start, the next contig evidence) when
  there is one, else at the test.  Restored to MOVABLE.  Offline (blocks stay isolated) cannot be told apart; reported as "contig".

Ranges are aligned outward to pageblocks (isolation works on whole pageblocks since 5.19).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..kernels import CMA, ISOLATE, MOVABLE
from .events import Table

NO_PFN = -1


@dataclass
class Windows:
    start_seq: np.ndarray
    end_seq: np.ndarray
    start_ts: np.ndarray
    end_ts: np.ndarray
    start_pfn: np.ndarray     # pageblock aligned
    end_pfn: np.ndarray       # exclusive, pageblock aligned
    kind: list[str]
    name: list[str]
    restore_mt: np.ndarray
    outcome: list[str]        # "success" | "busy" | "fail" | "unknown"
    pid: np.ndarray

    def __len__(self) -> int:
        return len(self.start_seq)


def _align(lo: int, hi: int, pbo: int) -> tuple[int, int]:
    m = (1 << pbo) - 1
    return lo & ~m, (hi + m) & ~m


class _CmaEvent(NamedTuple):
    """One cma_alloc_{start,busy_retry,finish} record (sorted by seq)."""

    seq: int
    ts: int
    pid: int
    kind: str                 # "start" | "busy" | "finish"
    name: str
    pfn: int                  # NO_PFN for start (and for a finish that found no range)
    count: int  # type: ignore[assignment]  # the tracepoint's field name; shadows tuple.count, never called
    ok: bool | None           # finish: did the allocation succeed (None: the format cannot say)


class _ContigEvidence(NamedTuple):
    """A record showing an alloc_contig_range()/offline isolation outside any cma attempt."""

    seq: int
    ts: int
    pid: int
    start_pfn: int
    end_pfn: int
    kind: str                 # "mri" (mm_alloc_contig_migrate_range_info) | "tpi" (test_pages_isolated)
    migratetype: int          # mri: the caller's migratetype; tpi: -1
    passed: bool | None       # tpi: the range tested isolated; mri: None


class _Window(NamedTuple):
    start_seq: int
    end_seq: int
    start_ts: int
    end_ts: int
    start_pfn: int
    end_pfn: int
    kind: str
    name: str
    restore_mt: int
    outcome: str
    pid: int


def _cma_events(ev: dict[str, Table], has_errorno: bool, fail_pfn0: bool = False) -> list[_CmaEvent]:
    start, fin, busy = ev["cma_alloc_start"], ev["cma_alloc_finish"], ev["cma_alloc_busy_retry"]
    out: list[_CmaEvent] = []
    if len(start):
        for s, t, p, n in zip(start["seq"], start["ts"], start["pid"], start["name"]):
            out.append(_CmaEvent(int(s), int(t), int(p), "start", n, NO_PFN, 0, None))
    if len(busy):
        for s, t, p, n, pf, c in zip(busy["seq"], busy["ts"], busy["pid"], busy["name"], busy["pfn"], busy["count"]):
            out.append(_CmaEvent(int(s), int(t), int(p), "busy", n, int(pf), int(c), False))
    if len(fin):
        err = fin["errorno"] if (has_errorno and fin.has("errorno")) else None
        page = fin["page"] if fin.has("page") else None
        cols = zip(fin["seq"], fin["ts"], fin["pid"], fin["name"], fin["pfn"], fin["count"])
        for i, (s, t, p, n, pf, c) in enumerate(cols):
            if err is not None:
                ok = int(err[i]) == 0 and int(pf) != NO_PFN
            elif page is not None:
                ok = int(page[i]) != 0
            else:
                ok = None
            # a failure names no page: -1UL up to 6.17, pfn 0 from 6.18 (the page pointer is NULL)
            if ok is False and int(pf) == 0 and (fail_pfn0 or (page is not None and int(page[i]) == 0)):
                pf = NO_PFN
            out.append(_CmaEvent(int(s), int(t), int(p), "finish", n, int(pf), int(c), ok))
    out.sort(key=lambda e: e.seq)
    return out


def _cma_windows(evs: list[_CmaEvent], pbo: int) -> list[_Window]:
    """One window per alloc_contig_range() attempt of each cma_alloc call (see module doc)."""
    rows: list[_Window] = []
    open_call: dict[int, dict] = {}
    for e in evs:
        call = open_call.get(e.pid)
        if e.kind == "start":
            open_call[e.pid] = {"seq": e.seq, "ts": e.ts, "last_pfn": None}
            continue
        if call is None:                      # trace began inside the call
            call = {"seq": e.seq, "ts": e.ts, "last_pfn": None}
        if e.pfn != NO_PFN and not (e.kind == "finish" and call["last_pfn"] == e.pfn):
            lo, hi = _align(e.pfn, e.pfn + e.count, pbo)
            outcome = "busy" if e.kind == "busy" else ("success" if e.ok else ("fail" if e.ok is False else "unknown"))
            rows.append(_Window(call["seq"], e.seq, call["ts"], e.ts, lo, hi, "cma", e.name or "", CMA, outcome, e.pid))
        if e.kind == "busy":
            call.update(seq=e.seq, ts=e.ts, last_pfn=e.pfn)
            open_call[e.pid] = call
        else:
            open_call.pop(e.pid, None)
    return rows


def _contig_evidence(ev: dict[str, Table]) -> list[_ContigEvidence]:
    mri, tpi = ev["mm_alloc_contig_migrate_range_info"], ev["test_pages_isolated"]
    out: list[_ContigEvidence] = []
    if len(mri):
        for s, t, p, a, b, m in zip(mri["seq"], mri["ts"], mri["pid"], mri["start"], mri["end"], mri["migratetype"]):
            out.append(_ContigEvidence(int(s), int(t), int(p), int(a), int(b), "mri", int(m), None))
    if len(tpi):
        for s, t, p, a, b, f in zip(tpi["seq"], tpi["ts"], tpi["pid"], tpi["start_pfn"], tpi["end_pfn"], tpi["fin_pfn"]):
            out.append(_ContigEvidence(int(s), int(t), int(p), int(a), int(b), "tpi", -1, int(b) <= int(f)))
    out.sort(key=lambda e: e.seq)
    return out


def find_windows(ev: dict[str, Table], pbo: int, has_errorno: bool, fail_pfn0: bool = False) -> Windows:
    """Isolation windows from the cma_* and contig evidence records (see the module doc)."""
    evs = _cma_events(ev, has_errorno, fail_pfn0)
    cma_rows = _cma_windows(evs, pbo)
    rows = list(cma_rows)

    def in_cma(seq: int, lo: int, hi: int) -> bool:
        return any(w.start_seq < seq <= w.end_seq and lo < w.end_pfn and w.start_pfn < hi for w in cma_rows)

    evid = _contig_evidence(ev)
    # per task: the last event after which an isolation may have started
    anchors: dict[int, list[tuple[int, int]]] = {}
    for e in evs:
        if e.kind in ("finish", "busy"):
            anchors.setdefault(e.pid, []).append((e.seq, e.ts))
    last_end: dict[int, tuple[int, int]] = {}
    nexts: dict[int, list[tuple[int, int]]] = {}
    every: list[_CmaEvent | _ContigEvidence] = [*evs, *evid]
    for x in every:
        nexts.setdefault(x.pid, []).append((x.seq, x.ts))
    for v in nexts.values():
        v.sort()

    def next_after(p: int, seq: int, ts: int) -> tuple[int, int]:
        lst = nexts.get(p, [])
        i = bisect.bisect_right(lst, (seq, 1 << 62))
        return lst[i] if i < len(lst) else (seq, ts)

    def anchor(p: int, seq: int, ts: int) -> tuple[int, int]:
        best = last_end.get(p)
        lst = anchors.get(p, [])
        i = bisect.bisect_left(lst, (seq, -1)) - 1
        if i >= 0 and (best is None or lst[i][0] > best[0]):
            best = lst[i]
        return best if best is not None and best[0] < seq else (seq, ts)
    pending: dict[int, _ContigEvidence] = {}   # pid -> mri waiting for its test_pages_isolated
    for ev_ in evid:
        lo, hi = _align(ev_.start_pfn, ev_.end_pfn, pbo)
        if in_cma(ev_.seq, lo, hi) or (ev_.kind == "mri" and ev_.migratetype == CMA):
            continue
        if ev_.kind == "mri":
            pending[ev_.pid] = ev_._replace(start_pfn=lo, end_pfn=hi)
            continue
        m = pending.pop(ev_.pid, None)
        if m is not None and m.start_pfn < hi and lo < m.end_pfn:
            ss, st, lo, hi = m.seq, m.ts, min(lo, m.start_pfn), max(hi, m.end_pfn)
        else:
            ss, st = ev_.seq, ev_.ts
        ss, st = anchor(ev_.pid, ss, st)
        es, et = next_after(ev_.pid, ev_.seq, ev_.ts)
        rows.append(_Window(ss, es, st, et, lo, hi, "contig", "", MOVABLE, "success" if ev_.passed else "fail", ev_.pid))
        last_end[ev_.pid] = (es, et)
    for p, m in pending.items():   # migration without a test: window ends there
        ss, st = anchor(p, m.seq, m.ts)
        rows.append(_Window(ss, m.seq, st, m.ts, m.start_pfn, m.end_pfn, "contig", "", MOVABLE, "unknown", p))
    rows.sort()
    if not rows:
        z = np.zeros(0, dtype=np.int64)
        return Windows(z, z, z, z, z, z, [], [], np.zeros(0, np.int8), [], z)

    def ints(field: str, dt=np.int64) -> np.ndarray:
        return np.array([getattr(r, field) for r in rows], dt)
    return Windows(ints("start_seq"), ints("end_seq"), ints("start_ts"), ints("end_ts"), ints("start_pfn"),
                   ints("end_pfn"), [r.kind for r in rows], [r.name for r in rows], ints("restore_mt", np.int8),
                   [r.outcome for r in rows], ints("pid"))


def window_blocks(w: Windows, pbo: int) -> tuple[np.ndarray, np.ndarray]:
    """(window index, block) for every block of every window."""
    lo = w.start_pfn >> pbo
    n = np.maximum((w.end_pfn >> pbo) - lo, 0)
    wi = np.repeat(np.arange(len(w)), n)
    off = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    return wi, lo[wi] + off


def active_count(w: Windows, sel: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """How many of the selected windows are active for records at `seq` (a < seq <= b)."""
    a = np.sort(w.start_seq[sel])
    b = np.sort(w.end_seq[sel])
    return np.searchsorted(a, seq, side="left") - np.searchsorted(b, seq, side="left")


def offlined_spans(tpi: Table, kp: list[Table], pbo: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(block, from_seq, to_seq) spans where a block is MIGRATE_ISOLATE but offlined.

    6.1 offline_pages() leaves offlined blocks ISOLATE but takes them out of the zone's
    nr_isolate_pageblock right after its last, successful test_pages_isolated (onlining
    adds them back just before undo_isolate_page_range()).  alloc_contig_range() instead
    restores the block itself right after its test.  So, with the kprobe: a successful
    test on a block the probe last set ISOLATE is an offline when the probe's next write
    on that block is not by the same task, or sets ISOLATE again (online's memmap init),
    or never comes.  The span ends at that next write (to_seq = -1: trace end).
    """
    z = np.zeros(0, np.int64)
    if not len(tpi) or not kp:
        return z, z, z
    from .events import KPROBE_TYPE_FIELDS
    kb_l: list[np.ndarray] = []
    ks_l: list[np.ndarray] = []
    km_l: list[np.ndarray] = []
    kpid_l: list[np.ndarray] = []
    for t in kp:
        field = next((f for f in KPROBE_TYPE_FIELDS if t.has(f)), None)
        if not len(t) or field is None or not t.has("pfn"):
            continue
        sel = np.flatnonzero(t["mask"] == 7) if t.has("mask") else np.arange(len(t))
        kb_l.append(t["pfn"][sel] >> pbo)
        ks_l.append(t["seq"][sel])
        km_l.append(np.where(t[field][sel] < 0, -1, t[field][sel] & 7))
        kpid_l.append(t["pid"][sel] if t.has("pid") else np.full(len(sel), -1, np.int64))
    if not kb_l:
        return z, z, z
    kb, ks, km, kpid = (np.concatenate(x).astype(np.int64) for x in (kb_l, ks_l, km_l, kpid_l))
    o = np.lexsort((ks, kb))
    kb, ks, km, kpid = kb[o], ks[o], km[o], kpid[o]
    ok = tpi["end_pfn"] <= tpi["fin_pfn"]
    out_b, out_s, out_e = [], [], []
    for i in np.flatnonzero(ok):
        s, p = int(tpi["seq"][i]), int(tpi["pid"][i]) if tpi.has("pid") else -1
        for b in range(int(tpi["start_pfn"][i]) >> pbo, ((int(tpi["end_pfn"][i]) - 1) >> pbo) + 1):
            lo = np.searchsorted(kb, b, side="left")
            hi = np.searchsorted(kb, b, side="right")
            j = lo + np.searchsorted(ks[lo:hi], s)          # first write after the test
            if j - 1 < lo or km[j - 1] != ISOLATE:
                continue                                    # the probe does not have it isolated
            nxt = j if j < hi else -1
            if nxt >= 0 and kpid[nxt] == p and km[nxt] != ISOLATE:
                continue                                    # restored by the same task: contig
            out_b.append(b)
            out_s.append(s)
            out_e.append(int(ks[nxt]) if nxt >= 0 else -1)
    return np.array(out_b, np.int64), np.array(out_s, np.int64), np.array(out_e, np.int64)


def exclusion_windows(w: Windows, ev: dict[str, Table]) -> Windows:
    """The windows with zero-length ones (start_seq == end_seq: no event bracketed the isolation)
    widened back to their task's previous record: the isolation, and the drains it caused
    (free_pcppages_bulk() re-reads the block type then), happened at an untraced moment
    before the evidence.  Used only to keep such drains from counting as free-time prints."""
    zero = np.flatnonzero(w.start_seq >= w.end_seq)
    if not len(zero):
        return w
    start_seq, start_ts = w.start_seq.copy(), w.start_ts.copy()
    for i in zero:
        p, s = int(w.pid[i]), int(w.start_seq[i])
        best_s, best_t = -1, 0
        for t in ev.values():
            if not len(t) or not t.has("pid"):
                continue
            hi = np.searchsorted(t["seq"], s, side="left")
            m = np.flatnonzero(t["pid"][:hi] == p)
            if len(m) and int(t["seq"][m[-1]]) > best_s:
                best_s, best_t = int(t["seq"][m[-1]]), int(t["ts"][m[-1]])
        start_seq[i], start_ts[i] = best_s, (best_t if best_s >= 0 else 0)
    return Windows(start_seq, w.end_seq, start_ts, w.end_ts, w.start_pfn, w.end_pfn, w.kind, w.name,
                   w.restore_mt, w.outcome, w.pid)
