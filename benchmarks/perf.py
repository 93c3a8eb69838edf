"""perf.data benchmark: our reader vs `perf script > /dev/null`, same files, same run.

    mtaudit bench perf [--runs R] [--seconds S] [--workdir DIR] [FILE ...]

Without FILE it records (once, cached in --workdir; needs root and perf) a plain and a `-z`
perf.data of the page-allocator tracepoints while `dd` writes and deletes 300 MB files for
about S seconds.

Measured per file, each in a fresh child process:
  ours  PerfData(path) + every event table materialised + lost (after imports)
  perf  `perf script -i FILE > /dev/null`
Both as wall clock and as CPU time (user + sys, from the child's rusage): on a shared machine
the CPU time is the fair measure, the wall clock is printed next to it.  The ratio is
perf / ours (higher is better).  Speed is a benchmark, never a timed test (project rule).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

EVENTS = ["kmem:mm_page_alloc", "kmem:mm_page_free", "kmem:mm_page_free_batched", "kmem:mm_page_alloc_zone_locked",
          "kmem:mm_page_pcpu_drain", "kmem:mm_page_alloc_extfrag"]

CHILD = r"""
import json, resource, sys, time
from analyzer.readers.perfdata import PerfData
import numpy, pyarrow
path = sys.argv[1]
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
t = PerfData(path)
tables = {n: t.table(n) for n in t.events()}
lost = t.lost
dt = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps({"seconds": dt, "cpu": cpu, "events": sum(x.num_rows for x in tables.values()),
                  "walker": t.meta.extra["walker"], "lost_rows": lost.num_rows}))
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", help="perf.data files (default: record two)")
    p.add_argument("--runs", type=int, default=3, help="runs per file and tool (median reported)")
    p.add_argument("--seconds", type=float, default=6.0, help="length of the recorded workload")
    p.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".cache", "mtaudit", "bench-perf"))


def record(workdir: str, seconds: float) -> list[str]:
    """Record (or reuse) a plain and a -z perf.data under a dd workload."""
    if shutil.which("perf") is None:
        raise SystemExit("bench perf: perf is not installed (Debian: linux-perf)")
    os.makedirs(workdir, exist_ok=True)
    out = []
    loop = (f"end=$(( $(date +%s) + {max(1, int(seconds))} )); while [ $(date +%s) -lt $end ]; do "
            f"dd if=/dev/zero of={workdir}/dd.tmp bs=1M count=300 2>/dev/null; rm -f {workdir}/dd.tmp; done")
    for name, extra in (("bench.data", []), ("bench-z.data", ["-z"])):
        path = os.path.join(workdir, name)
        if not os.path.exists(path):
            if os.geteuid() != 0:
                raise SystemExit("bench perf: recording needs root (or pass perf.data files)")
            ev = [x for e in EVENTS for x in ("-e", e)]
            subprocess.run(["perf", "record", "-q", "-a", "-m", "64M", *extra, *ev, "-o", path + ".tmp",
                            "--", "sh", "-c", loop], check=True, stderr=subprocess.DEVNULL)
            os.replace(path + ".tmp", path)
        out.append(path)
    return out


def _ours(path: str) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def _perf(path: str) -> dict:
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        subprocess.run(["perf", "script", "-i", path], stdout=null, stderr=subprocess.DEVNULL, check=True)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"seconds": dt, "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)}


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    files = args.files or record(args.workdir, args.seconds)
    table = Table(title="perf.data: mtaudit reader vs perf script > /dev/null (median of runs)")
    for c in ("file", "MB", "samples", "ours wall s", "ours cpu s", "perf wall s", "perf cpu s",
              "ratio cpu", "ratio wall", "ours Msamples/s"):
        table.add_column(c, justify="right")
    for path in files:
        ours = [_ours(path) for _ in range(args.runs)]
        peer = [_perf(path) for _ in range(args.runs)]
        ow, oc = statistics.median(o["seconds"] for o in ours), statistics.median(o["cpu"] for o in ours)
        pw_, pc = statistics.median(p["seconds"] for p in peer), statistics.median(p["cpu"] for p in peer)
        n = ours[0]["events"]
        table.add_row(os.path.basename(path), f"{os.path.getsize(path) / 1e6:.1f}", f"{n:,}", f"{ow:.3f}",
                      f"{oc:.3f}", f"{pw_:.3f}", f"{pc:.3f}", f"{pc / max(oc, 1e-9):.1f}x",
                      f"{pw_ / max(ow, 1e-9):.1f}x", f"{n / max(ow, 1e-9) / 1e6:.2f}")
    Console().print(table)
    print(f"walker: {ours[0]['walker']}; load average: {os.getloadavg()[0]:.1f}")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mtaudit bench perf", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
