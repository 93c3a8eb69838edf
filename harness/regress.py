"""`mtaudit regress` runs: collect interleaved baseline/candidate bundles, analyze every one.

The run, not the event, is the statistical unit, so each run is kept whole: its bundle, its
manifest, its analysis JSON and the reasons it failed.  A failed run (panic, hang, lost events,
console BUG/WARNING, analysis error) stays in the table; the statistics decide what it means.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from analyzer import bundle as bundle_format
from analyzer.analysis import SCHEMA_VERSION as ANALYSIS_SCHEMA_VERSION
from collectors.errors import CollectError

SIDES = ("baseline", "candidate")
FAILING_CONSOLE = ("panic", "BUG", "WARNING", "Oops")   # console problems that fail a run
ANALYZE_TIMEOUT = 1800.0


@dataclass
class Run:
    """One boot of one kernel (or one bundle handed in), and what came of it."""
    side: str
    index: int                      # 1-based within its side
    bundle: Path | None = None
    manifest: dict = field(default_factory=dict)
    analysis: dict | None = None    # `mtaudit analyze --json` document
    analysis_exit: int | None = None
    analysis_error: str | None = None
    collect_error: str | None = None
    timings: dict = field(default_factory=dict)
    worker: str | None = None       # the dask worker that ran it (regress --scheduler)

    @property
    def label(self) -> str:
        return f"{self.side[0]}{self.index}"

    def problems(self) -> list[str]:
        """Why this run cannot count as a clean data point (empty list: clean)."""
        out = []
        if self.collect_error and not self.manifest:
            out.append(f"collect failed: {self.collect_error}")
        if self.manifest.get("status") == "failed":
            out.append(f"guest failed: {self.manifest.get('failure') or 'unknown reason'}")
        lost = sum(int(v or 0) for v in (self.manifest.get("lost_events") or {}).values())
        if not lost and self.analysis:
            lost = int((self.analysis.get("lost_events") or {}).get("total") or 0)
        if lost:
            out.append(f"{lost} trace events lost")
        for p in self.console_problems():
            if p.get("kind") in FAILING_CONSOLE:
                out.append(f"console {p['kind']}: {p.get('line', '')[:120]}")
        if self.analysis is None:
            out.append(f"not analyzed: {self.analysis_error or 'no analysis'}")
        return out

    def console_problems(self) -> list[dict]:
        return list(self.manifest.get("console_problems") or [])

    @property
    def ok(self) -> bool:
        return not self.problems()


# ---------------------------------------------------------------------------------------------
# analysis of one bundle (a subprocess: isolates crashes and memory, and its JSON is the contract)

def analysis_schema_problem(doc: object, path: Path) -> str | None:
    """Why an analysis JSON cannot be read by this harness (None: it can): the analyzer and the
    harness may come from different installs, and a renamed key would otherwise read as zero."""
    ver = doc.get("schema_version") if isinstance(doc, dict) else None
    if ver != ANALYSIS_SCHEMA_VERSION:
        return f"{path}: analysis schema_version {ver!r}, this harness reads {ANALYSIS_SCHEMA_VERSION}"
    return None


def cli_env() -> dict[str, str]:
    """The environment for `python -m analyzer.cli ...` children: this install's modules first."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def analyze_bundle(bundle: Path, json_out: Path,
                   runner: Callable[..., Any] = subprocess.run) -> tuple[dict | None, int, str | None, float]:
    """(analysis JSON or None, analyze exit code, error line, seconds).

    `runner` is subprocess.run's stand-in: a dask worker passes one that a cancelled regression
    can stop (harness/dist.py)."""
    t0 = time.monotonic()
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.unlink(missing_ok=True)   # never read an earlier run's analysis as this one's
    argv = [sys.executable, "-m", "analyzer.cli", "analyze", str(bundle), "--json", str(json_out), "-q"]
    try:
        p = runner(argv, capture_output=True, text=True, timeout=ANALYZE_TIMEOUT, env=cli_env())
    except subprocess.TimeoutExpired:
        return None, -1, f"analysis timed out after {ANALYZE_TIMEOUT:.0f}s", time.monotonic() - t0
    dt = time.monotonic() - t0
    doc = None
    if json_out.exists():
        try:
            doc = json.loads(json_out.read_text())
        except (OSError, ValueError) as e:
            return None, p.returncode, f"{json_out}: unreadable analysis JSON ({e})", dt
        bad = analysis_schema_problem(doc, json_out)
        if bad:
            return None, p.returncode, bad, dt
    err = None
    if doc is None:
        lines = [ln for ln in (p.stderr or "").strip().splitlines() if ln.strip()]
        err = lines[-1] if lines else f"mtaudit analyze exited {p.returncode}"
    return doc, p.returncode, err, dt


