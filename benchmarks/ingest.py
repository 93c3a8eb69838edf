"""Ingest benchmark: our trace.dat reader vs `trace-cmd report -R`, same files, same run.

    python3 -m benchmarks.ingest [--events N] [--runs R] [FILE ...]

Without FILE it builds (once, cached in --workdir) a trace.dat of >= N page-allocator events:
the real records of fixtures/captures/debian-6.1-arm64-cma-churn (1.17 M events, 2 CPUs,
kernel 6.1 arm64 formats, cmdlines, uname) repeated back to back in time, written as v6 by
tests/support/tracedat_write.py, plus its v7+zstd conversion by `trace-cmd convert`.

Measured per file, each in a fresh child process so peaks do not mix:
  ours      TraceDat(path) + every event table materialised + lost (after imports)
  trace-cmd `trace-cmd report -R -i FILE > /dev/null` (wall clock of the process)
and printed: events/s of both, their ratio, our peak RSS (VmHWM) against the bytes of the
decoded columns.  Speed is a benchmark, never a timed test (project rule).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SOURCE = os.path.join(ROOT, "fixtures", "captures", "debian-6.1-arm64-cma-churn", "trace.dat")

CHILD = r"""
import json, sys, time
from analyzer.readers.tracedat import TraceDat
import numpy, pyarrow
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith(("VmHWM", "VmRSS")):
            yield line.split()[0][:-1], int(line.split()[1]) * 1024
base = dict(hwm())["VmRSS"]
path, compiled = sys.argv[1], {"c": True, "numpy": False}[sys.argv[2]]
t0 = time.perf_counter()
t = TraceDat(path, compiled=compiled)
tables = {n: t.table(n) for n in t.events()}
lost = t.lost
dt = time.perf_counter() - t0
rows = sum(x.num_rows for x in tables.values())
cols = sum(x.nbytes for x in tables.values())
print(json.dumps({"seconds": dt, "events": rows, "column_bytes": cols, "peak_rss": dict(hwm())["VmHWM"],
                  "base_rss": base, "lost_rows": lost.num_rows}))
"""


def build(events: int, workdir: str) -> list[str]:
    """Make (or reuse) the v6 and v7+zstd benchmark files; returns their paths."""
    import numpy as np

    from analyzer.readers.tracedat import TraceDat
    # the writer is test tooling (tests/support/), not part of the installed package; this
    # benchmark runs from a checkout anyway (it reads fixtures/)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from support.tracedat_write import Records, Layout, records_from, write

    from rich.console import Console
    con = Console(stderr=True)
    os.makedirs(workdir, exist_ok=True)
    v6 = os.path.join(workdir, f"ingest-{events}-v6.dat")
    v7 = os.path.join(workdir, f"ingest-{events}-v7zstd.dat")
    if not os.path.exists(v6):
        con.print(f"[dim]building {v6} from the records of {os.path.relpath(SOURCE, ROOT)}...[/]")
        src = TraceDat(SOURCE)
        (name, recs), = records_from(src)[:1]
        n_src = sum(len(r.ts) for r in recs)
        reps = max(1, -(-events // n_src))
        lo = min(int(r.ts[0]) for r in recs if len(r.ts))
        hi = max(int(r.ts[-1]) for r in recs if len(r.ts))
        span = hi - lo + 1_000_000
        big = []
        for r in recs:
            k = np.arange(reps, dtype=np.uint64)
            ts = (r.ts[None, :] + k[:, None] * np.uint64(span)).reshape(-1)
            big.append(Records(ts, r.data, np.tile(r.off, reps), np.tile(r.len, reps)))
        tmp = v6 + ".tmp"
        write(tmp, src.h, [("", big)], version=6, lay=Layout(page_size=src.h.page_size))
        os.replace(tmp, v6)
    if not os.path.exists(v7):
        con.print(f"[dim]converting to v7+zstd with trace-cmd convert: {v7}[/]")
        tmp = v7 + ".tmp"
        subprocess.run(["trace-cmd", "convert", "-i", v6, "-o", tmp, "--file-version", "7", "--compression", "zstd"],
                       check=True, capture_output=True)
        os.replace(tmp, v7)
    return [v6, v7]


def run_ours(path: str, walker: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, path, walker], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_tracecmd(path: str) -> float:
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run(["trace-cmd", "report", "-R", "-i", path], stdout=null, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def bench(files: list[str], runs: int, walkers: list[str], out=print) -> list[dict]:
    results = []
    for path in files:
        size = os.path.getsize(path)
        ours: dict[str, list[dict]] = {w: [] for w in walkers}
        tc = []
        for _ in range(runs):          # interleaved, so both tools see the same machine load
            for w in walkers:
                ours[w].append(run_ours(path, w))
            tc.append(run_tracecmd(path))
        n = ours[walkers[0]][0]["events"]
        tc_best = min(tc)
        out(f"\n{path}  ({size / 1e6:.1f} MB, {n:,} events, best of {runs} runs)")
        out(f"  trace-cmd report -R > /dev/null : {tc_best:6.2f} s  {n / tc_best / 1e6:6.2f} M ev/s"
            f"  (median {statistics.median(tc):.2f} s)")
        for w in walkers:
            rs = ours[w]
            best = min(rs, key=lambda r: r["seconds"])
            ratio = (n / best["seconds"]) / (n / tc_best)
            cols = best["column_bytes"]
            out(f"  mtaudit ({w:5s} walker)          : {best['seconds']:6.2f} s  {n / best['seconds'] / 1e6:6.2f} M ev/s"
                f"  ratio {ratio:5.1f}x  (median {statistics.median(r['seconds'] for r in rs):.2f} s)")
            out(f"      peak RSS {best['peak_rss'] / 2**20:7.0f} MiB (interpreter+libs {best['base_rss'] / 2**20:.0f} MiB,"
                f" reader {(best['peak_rss'] - best['base_rss']) / 2**20:.0f} MiB)"
                f" vs decoded columns {cols / 2**20:.0f} MiB -> peak/columns {best['peak_rss'] / cols:.2f},"
                f" (peak-base)/columns {(best['peak_rss'] - best['base_rss']) / cols:.2f}")
            results.append({"file": path, "walker": w, "events": n, "ours_s": best["seconds"],
                            "tracecmd_s": tc_best, "ratio": ratio, "peak_rss": best["peak_rss"],
                            "base_rss": best["base_rss"], "column_bytes": cols})
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.ingest", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("files", nargs="*", metavar="FILE", help="trace.dat files (default: build >= --events)")
    ap.add_argument("--events", type=int, default=4_000_000, help="events in the built file (default 4 M)")
    ap.add_argument("--runs", type=int, default=3, help="runs per tool and file; the best is reported")
    ap.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "mtaudit-bench"))
    ap.add_argument("--numpy", action="store_true", help="also time the pure-numpy walker")


def run(args) -> int:
    from analyzer.readers import tracedat_pages as tp
    files = args.files or build(args.events, args.workdir)
    walkers = (["c"] if tp.use_compiled() else []) + (["numpy"] if args.numpy or not tp.use_compiled() else [])
    print(f"mtaudit ingest benchmark; {os.cpu_count()} CPUs; walkers: {', '.join(walkers)}")
    bench(files, args.runs, walkers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
