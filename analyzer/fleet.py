"""`mtaudit analyze CAPTURE... --out DIR`: many captures into one Parquet dataset.

A lab or CI farm produces hundreds of captures; each is analyzed exactly as
`mtaudit analyze CAPTURE --json` would (same function, same overrides), on
dask.distributed when it is installed (the `mtaudit[dist]` extra: a local cluster
by default, an existing one with `--scheduler tcp://HOST:8786`), else on a local
process pool.  The results go into DIR as

    summary.parquet   one row per capture: status, kernel, event and finding counts, error
    findings.parquet  every finding row of every capture, with a `capture` column
    blocks.parquet    every capture's per-block history, with a `capture` column

plus `summary.txt`, the table printed on the console.  DIR is written atomically.

Why the worker returns the `--json` document rather than DataFrames: it is the one
form the serial CLI already produces and tests compare, it pickles without pandas
extension types crossing process or machine boundaries, and a fleet row then
says the same thing as the single-capture report.  A capture that cannot be
analyzed (bad input, internal error) becomes a summary row naming the reason; a
worker that dies is the scheduler's business: dask reruns its tasks elsewhere
(and `retries` covers a task that raised), the process pool retries the capture
once in a fresh pool.
"""
from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from .atomic import atomic_dir
from .errors import MtauditError

# How many times a capture is retried after its worker was lost (dask: task retries too).
RETRIES = 1
STATUS_WORDS = {0: "clean", 1: "findings", 3: "inconclusive"}


@dataclass
class CaptureResult:
    """What one capture gave: its `--json` document, or why there is none."""

    capture: str
    status: str                       # clean | findings | inconclusive | failed
    exit_status: int                  # the single-capture exit status (2 bad input, 4 internal)
    summary: dict | None = None       # the `--json` document (report.export.json_doc)
    error: str | None = None
    attempts: int = 1
    extra: dict = field(default_factory=dict)


def analyze_capture(path: str, overrides: dict | None = None) -> CaptureResult:
    """Analyze one capture; never raises (a fleet must not stop at one bad capture).

    Top-level and argument-only so it pickles by reference to dask workers and pool
    processes alike.
    """
    from .analysis import analyze
    from .capture import load_capture
    try:
        trace, meta = load_capture(path, dict(overrides or {}))
        for ev in (overrides or {}).get("ground_truth_events", []) or []:
            if not trace.has(ev):
                raise MtauditError(f"{path}: --ground-truth {ev}: no such event in the trace")
        a = analyze(trace, meta)
        from .report.export import json_doc
        doc = json.loads(json.dumps(json_doc(a)))   # plain JSON types only: what --json writes
        code = int(doc["exit_status"])
        return CaptureResult(capture=path, status=STATUS_WORDS.get(code, str(code)), exit_status=code,
                             summary=doc)
    except MtauditError as e:
        return CaptureResult(capture=path, status="failed", exit_status=2, error=str(e))
    except Exception as e:  # noqa: BLE001 -- an internal error of one capture is a row, not the end of the fleet
        tb = traceback.extract_tb(e.__traceback__)
        where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
        return CaptureResult(capture=path, status="failed", exit_status=4,
                             error=f"internal error: {type(e).__name__}: {e}{where}")


# ------------------------------------------------------------------------------ runners
Progress = Callable[[CaptureResult], None]


def run_serial(paths: list[str], overrides: dict | None = None,
               on_done: Progress | None = None) -> list[CaptureResult]:
    """One capture after the other in this process: the reference the parallel runs must equal."""
    out = []
    for p in paths:
        r = analyze_capture(p, overrides)
        out.append(r)
        if on_done:
            on_done(r)
    return out


