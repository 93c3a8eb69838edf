"""Scale benchmark: `mtaudit analyze` and `convert` on real captures of growing size, against the peer.

    mtaudit bench scale [--workdir DIR] [--sizes 10M,30M,100M] [--kinds trace,perf]
                        [--capture PATH ...] [--analyze-args "..."] [--markdown F] [--plot F] [--json F]
    mtaudit bench scale --text [--seconds S] [--text-sizes 1M,3M,10M]

Real captures only.  By default: binary captures of about 10 M, 30 M and 100 M events, each as
trace.dat (`mtaudit record --backend tracefs`) and perf.data (`--backend perf`), in DIR as
trace-10M/, perf-10M/, ...; a missing one is recorded and the command printed; `--capture`
measures the given bundles / files instead.  Each: `mtaudit analyze` against `trace-cmd report -R`
or `perf script` (> /dev/null) on the same file in the same run; see benchmarks/scale_captures.py.
The table is printed as markdown (and written to --markdown), peak RSS against events is
plotted to --plot (default DIR/scale-rss.png).

--text, the text readers: when DIR has no `perf.data`, one is recorded on this machine
(root, perf, kmem tracepoints) and the command used is printed:

    perf record -a -e kmem:mm_page_alloc,...,kmem:mm_page_alloc_extfrag -o DIR/perf.data \\
        -- python3 -c <mmap churn for S seconds>

then `perf script` turns it into DIR/perf.txt.  The page-allocator event rate of that churn
was 0.09-0.28 M events/s on the shared 2-core machine: `--seconds 80` gave 7.06 M events
(650 MB perf.data, 949 MB text); a 100 M-event capture needs about 400-1100 s and 14 GB of text.  Tracing is restored by perf itself
when it exits.  Measured, each in a fresh child process (peak RSS from wait4):

* peer: `perf script -i perf.data > /dev/null` (what it costs just to print the capture);
* `mtaudit analyze` on the first N records of perf.txt for every size, and on the whole file:
  wall time, peak RSS, bytes per event; the ratio against the peer on the whole file;
* `mtaudit convert perf.txt` (the text reader streaming into Parquet): peak RSS against the
  file size;
* for every --bundle (trace.dat captures): `mtaudit analyze` vs `trace-cmd report -R > /dev/null`.

Speed is a benchmark, never a timed test (project rule).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
EVENTS = ("kmem:mm_page_alloc,kmem:mm_page_free,kmem:mm_page_free_batched,kmem:mm_page_pcpu_drain,"
          "kmem:mm_page_alloc_zone_locked,kmem:mm_page_alloc_extfrag")
CHURN = ("import mmap,sys,time\n"
         "end=time.time()+float(sys.argv[1])\n"
         "while time.time()<end:\n"
         "    m=mmap.mmap(-1,64<<20)\n"
         "    for o in range(0,64<<20,4096): m[o]=1\n"
         "    m.close()\n")


def measure(cmd: list[str], stdout=subprocess.DEVNULL) -> dict:
    """Wall time, CPU time (user+sys), exit status and peak RSS (bytes) of one child process.

    CPU time is reported beside wall time because a shared machine's load stretches the
    wall clock of both sides unevenly; the ratios are given for both.
    """
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": dt, "cpu": ru.ru_utime + ru.ru_stime, "exit": p.returncode, "peak_rss": ru.ru_maxrss * 1024,
            "stderr": err[-400:]}


def record(workdir: str, seconds: float, out=print) -> str:
    """Record DIR/perf.data on this machine (root, perf); returns its path."""
    data = os.path.join(workdir, "perf.data")
    if os.path.exists(data):
        return data
    if not shutil.which("perf"):
        raise SystemExit("bench scale: perf not installed (Debian linux-perf) and no perf.data in the workdir")
    if os.geteuid() != 0:
        raise SystemExit("bench scale: recording needs root (or put a perf.data into the workdir)")
    cmd = ["perf", "record", "-q", "-a", "-e", EVENTS, "-o", data + ".tmp", "--",
           sys.executable, "-c", CHURN, str(seconds)]
    out(f"recording a capture: {' '.join(cmd[:8])} -- python3 -c <mmap churn> {seconds}")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    os.replace(data + ".tmp", data)
    return data


def text_of(workdir: str, data: str) -> str:
    txt = os.path.join(workdir, "perf.txt")
    if not os.path.exists(txt):
        with open(txt + ".tmp", "w") as f:
            subprocess.run(["perf", "script", "-i", data], stdout=f, stderr=subprocess.DEVNULL, check=True)
        os.replace(txt + ".tmp", txt)
    return txt


def head(txt: str, n: int, workdir: str) -> str | None:
    """The first n record lines of txt as a file of their own (None: the capture is smaller)."""
    path = os.path.join(workdir, f"perf-{n}.txt")
    if os.path.exists(path):
        return path
    with open(txt, "rb") as src, open(path + ".tmp", "wb") as dst:
        for i, line in enumerate(src):
            if i >= n:
                break
            dst.write(line)
        else:
            dst.close()
            os.unlink(path + ".tmp")
            return None
    os.replace(path + ".tmp", path)
    return path


def count_lines(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            n += chunk.count(b"\n")
    return n


def _size(text: str) -> int:
    t = text.strip().upper()
    mult = {"K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:], 1)
    return int(float(t[:-1] if t[-1:] in "KMG" else t) * mult)


def mtaudit(*args: str) -> list[str]:
    return [sys.executable, "-m", "analyzer.cli", *args]


def bench_captures(args, out=print) -> dict:
    """The binary captures (default mode): see benchmarks/scale_captures.py."""
    import shlex

    from . import scale_captures as sc
    os.makedirs(args.workdir, exist_ok=True)
    extra = shlex.split(args.analyze_args or "")
    captures = list(args.capture)
    if not captures:
        for label in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
                if kind not in sc.KINDS:
                    raise SystemExit(f"bench scale: --kinds: unknown kind {kind!r} (trace, perf)")
                captures.append(sc.ensure_capture(args.workdir, kind, label, out))
    from rich.console import Console
    con = Console(stderr=True)
    rows = []
    for c in captures:
        with con.status(f"measuring {c}: peer, then mtaudit analyze"):
            rows.append(sc.bench_capture(c, extra, os.path.join(args.workdir, "counts.json"), out,
                                         peer=not args.no_peer,
                                         max_rss=int(args.max_rss * 1e9) if args.max_rss else sc.default_max_rss()))
    table = sc.markdown(rows, extra)
    out("")
    out(table)
    if args.markdown:
        with open(args.markdown + ".tmp", "w") as f:
            f.write(table)
        os.replace(args.markdown + ".tmp", args.markdown)
    png = args.plot or os.path.join(args.workdir, "scale-rss.png")
    if rows and png != "-":
        sc.plot(rows, png)
        out(f"peak RSS against events: {png}")
    return {"captures": sc.as_json(rows), "analyze_args": extra, "cpus": os.cpu_count()}


def bench(args, out=print) -> dict:
    if not args.text:
        return bench_captures(args, out)
    os.makedirs(args.workdir, exist_ok=True)
    res: dict = {"text": [], "bundles": []}
    if not args.no_perf:
        data = record(args.workdir, args.seconds, out)
        txt = text_of(args.workdir, data)
        total = count_lines(txt)
        peer = measure(["perf", "script", "-i", data])
        out(f"capture: {data} ({os.path.getsize(data) / 1e6:.0f} MB), perf.txt {total:,} records "
            f"({os.path.getsize(txt) / 1e6:.0f} MB); peer `perf script > /dev/null` {peer['seconds']:.2f} s "
            f"(cpu {peer['cpu']:.2f} s)")
        res["peer_perf_script_s"] = peer["seconds"]
        res["peer_perf_script_cpu"] = peer["cpu"]
        sizes = sorted({n for n in (_size(s) for s in args.text_sizes.split(",")) if n < total}) + [total]
        for n in sizes:
            path = txt if n == total else head(txt, n, args.workdir)
            if path is None:
                continue
            m = measure(mtaudit("analyze", path, "-q"))
            row = {"events": n, "bytes": os.path.getsize(path), "analyze_s": m["seconds"], "analyze_cpu": m["cpu"],
                   "exit": m["exit"], "peak_rss": m["peak_rss"], "rss_per_event": m["peak_rss"] / n}
            if n == total:
                row["vs_perf_script"] = peer["seconds"] / m["seconds"]
                row["vs_perf_script_cpu"] = peer["cpu"] / m["cpu"]
            res["text"].append(row)
            out(f"analyze perf text {n:>12,} events: {m['seconds']:7.2f} s (cpu {m['cpu']:.2f} s), peak RSS "
                f"{m['peak_rss'] / 1e6:7.0f} MB ({m['peak_rss'] / n:.0f} B/event), exit {m['exit']}"
                + (f"; perf script / mtaudit = {row['vs_perf_script']:.2f}x wall, {row['vs_perf_script_cpu']:.2f}x cpu"
                   if n == total else ""))
            if m["exit"] not in (0, 1, 3):
                out(f"  failed: {m['stderr'].strip()}")
        conv = os.path.join(args.workdir, "convert-out")
        shutil.rmtree(conv, ignore_errors=True)
        m = measure(mtaudit("convert", txt, conv))
        shutil.rmtree(conv, ignore_errors=True)
        res["convert"] = {"bytes": os.path.getsize(txt), "seconds": m["seconds"], "cpu": m["cpu"],
                          "peak_rss": m["peak_rss"], "exit": m["exit"]}
        out(f"convert perf text ({os.path.getsize(txt) / 1e6:.0f} MB, streamed): {m['seconds']:.2f} s "
            f"(cpu {m['cpu']:.2f} s), "
            f"peak RSS {m['peak_rss'] / 1e6:.0f} MB, exit {m['exit']}")
    for b in args.bundle:
        tdat = os.path.join(b, "trace.dat") if os.path.isdir(b) else b
        peer = measure(["trace-cmd", "report", "-R", "-i", tdat]) if shutil.which("trace-cmd") else None
        m = measure(mtaudit("analyze", b, "-q"))
        row = {"capture": b, "analyze_s": m["seconds"], "analyze_cpu": m["cpu"], "peak_rss": m["peak_rss"],
               "exit": m["exit"], "trace_cmd_s": peer["seconds"] if peer else None,
               "trace_cmd_cpu": peer["cpu"] if peer else None}
        res["bundles"].append(row)
        ratio = (f"{peer['seconds'] / m['seconds']:.2f}x wall, {peer['cpu'] / m['cpu']:.2f}x cpu" if peer
                 else "n/a (trace-cmd not installed)")
        out(f"analyze {os.path.basename(b.rstrip('/'))}: {m['seconds']:.2f} s (cpu {m['cpu']:.2f} s), peak RSS "
            f"{m['peak_rss'] / 1e6:.0f} MB; trace-cmd report -R {peer['seconds'] if peer else float('nan'):.2f} s "
            f"(cpu {peer['cpu'] if peer else float('nan'):.2f} s) -> mtaudit faster by {ratio}")
    return res


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--workdir", default=os.environ.get("MTAUDIT_BENCH_DIR",
                                                         os.path.expanduser("~/.cache/mtaudit-bench/scale")),
                    help="where the recorded captures live (default ~/.cache/mtaudit-bench/scale; several GB)")
    ap.add_argument("--sizes", default="10M,30M,100M",
                    help="capture sizes in events: DIR/trace-<SIZE>/ and DIR/perf-<SIZE>/ (recorded when missing)")
    ap.add_argument("--kinds", default="trace,perf", help="trace (trace.dat, tracefs) and/or perf (perf.data)")
    ap.add_argument("--capture", action="append", default=[], metavar="PATH",
                    help="measure this bundle / trace.dat / perf.data instead of DIR's; repeatable")
    ap.add_argument("--analyze-args", metavar="ARGS", default="",
                    help='extra `mtaudit analyze` arguments, one shell-quoted string (e.g. "--chunk-events 5000000")')
    ap.add_argument("--no-peer", action="store_true", help="do not run trace-cmd / perf script")
    ap.add_argument("--max-rss", type=float, metavar="GB",
                    help="stop an analyze whose anonymous RSS passes GB (default: half the machine's memory)")
    ap.add_argument("--markdown", metavar="FILE", help="also write the markdown table to FILE")
    ap.add_argument("--plot", metavar="PNG", help="peak RSS against events (default DIR/scale-rss.png; - for none)")
    ap.add_argument("--text", action="store_true",
                    help="the text readers instead: a perf capture as `perf script` text, sliced by --text-sizes")
    ap.add_argument("--seconds", type=float, default=20.0, help="--text: length of the recording when one is made")
    ap.add_argument("--text-sizes", default="1M,3M,10M,30M,100M",
                    help="--text: analyze the first N records of the text for each N (plus the whole text)")
    ap.add_argument("--bundle", action="append", default=[], metavar="DIR",
                    help="--text: also a trace.dat capture against `trace-cmd report -R`; repeatable")
    ap.add_argument("--no-perf", action="store_true", help="--text: skip the perf capture (bundles only)")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")


def run(args) -> int:
    res = bench(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
