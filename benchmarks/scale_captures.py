"""The scale benchmark on real binary captures: trace.dat and perf.data of about 10 M, 30 M, 100 M events.

For every capture: `mtaudit analyze CAPTURE -q [--analyze-args]` in a fresh child process, exactly
as a user runs it (so whatever analysis code is installed is what gets measured), and the peer on
the same file in the same run: `trace-cmd report -R -i trace.dat > /dev/null` or
`perf script -i perf.data > /dev/null`.  Wall and CPU time (user + sys of the child), peak RSS
(`wait4`), bytes of peak RSS per event, the ratios peer / mtaudit, and the load average around
each measurement (the machine may be shared: CPU time is the fairer comparison).

Captures live in the work directory as `trace-10M/`, `perf-30M/`, ... (bundles written by
`mtaudit record`); a missing one is recorded on this machine (root) with `mtaudit record`
around benchmarks/churn.py, which stops once the recording has reached the size that holds
about that many events, and the exact command is printed.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CHURN = os.path.join(ROOT, "benchmarks", "churn.py")

# Bytes the recording grows by per event while the workload runs, measured on this 2-core
# machine (kernel 6.18): tracefs raw ring-buffer pages 31.3 B/event (5.2 M events, 163 MB);
# perf.data 91 B/sample (7.10 GB for the 78 M-sample recording).
BYTES_PER_EVENT = {"tracefs": 31.3, "perf": 91.0}
KINDS = {"trace": ("tracefs", "trace.dat", ".cpu*.raw", 128), "perf": ("perf", "perf.data", "perf.data", 64)}

Say = Callable[[str], None]


@dataclass
class Run:
    """One child process: how long, how much CPU, how much memory."""
    cmd: list[str]
    wall_s: float
    cpu_s: float
    peak_rss: int
    exit: int
    load: tuple[float, float]        # 1-minute load average before and after
    stderr: str = ""

    @property
    def stopped(self) -> bool:
        """Killed by measure() for passing --max-rss: its numbers are lower bounds."""
        return "killed by the benchmark" in self.stderr


@dataclass
class Row:
    capture: str
    kind: str                          # trace.dat | perf.data
    file: str
    bytes: int
    events: int
    lost: int | None
    analyze: Run
    peer: Run | None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio_wall(self) -> float | None:
        return self.peer.wall_s / self.analyze.wall_s if self.peer and self.analyze.wall_s else None

    @property
    def ratio_cpu(self) -> float | None:
        return self.peer.cpu_s / self.analyze.cpu_s if self.peer and self.analyze.cpu_s else None


def _anon_rss(pid: int) -> int:
    """Anonymous resident memory (RssAnon): what the guard limits.  The readers mmap the capture,
    so VmRSS also counts the file's cached pages (9 GB for a 9.2 GB perf.data), which the kernel
    can drop and which do not starve anyone; the reported peak (wait4) includes them."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("RssAnon:"):
                    return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return 0