def run_pool(paths: list[str], overrides: dict | None = None, jobs: int | None = None,
             on_done: Progress | None = None) -> list[CaptureResult]:
    """A local process pool; a capture whose worker died is retried once in a fresh pool."""
    results: dict[str, CaptureResult] = {}
    todo = list(dict.fromkeys(paths))
    attempts = {p: 0 for p in todo}
    while todo:
        lost: list[str] = []
        with ProcessPoolExecutor(max_workers=max(1, jobs or os.cpu_count() or 1)) as ex:
            futs: dict[Future, str] = {ex.submit(analyze_capture, p, overrides): p for p in todo}
            for f in _as_completed(futs):
                p = futs[f]
                attempts[p] += 1
                try:
                    r = f.result()
                except BrokenProcessPool:
                    if attempts[p] <= RETRIES:
                        lost.append(p)
                        continue
                    r = CaptureResult(capture=p, status="failed", exit_status=4,
                                      error=f"worker process died {attempts[p]} times")
                r.attempts = attempts[p]
                results[p] = r
                if on_done:
                    on_done(r)
        todo = lost
    return [results[p] for p in dict.fromkeys(paths)]


def _as_completed(futs: Iterable[Future]):
    from concurrent.futures import as_completed
    return as_completed(list(futs))


def dask_available() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def run_dask(paths: list[str], overrides: dict | None = None, scheduler: str | None = None,
             jobs: int | None = None, on_done: Progress | None = None) -> list[CaptureResult]:
    """dask.distributed: `scheduler` an address (tcp://HOST:8786) or None for a local cluster.

    The scheduler reruns the tasks of a worker that is lost; `retries` reruns a task that
    raised (analyze_capture itself does not, so that is a worker-side failure).
    """
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise MtauditError("dask.distributed is not installed: pip install 'mtaudit[dist]' "
                           "(or drop --scheduler to use a local process pool)") from None
    cluster = None
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout="20s")
            except OSError as e:
                raise MtauditError(f"--scheduler {scheduler}: cannot connect: {e}") from None
        else:
            cluster = LocalCluster(n_workers=max(1, jobs or os.cpu_count() or 1), threads_per_worker=1,
                                   processes=True, dashboard_address=None)
            client = Client(cluster)
        with client:
            uniq = list(dict.fromkeys(paths))
            futs = client.map(analyze_capture, uniq, overrides=overrides, pure=False, retries=RETRIES)
            where = {f.key: p for f, p in zip(futs, uniq)}
            results: dict[str, CaptureResult] = {}
            for f in as_completed(futs):
                p = where[f.key]
                try:
                    r = f.result()
                except Exception as e:  # noqa: BLE001 -- KilledWorker, a task that raised on every retry
                    r = CaptureResult(capture=p, status="failed", exit_status=4,
                                      error=f"worker failed: {type(e).__name__}: {e}")
                results[p] = r
                if on_done:
                    on_done(r)
                f.release()
            return [results[p] for p in uniq]
    finally:
        if cluster is not None:
            cluster.close()


# ------------------------------------------------------------------------------ dataset
def summary_row(r: CaptureResult) -> dict[str, Any]:
    """The per-capture row of summary.parquet (flat, typed the same for every capture)."""
    s = r.summary or {}
    f = s.get("findings", {})
    cap = s.get("capture", {}) or {}
    kern = s.get("kernel", {}) or {}
    events = s.get("events", {}) or {}
    return {
        "capture": r.capture,
        "status": r.status,
        "exit_status": int(r.exit_status),
        "error": r.error,
        "kernel": kern.get("release") if s else None,
        "arch": cap.get("arch") if isinstance(cap, dict) else None,
        "events": int(sum(int(v) for v in events.values())) if s else None,
        "findings": int(f.get("total", 0)) if s else None,
        "kernel_findings": int(f.get("kernel", 0)) if s else None,
        "model_warnings": int(f.get("model_warnings", 0)) if s else None,
        "by_detector": json.dumps(f.get("by_detector", {}), sort_keys=True) if s else None,
        "not_checked": ",".join(s.get("not_checked", [])) if s else None,
        "lost_events": int((s.get("lost_events") or {}).get("total", 0)) if s else None,
        "attempts": int(r.attempts),
    }