def read_manifest(bundle: Path) -> dict:
    """The bundle's manifest (schema checked by analyzer/bundle.py) as a dict; {} when it has none."""
    try:
        m = bundle_format.read_manifest(bundle)
    except bundle_format.CaptureError as e:
        raise CollectError(str(e)) from None
    return m.to_dict() if m else {}


def find_bundles(paths: list[Path]) -> list[Path]:
    """Bundle dirs from the arguments: a bundle itself, or a directory holding bundles."""
    out: list[Path] = []
    for p in paths:
        if not p.exists():
            raise CollectError(f"{p}: no such bundle or directory")
        if p.is_file() and p.name.endswith(".tar.zst"):
            out.append(p)
        elif (p / "manifest.json").is_file() or (p / "trace.dat").is_file():
            out.append(p)
        elif p.is_dir():
            kids = sorted(k for k in p.iterdir() if k.is_dir() and (k / "manifest.json").is_file())
            kids += sorted(k for k in p.iterdir() if k.is_file() and k.name.endswith(".tar.zst"))
            if not kids:
                raise CollectError(f"{p}: neither a bundle (no manifest.json/trace.dat) nor a "
                                   "directory of bundles")
            out += kids
        else:
            raise CollectError(f"{p}: not a bundle directory or .tar.zst")
    seen, uniq = set(), []
    for b in out:
        r = b.resolve()
        if r not in seen:
            seen.add(r)
            uniq.append(b)
    return uniq


# ---------------------------------------------------------------------------------------------
# progress