def default_max_rss() -> int:
    """Half the machine's memory: a run that needs more is stopped before it starves the others."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def measure(cmd: list[str], max_rss: int | None = None) -> Run:
    """Run cmd with stdout to /dev/null; peak RSS from wait4 (the child's own maximum).

    With max_rss the child is killed once its anonymous RSS passes it (polled 5 times a second; exit
    -9 and a note in stderr), so a 100 M-event run cannot push a shared machine into the OOM killer.
    """
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as errf:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf)
        killed = ""
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if max_rss and _anon_rss(p.pid) > max_rss:
                p.kill()
                killed = f"killed by the benchmark: anonymous RSS above --max-rss {max_rss / 1e9:.1f} GB"
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read().decode(errors="replace")[-400:] + killed
    return Run(cmd=cmd, wall_s=wall, cpu_s=ru.ru_utime + ru.ru_stime, peak_rss=ru.ru_maxrss * 1024,
               exit=p.returncode, load=(load0, os.getloadavg()[0]), stderr=err)


def _size(text: str) -> int:
    t = text.strip().upper()
    mult = {"K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:], 1)
    return int(float(t[:-1] if t[-1:] in "KMG" else t) * mult)


def trace_file(capture: str) -> tuple[str, str]:
    """(file, kind) of a capture: a bundle directory, a trace.dat or a perf.data."""
    path = capture
    if os.path.isdir(capture):
        for name in ("trace.dat", "perf.data"):
            if os.path.exists(os.path.join(capture, name)):
                path = os.path.join(capture, name)
                break
        else:
            raise SystemExit(f"bench scale: {capture}: no trace.dat or perf.data in it")
    with open(path, "rb") as f:
        head = f.read(10)
    if head.startswith(b"\x17\x08\x44tracing"):
        return path, "trace.dat"
    if head.startswith(b"PERFILE2"):
        return path, "perf.data"
    raise SystemExit(f"bench scale: {path}: neither a trace.dat nor a perf.data file")


def record_command(out_dir: str, kind: str, events: int) -> list[str]:
    """`mtaudit record` around the churn, stopped at about `events` events."""
    backend, _name, watch, buffer_mb = KINDS[kind]
    target = int(events * BYTES_PER_EVENT[backend])
    return [sys.executable, "-m", "analyzer.cli", "record", "-o", out_dir, "--backend", backend,
            "--buffer-mb", str(buffer_mb), "--", sys.executable, CHURN, os.path.join(out_dir, watch),
            str(target), "2", "3600"]


def ensure_capture(workdir: str, kind: str, label: str, say: Say) -> str:
    """DIR/<kind>-<label>: recorded on this machine when missing (root; prints the command)."""
    out_dir = os.path.join(workdir, f"{kind}-{label}")
    if os.path.isdir(out_dir):
        return out_dir
    if os.geteuid() != 0:
        raise SystemExit(f"bench scale: {out_dir} is missing and recording one needs root "
                         f"(or give captures with --capture)")
    if kind == "perf" and not shutil.which("perf"):
        raise SystemExit("bench scale: perf is not installed (Debian linux-perf) and there is no " + out_dir)
    cmd = record_command(out_dir, kind, _size(label))
    say("recording: " + shlex.join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return out_dir


def count(path: str, cache_file: str) -> tuple[int, int | None]:
    """(events, lost) of a trace file with mtaudit's reader in a child process, cached by size and mtime.

    Lost: the recorder's manifest when the capture is a bundle (what the kernel's counters said),
    else the reader's lost-event records.
    """
    st = os.stat(path)
    key = f"{os.path.realpath(path)}:{st.st_size}:{int(st.st_mtime)}"
    try:
        with open(cache_file) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        code = ("import json,sys\nfrom analyzer.readers import load\nt=load(sys.argv[1])\n"
                "print(json.dumps([sum(t.events().values()), int(sum(t.lost.column('count').to_pylist()))]))")
        out = subprocess.run([sys.executable, "-c", code, path], check=True, capture_output=True, text=True,
                             cwd=ROOT).stdout
        cache[key] = json.loads(out)
        tmp = cache_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cache, f, indent=1)
        os.replace(tmp, cache_file)
    events, lost = cache[key]
    manifest = os.path.join(os.path.dirname(path), "manifest.json")
    if os.path.exists(manifest):
        try:
            with open(manifest) as f:
                lost = int(sum(json.load(f).get("lost_events", {}).values()))
        except (OSError, ValueError, AttributeError):
            pass
    return int(events), lost


def peer_command(kind: str, path: str) -> list[str] | None:
    if kind == "trace.dat":
        return ["trace-cmd", "report", "-R", "-i", path] if shutil.which("trace-cmd") else None
    return ["perf", "script", "-i", path] if shutil.which("perf") else None


def bench_capture(capture: str, analyze_args: list[str], cache_file: str, say: Say, peer: bool = True,
                  max_rss: int | None = None) -> Row:
    path, kind = trace_file(capture)
    events, lost = count(path, cache_file)
    pcmd = peer_command(kind, path) if peer else None
    p = measure(pcmd) if pcmd else None
    a = measure([sys.executable, "-m", "analyzer.cli", "analyze", capture, "-q", *analyze_args], max_rss)
    row = Row(capture=capture, kind=kind, file=path, bytes=os.path.getsize(path), events=events, lost=lost,
              analyze=a, peer=p)
    if a.exit not in (0, 1, 3):
        row.notes.append(f"analyze exit {a.exit}: {a.stderr.strip()}")
    if p is not None and p.exit != 0:
        row.notes.append(f"peer exit {p.exit}: {p.stderr.strip()}")
    say(line(row))
    return row


def line(r: Row) -> str:
    a, p = r.analyze, r.peer
    peer = (f"; {' '.join(p.cmd[:2])} {p.wall_s:.2f} s (cpu {p.cpu_s:.2f} s, {p.peak_rss / 1e6:.0f} MB) -> "
            f"mtaudit faster by {r.ratio_wall:.2f}x wall, {r.ratio_cpu:.2f}x cpu") if p else "; no peer"
    return (f"{r.capture}: {r.kind}, {r.events:,} events, lost {r.lost if r.lost is not None else '?'}, "
            f"{r.bytes / 1e6:.0f} MB: analyze {a.wall_s:.2f} s (cpu {a.cpu_s:.2f} s), peak RSS "
            f"{a.peak_rss / 1e6:.0f} MB ({a.peak_rss / r.events:.0f} B/event), exit {a.exit}{peer}; "
            f"load {a.load[0]:.1f}-{a.load[1]:.1f}" + "".join(f"\n  {n}" for n in r.notes))


def markdown(rows: list[Row], analyze_args: list[str]) -> str:
    """The table to paste into docs/results.md."""
    loads = [x for r in rows for x in (*r.analyze.load, *(r.peer.load if r.peer else ()))]
    head = (f"`mtaudit analyze CAPTURE -q{(' ' + shlex.join(analyze_args)) if analyze_args else ''}` against the "
            f"peer on the same file, same run; load average {min(loads, default=0):.1f}-{max(loads, default=0):.1f} "
            f"on {os.cpu_count()} CPUs\n\n")
    out = [head + "| capture | events | lost | file | analyze wall / cpu | peak RSS | B/event | peer | "
           "peer wall / cpu | peer RSS | faster by (wall / cpu) |",
           "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        a, p = r.analyze, r.peer
        name = os.path.basename(r.capture.rstrip("/"))
        gt = "> " if a.stopped else ""
        ratio = (f"< {r.ratio_wall:.2f}x / < {r.ratio_cpu:.2f}x (stopped)" if a.stopped
                 else f"{r.ratio_wall:.2f}x / {r.ratio_cpu:.2f}x") if p else ""
        out.append(
            f"| {name} ({r.kind}) | {r.events:,} | {r.lost if r.lost is not None else '?'} | "
            f"{r.bytes / 1e6:,.0f} MB | {gt}{a.wall_s:.1f} s / {gt}{a.cpu_s:.1f} s | {gt}{a.peak_rss / 1e6:,.0f} MB | "
            f"{gt}{a.peak_rss / r.events:.0f} | "
            + (f"`{' '.join(p.cmd[:3] if p.cmd[0] == 'trace-cmd' else p.cmd[:2])}` | {p.wall_s:.1f} s / "
               f"{p.cpu_s:.1f} s | {p.peak_rss / 1e6:,.0f} MB | {ratio} |"
               if p else "n/a | | | |"))
    return "\n".join(out) + "\n"


def plot(rows: list[Row], dest: str) -> None:
    """Peak RSS against events, one line per file kind: flat is the goal."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, mark in (("trace.dat", "o-"), ("perf.data", "s-")):
        pts = sorted((r.events, r.analyze.peak_rss, r.analyze.stopped) for r in rows if r.kind == kind)
        if pts:
            line, = ax.plot([e / 1e6 for e, _, _ in pts], [m / 1e9 for _, m, _ in pts], mark,
                            label=f"mtaudit analyze, {kind}")
            up = [(e, m) for e, m, stop in pts if stop]
            if up:       # stopped at --max-rss: the real peak is higher
                ax.plot([e / 1e6 for e, _ in up], [m / 1e9 for _, m in up], "^", markersize=11,
                        color=line.get_color(), label=f"{kind}: stopped at --max-rss (lower bound)")
    ax.axhline(4, color="grey", linestyle="--", linewidth=1, label="target: 4 GB at 100 M events")
    ax.set_xlabel("events (millions)")
    ax.set_ylabel("peak RSS (GB)")
    ax.set_title("mtaudit analyze: peak memory against capture size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = dest + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, dest)


def as_json(rows: list[Row]) -> list[dict]:
    out = []
    for r in rows:
        d = asdict(r)
        d["ratio_wall"], d["ratio_cpu"] = r.ratio_wall, r.ratio_cpu
        d["bytes_per_event"] = r.analyze.peak_rss / r.events if r.events else None
        out.append(d)
    return out