def _rows_table(results: list[CaptureResult], key: str):
    """All captures' `key` rows (finding_rows / block_history) as one Arrow table with `capture`."""
    import pyarrow as pa
    rows: list[dict] = []
    for r in results:
        for row in (r.summary or {}).get(key, []):
            d = {"capture": r.capture}
            d.update({k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)
                      for k, v in row.items()})
            rows.append(d)
    if not rows:
        return pa.table({"capture": pa.array([], pa.string())})
    cols: dict[str, list] = {}
    for c in dict.fromkeys(k for d in rows for k in d):
        cols[c] = [d.get(c) for d in rows]
    return pa.table({c: _column(v) for c, v in cols.items()})


def _column(values: list):
    """One Arrow column from JSON values; a column mixing types becomes text."""
    import pyarrow as pa
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def summary_text(results: list[CaptureResult]) -> str:
    """The fleet summary table as plain text (what summary.txt holds)."""
    rows = [summary_row(r) for r in results]
    head = ["capture", "status", "kernel", "events", "kernel findings", "by detector / error"]
    body = [[os.path.basename(r["capture"].rstrip("/")) or r["capture"], r["status"], r["kernel"] or "-",
             "-" if r["events"] is None else str(r["events"]),
             "-" if r["kernel_findings"] is None else str(r["kernel_findings"]),
             r["error"] if r["error"] else (r["by_detector"] or "")] for r in rows]
    w = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w[i]) for i, h in enumerate(head)).rstrip()]
    lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(b)).rstrip() for b in body]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines.append(f"{len(rows)} captures: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return "\n".join(lines) + "\n"


def write_dataset(results: list[CaptureResult], dest: str) -> list[str]:
    """summary/findings/blocks .parquet + summary.txt into `dest`, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    with atomic_dir(dest) as tmp:
        srows = [summary_row(r) for r in results]
        schema = pa.schema([("capture", pa.string()), ("status", pa.string()), ("exit_status", pa.int32()),
                            ("error", pa.string()), ("kernel", pa.string()), ("arch", pa.string()),
                            ("events", pa.int64()), ("findings", pa.int64()), ("kernel_findings", pa.int64()),
                            ("model_warnings", pa.int64()), ("by_detector", pa.string()),
                            ("not_checked", pa.string()), ("lost_events", pa.int64()), ("attempts", pa.int32())])
        pq.write_table(pa.Table.from_pylist(srows, schema=schema), os.path.join(tmp, "summary.parquet"))
        pq.write_table(_rows_table(results, "finding_rows"), os.path.join(tmp, "findings.parquet"))
        pq.write_table(_rows_table(results, "block_history"), os.path.join(tmp, "blocks.parquet"))
        with open(os.path.join(tmp, "summary.txt"), "w") as f:
            f.write(summary_text(results))
    return ["summary.parquet", "findings.parquet", "blocks.parquet", "summary.txt"]


def fleet_exit(results: list[CaptureResult]) -> int:
    """2 when a capture failed; else 1 when one has kernel findings; else 3 inconclusive; else 0."""
    codes = {r.exit_status for r in results}
    if codes & {2, 4}:
        return 2
    for c in (1, 3):
        if c in codes:
            return c
    return 0


def run_fleet(paths: list[str], overrides: dict | None = None, scheduler: str | None = None,
              jobs: int | None = None, backend: str = "auto",
              on_done: Progress | None = None) -> list[CaptureResult]:
    """Analyze `paths`: backend "auto" (dask if installed, else pool), "dask", "pool" or "serial"."""
    if scheduler and backend in ("pool", "serial"):
        raise MtauditError(f"--scheduler needs dask, not the {backend} backend")
    # workers elsewhere (or in another directory) resolve paths on their own side: send them absolute
    paths = [os.path.abspath(p) for p in paths]
    if backend == "auto":
        backend = "dask" if (scheduler or dask_available()) else "pool"
    if backend == "dask":
        return run_dask(paths, overrides, scheduler=scheduler, jobs=jobs, on_done=on_done)
    if backend == "pool":
        return run_pool(paths, overrides, jobs=jobs, on_done=on_done)
    return run_serial(paths, overrides, on_done=on_done)