class Progress:
    """Rich progress (one line per active run) on a terminal, timestamped lines otherwise."""

    def __init__(self, total: int, quiet: bool = False):
        from rich.console import Console
        self.console = Console(stderr=True)
        self.quiet = quiet
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.total = total
        self.prog: Any = None   # a rich Progress on a terminal
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        if self.console.is_terminal and not self.quiet:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RP, SpinnerColumn,
                                       TextColumn, TimeElapsedColumn)
            self.prog = RP(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                           MofNCompleteColumn(), TimeElapsedColumn(), console=self.console)
            self.prog.__enter__()
            self.tasks["all"] = self.prog.add_task("runs", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.prog:
            self.prog.__exit__(*exc)

    def say(self, who: str, msg: str) -> None:
        with self.lock:
            if self.prog:
                if who not in self.tasks:
                    self.tasks[who] = self.prog.add_task(f"{who}: {msg}", total=None)
                else:
                    self.prog.update(self.tasks[who], description=f"{who}: {msg}"[:110])
            elif not self.quiet:
                print(f"mtaudit regress: [{time.monotonic() - self.t0:7.1f}s] {who}: {msg}",
                      file=sys.stderr, flush=True)

    def done(self, who: str, msg: str) -> None:
        with self.lock:
            if self.prog:
                if who in self.tasks:
                    self.prog.remove_task(self.tasks.pop(who))
                self.prog.advance(self.tasks["all"])
                self.console.log(f"{who}: {msg}")
            elif not self.quiet:
                print(f"mtaudit regress: [{time.monotonic() - self.t0:7.1f}s] {who}: {msg}",
                      file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# planning

def interleaved(n: int) -> list[tuple[str, int]]:
    """b1, c1, b2, c2, ...: machine noise (other load, thermal, cache state) falls on both sides."""
    return [(s, i) for i in range(1, n + 1) for s in SIDES]


def plan_smp(requested: int, jobs: int, cores: int) -> tuple[int, str | None]:
    """Guest CPUs per run so that guest CPUs x jobs <= host cores; (smp, note or None).

    TCG runs one host thread per guest CPU: oversubscribing the host stretches every guest's
    timing differently and makes runs incomparable, so the harness lowers guest CPUs (same for
    both sides) rather than overcommit, and refuses when not even one CPU per guest fits."""
    if jobs < 1:
        raise CollectError("--jobs must be >= 1")
    if jobs > cores:
        raise CollectError(f"--jobs {jobs} needs at least {jobs} host cores (this host has {cores})")
    if requested * jobs <= cores:
        return requested, None
    smp = max(1, cores // jobs)
    return smp, (f"guest CPUs lowered from {requested} to {smp} on both sides so that guest CPUs x "
                 f"jobs ({smp} x {jobs}) <= host cores ({cores})")


def bundle_name(label: str, spec: str, scenario: str) -> str:
    tag = re.sub(r"[^A-Za-z0-9.]+", "-", spec).strip("-")
    return f"{label}-{tag}-{scenario}"


# ---------------------------------------------------------------------------------------------
# running

@dataclass
class Plan:
    specs: dict[str, str]
    scenario: str
    runs: int
    jobs: int
    out: Path
    smp: int | None = None
    memory: int | None = None
    timeout: float | None = None
    accel: str = "auto"
    arch: str | None = None


def fetch_kernels(plan: Plan, prog: Progress) -> dict[str, float]:
    """Resolve (download or build) both kernels once, before any guest starts; seconds per side."""
    from collectors.collect import resolve_kernel
    out = {}
    for side in SIDES:
        t0 = time.monotonic()
        resolve_kernel(plan.specs[side], plan.arch, lambda m, s=side: prog.say(s, m))
        out[side] = round(time.monotonic() - t0, 2)
        prog.done(side, f"kernel {plan.specs[side]} ready ({out[side]:.1f}s)")
    return out


def _one_run(plan: Plan, run: Run, smp: int, prog: Progress) -> Run:
    from collectors.collect import Options, collect
    name = bundle_name(run.label, plan.specs[run.side], plan.scenario)
    o = Options(kernel=plan.specs[run.side], scenario=plan.scenario, out=plan.out / "bundles",
                name=name, arch=plan.arch, memory=plan.memory, smp=smp, timeout=plan.timeout,
                accel=plan.accel)
    t0 = time.monotonic()
    try:
        run.bundle = collect(o, lambda m: prog.say(run.label, m))
    except CollectError as e:
        run.collect_error = str(e)
        cand = plan.out / "bundles" / name
        if cand.is_dir():
            run.bundle = cand
    run.timings["collect_s"] = round(time.monotonic() - t0, 2)
    if run.bundle is not None:
        run.manifest = read_manifest(run.bundle)
        run.timings.update({k: v for k, v in (run.manifest.get("timings") or {}).items()})
        analyze_run(run, plan.out, prog)
    else:
        run.analysis_error = "no bundle"
    prog.done(run.label, summary_line(run))
    return run


def analyze_run(run: Run, out: Path, prog: Progress) -> None:
    prog.say(run.label, "analyzing")
    doc, rc, err, dt = analyze_bundle(run.bundle, out / "analysis" / f"{run.label}.json")
    run.analysis, run.analysis_exit, run.analysis_error = doc, rc, err
    run.timings["analyze_s"] = round(dt, 2)


def summary_line(run: Run) -> str:
    probs = run.problems()
    if run.analysis is not None:
        found = {d["id"]: d.get("count", 0) for d in run.analysis.get("detectors", [])
                 if isinstance(d, dict) and "id" in d}
        counts = " ".join(f"{k}={v}" for k, v in found.items())
    else:
        counts = "no analysis"
    return f"{'ok' if not probs else 'FAILED'} {counts}" + (f" ({'; '.join(probs)})" if probs else "")


def run_specs(plan: Plan, scenario_smp: int, cores: int, quiet: bool = False,
              on_note: Callable[[str], None] | None = None) -> tuple[list[Run], dict]:
    """Fetch both kernels, then run the interleaved plan with `jobs` guests at a time."""
    smp, note = plan_smp(plan.smp or scenario_smp, plan.jobs, cores)
    if note and on_note:
        on_note(note)
    runs = [Run(side=s, index=i) for s, i in interleaved(plan.runs)]
    phases: dict = {"smp": smp, "smp_note": note}
    with Progress(total=len(runs) + 2, quiet=quiet) as prog:
        t0 = time.monotonic()
        phases["fetch_s"] = fetch_kernels(plan, prog)
        t1 = time.monotonic()
        with ThreadPoolExecutor(max_workers=plan.jobs) as pool:
            futs = [pool.submit(_one_run, plan, r, smp, prog) for r in runs]
            for f in futs:
                f.result()
        phases["runs_wall_s"] = round(time.monotonic() - t1, 2)
        phases["fetch_wall_s"] = round(t1 - t0, 2)
    return runs, phases


def plan_bundles(paths: dict[str, list[Path]]) -> list[Run]:
    """One run per bundle collected elsewhere, ordered within its side by manifest start time."""
    runs: list[Run] = []
    for side in SIDES:
        bs = find_bundles(paths[side])
        ms = [(read_manifest(b) if b.is_dir() else {}, b) for b in bs]
        ms.sort(key=lambda mb: (mb[0].get("started") or "", str(mb[1])))
        for i, (m, b) in enumerate(ms, 1):
            r = Run(side=side, index=i, bundle=b, manifest=m)
            r.timings.update(m.get("timings") or {})
            runs.append(r)
    return runs


def run_bundles(paths: dict[str, list[Path]], out: Path, jobs: int, quiet: bool = False) -> list[Run]:
    """Analyze bundles collected elsewhere; runs ordered by their manifest start time."""
    runs = plan_bundles(paths)
    with Progress(total=len(runs), quiet=quiet) as prog:
        def work(r: Run) -> None:
            analyze_run(r, out, prog)
            prog.done(r.label, f"{r.bundle.name}: {summary_line(r)}")
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for f in [pool.submit(work, r) for r in runs]:
                f.result()
    return runs
