"""CMA allocation calls and their alloc_contig_range() attempts, from the cma_* records.

One `cma_alloc()` call is `cma_alloc_start` ... `cma_alloc_finish` of one task; every
`cma_alloc_busy_retry` in between ends one alloc_contig_range() attempt whose range was busy,
and a finish naming a pfn other than the last busy one is one more attempt (the last one).
The `test_pages_isolated` and `mm_alloc_contig_migrate_range_info` records of the same task
inside an attempt are that attempt's isolation test and migration counts.  The same records
outside any cma_alloc call are alloc_contig_range() calls without CMA (gigantic pages,
alloc_contig_pages()): each becomes a row of kind "contig".

Kernel differences (the call sites in mm/cma.c): 6.1 has no `errorno` (success = a non-NULL
page); from 6.2 `errorno` is the result; up to 6.16 a failed finish names the last tried pfn
(-1 when no free range was found), from 6.18 a failed finish reports pfn 0.  6.18's
`cma_alloc_start` prints request_count/available_count/total_count instead of count.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..model.query import col

NO_PFN = -1
ERRNO = {-1: "EPERM", -4: "EINTR", -11: "EAGAIN", -12: "ENOMEM", -16: "EBUSY", -22: "EINVAL"}


def column(df: pd.DataFrame | None, name: str, dtype: Any, default: int = 0) -> np.ndarray:
    """model.query.col, except that a null in an unsigned column reads as 0: pyarrow cannot fill
    an unsigned column with a negative default (a garbled field in a hostile trace)."""
    if default < 0 and df is not None and name in df.columns:
        t = getattr(df[name].dtype, "pyarrow_dtype", None)
        if (t is not None and pa.types.is_unsigned_integer(t)) or getattr(df[name].dtype, "kind", "") == "u":
            default = 0
    return col(df, name, dtype, default)


def errno_name(err: int | None) -> str:
    """-16 -> 'EBUSY' (the kernel's errno names for what cma_alloc returns)."""
    if err is None:
        return ""
    return ERRNO.get(int(err), str(err))


@dataclass
class Test:
    """One test_pages_isolated record: fin_pfn is the first pfn that was not free/isolated."""

    seq: int
    ts: int
    start_pfn: int
    end_pfn: int
    fin_pfn: int

    @property
    def ok(self) -> bool:
        return self.end_pfn <= self.fin_pfn


@dataclass
class Migrate:
    """One mm_alloc_contig_migrate_range_info record (6.9 .. 6.16)."""

    seq: int
    ts: int
    start: int
    end: int
    nr_migrated: int
    nr_reclaimed: int
    nr_mapped: int
    migratetype: int = -1     # as printed (the alloc_contig_range() caller's type)


@dataclass
class Attempt:
    """One alloc_contig_range() try: [pfn, pfn + count), isolated as whole pageblocks."""

    pfn: int
    count: int
    start_seq: int            # the record after which the range was isolated
    start_ts: int
    end_seq: int              # busy_retry / finish / the test (contig)
    end_ts: int
    outcome: str              # "ok" | "busy" | "failed" | "unknown"
    tests: list[Test] = field(default_factory=list)
    migrate: list[Migrate] = field(default_factory=list)

    def isolated(self, pbo: int) -> tuple[int, int]:
        m = (1 << pbo) - 1
        lo = min([self.pfn] + [t.start_pfn for t in self.tests])
        return lo & ~m, (self.pfn + self.count + m) & ~m

    @property
    def failed_test(self) -> Test | None:
        bad = [t for t in self.tests if not t.ok]
        return bad[-1] if bad else None


@dataclass
class Call:
    """One cma_alloc() call (kind "cma") or one alloc_contig_range() without CMA ("contig")."""

    kind: str
    area: str
    pid: int
    comm: str
    cpu: int
    start_seq: int
    start_ts: int
    end_seq: int
    end_ts: int
    count: int
    align: int
    ok: bool | None
    error: int | None         # negative errno; None when the kernel does not trace it
    error_inferred: str = ""  # what the records imply when errorno is not traced (6.1)
    pfn: int = NO_PFN         # the allocated pfn (ok) or the last tried one
    available: int | None = None   # 6.18+: cma->available_count at the start
    total: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    complete: bool = True     # both start and finish were traced

    @property
    def latency_ns(self) -> int | None:
        return self.end_ts - self.start_ts if self.complete else None

    @property
    def retries(self) -> int:
        return sum(1 for a in self.attempts if a.outcome == "busy")


def _rows(df: pd.DataFrame | None, cols: dict[str, Any]) -> list[dict]:
    if df is None or not len(df):
        return []
    # a value the reader could not read is null: -1 for signed fields, 0 for unsigned ones
    arrays = {k: column(df, k, dt, 0 if dt is np.uint64 else -1) for k, dt in cols.items() if k in df.columns}
    names = df["name"].astype(str).to_numpy() if "name" in df.columns else np.array([""] * len(df))
    comm = df["comm"].astype(str).to_numpy() if "comm" in df.columns else np.array([""] * len(df))
    out = []
    for i in range(len(df)):
        r: dict[str, Any] = {k: int(v[i]) for k, v in arrays.items()}
        r["name"], r["comm"] = str(names[i]), str(comm[i])
        out.append(r)
    return out


_I = np.int64
_COMMON = {"seq": _I, "ts": _I, "cpu": _I, "pid": _I}


def _records(events: Mapping[str, pd.DataFrame]) -> list[tuple[int, str, dict]]:
    def get(name: str) -> pd.DataFrame | None:
        return events.get(name)
    recs: list[tuple[int, str, dict]] = []
    for kind, name, extra in (
            ("start", "cma_alloc_start", {"count": _I, "align": _I, "request_count": _I,
                                          "available_count": _I, "total_count": _I}),
            ("busy", "cma_alloc_busy_retry", {"pfn": np.uint64, "count": _I, "align": _I}),
            ("finish", "cma_alloc_finish", {"pfn": np.uint64, "page": np.uint64, "count": _I, "align": _I,
                                            "errorno": _I}),
            ("tpi", "test_pages_isolated", {"start_pfn": np.uint64, "end_pfn": np.uint64, "fin_pfn": np.uint64}),
            ("mri", "mm_alloc_contig_migrate_range_info", {"start": np.uint64, "end": np.uint64,
                                                           "nr_migrated": _I, "nr_reclaimed": _I,
                                                           "nr_mapped": _I, "migratetype": _I})):
        df = get(name)
        has_err = df is not None and "errorno" in df.columns
        for r in _rows(df, {**_COMMON, **extra}):
            for k in ("pfn", "page", "start_pfn", "end_pfn", "fin_pfn", "start", "end"):
                if k in r and r[k] >= 1 << 63:
                    r[k] -= 1 << 64          # -1UL: no pfn
            if kind == "finish":
                r["has_errorno"] = has_err
            recs.append((r["seq"], kind, r))
    recs.sort(key=lambda x: x[0])
    return recs


def _finish_ok(r: dict) -> tuple[bool | None, int | None, int]:
    """(ok, error, pfn) of a cma_alloc_finish record."""
    pfn = r.get("pfn", NO_PFN)
    if r.get("has_errorno"):
        err = r.get("errorno", 0)
        ok = err == 0 and pfn not in (NO_PFN, 0)
        if not ok and pfn == 0:
            pfn = NO_PFN                       # 6.18+: a failure reports pfn 0
        return ok, (err or None), pfn
    if "page" in r:
        return r["page"] != 0, None, pfn
    return None, None, pfn


def build_calls(events: Mapping[str, pd.DataFrame], pbo: int) -> list[Call]:
    """Every cma_alloc() call and every alloc_contig_range() seen without one, in trace order."""
    calls: list[Call] = []
    open_: dict[int, Call] = {}
    cur: dict[int, dict] = {}       # pid -> the running attempt's collected tests / migrate infos
    loose: dict[int, list[tuple[str, dict]]] = {}   # pid -> contig evidence outside cma calls

    def attempt_of(call: Call, pid: int) -> dict:
        if pid not in cur:
            cur[pid] = {"seq": call.start_seq, "ts": call.start_ts, "tests": [], "migrate": []}
        return cur[pid]

    for seq, kind, r in _records(events):
        pid = r.get("pid", -1)
        call = open_.get(pid)
        if kind == "start":
            if call is not None:       # a start without finish: the previous call never ended in the trace
                call.complete = False
                calls.append(call)
            cnt = r.get("count", -1)
            if cnt < 0:
                cnt = r.get("request_count", -1)
            open_[pid] = Call("cma", r["name"], pid, r["comm"], r.get("cpu", -1), seq, r["ts"], seq, r["ts"],
                              cnt, r.get("align", -1), None, None,
                              available=r.get("available_count") if r.get("available_count", -1) >= 0 else None,
                              total=r.get("total_count") if r.get("total_count", -1) >= 0 else None)
            cur.pop(pid, None)
            continue
        if kind in ("tpi", "mri"):
            if call is None:
                loose.setdefault(pid, []).append((kind, r))
                _flush_contig(loose, pid, calls, pbo, final=False)
                continue
            a = attempt_of(call, pid)
            if kind == "tpi":
                a["tests"].append(Test(seq, r["ts"], r["start_pfn"], r["end_pfn"], r["fin_pfn"]))
            else:
                a["migrate"].append(_migrate(r))
            continue
        if call is None:               # the trace began inside this call
            call = Call("cma", r["name"], pid, r["comm"], r.get("cpu", -1), seq, r["ts"], seq, r["ts"],
                        r.get("count", -1), r.get("align", -1), None, None, complete=False)
            open_[pid] = call
        a = attempt_of(call, pid)
        if kind == "busy":
            call.attempts.append(Attempt(r["pfn"], r.get("count", call.count), a["seq"], a["ts"], seq, r["ts"],
                                         "busy", a["tests"], a["migrate"]))
            cur[pid] = {"seq": seq, "ts": r["ts"], "tests": [], "migrate": []}
            continue
        ok, err, pfn = _finish_ok(r)
        last_busy = call.attempts[-1].pfn if call.attempts else None
        if pfn != NO_PFN and not (last_busy == pfn and not ok):
            call.attempts.append(Attempt(pfn, r.get("count", call.count), a["seq"], a["ts"], seq, r["ts"],
                                         "ok" if ok else ("failed" if ok is False else "unknown"),
                                         a["tests"], a["migrate"]))
        call.ok, call.error, call.pfn = ok, err, pfn
        if call.count < 0:
            call.count = r.get("count", -1)
        call.end_seq, call.end_ts = seq, r["ts"]
        if ok is False and err is None:
            call.error_inferred = ("ENOMEM" if pfn == NO_PFN and not call.attempts
                                   else "EBUSY" if call.attempts and call.attempts[-1].outcome == "busy" else "")
        calls.append(call)
        open_.pop(pid, None)
        cur.pop(pid, None)
    for call in open_.values():        # started, never finished in the trace
        call.complete = False
        calls.append(call)
    for pid in list(loose):
        _flush_contig(loose, pid, calls, pbo, final=True)
    calls.sort(key=lambda c: c.start_seq)
    return calls


def _flush_contig(loose: dict[int, list[tuple[str, dict]]], pid: int, calls: list[Call], pbo: int,
                  final: bool) -> None:
    """Turn a task's contig evidence into rows: a migrate-range-info and the test that follows
    it on the same range are one alloc_contig_range() call."""
    ev = loose.get(pid, [])
    while ev:
        kind, r = ev[0]
        if kind == "mri" and len(ev) == 1 and not final:
            return                      # wait for its test
        mig: list[Migrate] = []
        tests: list[Test] = []
        if kind == "mri":
            mig.append(_migrate(r))
            ev.pop(0)
            if ev and ev[0][0] == "tpi" and ev[0][1]["start_pfn"] < r["end"] and r["start"] < ev[0][1]["end_pfn"]:
                tests.append(_test(ev.pop(0)[1]))
            lo, hi = r["start"], r["end"]
        else:
            tests.append(_test(r))
            ev.pop(0)
            lo, hi = r["start_pfn"], r["end_pfn"]
        first = mig[0] if mig else tests[0]
        last = tests[-1] if tests else mig[-1]
        ok = tests[-1].ok if tests else None
        a = Attempt(lo, hi - lo, first.seq, first.ts, last.seq, last.ts,
                    "ok" if ok else ("failed" if ok is False else "unknown"), tests, mig)
        calls.append(Call("contig", "", pid, r["comm"], r.get("cpu", -1), first.seq, first.ts, last.seq, last.ts,
                          hi - lo, -1, ok, None if ok is not False else -16, pfn=lo, attempts=[a],
                          complete=False))
    loose.pop(pid, None)


def _migrate(r: dict) -> Migrate:
    return Migrate(r["seq"], r["ts"], r["start"], r["end"], r.get("nr_migrated", -1), r.get("nr_reclaimed", -1),
                   r.get("nr_mapped", -1), r.get("migratetype", -1))


def unswap_migrate_counts(calls: list[Call]) -> bool:
    """Put mm_alloc_contig_migrate_range_info's counters back where they belong when the kernel
    passed its arguments in another order than the format names them.

    Debian's 6.12.118 passes (start, end, migratetype, migrated, reclaimed, mapped) to a format
    declared (start, end, nr_migrated, nr_reclaimed, nr_mapped, migratetype): every record then
    prints the caller's migratetype as nr_migrated (4 = MIGRATE_CMA inside cma_alloc, 1 =
    MIGRATE_MOVABLE for alloc_contig_pages).  Detected from the data, per capture: at least two
    records, nr_migrated 4 on every one inside a cma_alloc() call and 1 on every other.
    Returns whether the counters were remapped."""
    recs = [(c.kind, m) for c in calls for a in c.attempts for m in a.migrate]
    if len(recs) < 2 or not all(m.nr_migrated == (4 if k == "cma" else 1) for k, m in recs):
        return False
    if all(m.migratetype in (1, 4) for _k, m in recs) and all(m.nr_reclaimed == 0 for _k, m in recs):
        return False                  # as plausible in the declared order: leave it
    for _k, m in recs:
        mt = m.nr_migrated
        m.nr_migrated, m.nr_reclaimed, m.nr_mapped, m.migratetype = m.nr_reclaimed, m.nr_mapped, m.migratetype, mt
    return True


def _test(r: dict) -> Test:
    return Test(r["seq"], r["ts"], r["start_pfn"], r["end_pfn"], r["fin_pfn"])
