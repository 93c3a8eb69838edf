"""`mtaudit regress`: the same scenario on two kernels, N interleaved runs each, one verdict.

Exit status: 0 pass, 1 regression (or new finding, or an unmet --expect-fix), 2 harness failure
or bad input, 3 inconclusive (failed runs, too few runs/events, expectation not decidable).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from collectors.errors import CollectError

from .stats import MIN_RUNS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "regress", help="compare two kernels on one scenario over N interleaved runs (CI verdicts)",
        description="Run SCENARIO N times on a baseline and a candidate kernel (interleaved: b1 c1 "
                    "b2 c2 ...), or take bundles collected elsewhere, analyze every bundle and give "
                    "each detector a verdict: fixed, improved, unchanged, regressed, new or "
                    "inconclusive.  Writes summary.md, junit.xml, result.json and report.html.",
        epilog="exit status: 0 pass, 1 regression or unmet --expect-fix, 2 harness failure or bad "
               "input, 3 inconclusive")
    p.add_argument("--baseline", metavar="SPEC", help="baseline kernel (same SPECs as collect --kernel)")
    p.add_argument("--candidate", metavar="SPEC", help="candidate kernel")
    p.add_argument("--baseline-bundles", nargs="+", type=Path, metavar="DIR",
                   help="baseline bundles (bundle dirs, or dirs holding bundles) instead of --baseline")
    p.add_argument("--candidate-bundles", nargs="+", type=Path, metavar="DIR",
                   help="candidate bundles instead of --candidate")
    p.add_argument("--scenario", metavar="NAME", help="scenario to run (with --baseline/--candidate)")
    p.add_argument("--runs", type=int, default=3, metavar="N",
                   help="runs per kernel (default 3, at least 2; 3 show a fix, a new finding or a "
                        "doubled rate needs about 5-10: docs/ci.md)")
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="guests (or analyses) in parallel; guest CPUs x J must fit the host's cores, "
                        "else guest CPUs are lowered on both sides (default 1)")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="run every guest (and its analysis) as a task on a dask.distributed cluster: "
                        "tcp://HOST:8786 an existing scheduler, 'local' a local cluster of --jobs "
                        "workers; bundles and analyses come back to --out (needs mtaudit[dist])")
    p.add_argument("--expect-fix", action="append", default=[], metavar="ID",
                   help="detector that must come out 'fixed' (repeatable); unmet -> exit 1")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output directory (default ./mtaudit-regress-<UTC time>)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--min-events", type=int, default=1, metavar="N",
                   help="fewest events a detector must judge in every run to get a verdict (default 1; "
                        "a side with no findings must also judge enough events that the other side's "
                        "rate predicts >= 3 findings per run for 'fixed', >= 3 in all for other verdicts)")
    p.add_argument("--arch", help="guest architecture when the SPECs do not say")
    p.add_argument("--smp", type=int, metavar="N", help="guest CPUs (default: the scenario's)")
    p.add_argument("--memory", type=int, metavar="MIB", help="guest RAM (default: the scenario's)")
    p.add_argument("--timeout", type=float, metavar="S", help="scenario phase limit (default: the scenario's)")
    p.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto")
    p.add_argument("--no-html", action="store_true", help="skip report.html")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress and no terminal table")
    p.set_defaults(func=_run)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def _check_args(a: argparse.Namespace) -> str:
    specs = a.baseline or a.candidate
    bundles = a.baseline_bundles or a.candidate_bundles
    if specs and bundles:
        raise CollectError("give kernels (--baseline/--candidate) or bundles (--*-bundles), not both")
    if specs:
        if not (a.baseline and a.candidate):
            raise CollectError("--baseline and --candidate are both needed")
        if not a.scenario:
            raise CollectError("--scenario is needed with --baseline/--candidate")
        if a.runs < MIN_RUNS:
            raise CollectError(f"--runs must be >= {MIN_RUNS}: fewer runs per kernel cannot gate CI "
                               "(3 per kernel show a fix; docs/ci.md says how many runs an effect needs)")
        return "specs"
    if bundles:
        if not (a.baseline_bundles and a.candidate_bundles):
            raise CollectError("--baseline-bundles and --candidate-bundles are both needed")
        return "bundles"
    raise CollectError("give --baseline/--candidate SPECs (with --scenario) or --baseline-bundles/"
                       "--candidate-bundles")


def _remove_if_empty(out: Path) -> None:
    """Remove `out` when it holds directories only (no file was written into it)."""
    if any(p.is_file() or p.is_symlink() for p in out.rglob("*")):
        return
    shutil.rmtree(out, ignore_errors=True)


def _run(a: argparse.Namespace) -> int:
    from . import regress, report as regress_report
    from .stats import compare, failed_comparison, run_record
    mode = _check_args(a)
    if not 0 < a.alpha < 1:
        raise CollectError("--alpha must be between 0 and 1")
    if a.jobs < 1:
        raise CollectError("--jobs must be >= 1")
    if a.scheduler:
        from .dist import require_dask
        require_dask(a.scheduler)   # one line, exit 2, before anything is created
    out = (a.out or Path(f"mtaudit-regress-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")).resolve()
    if out.exists() and not out.is_dir():
        raise CollectError(f"--out {out}: exists and is not a directory")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    notes: list[str] = []
    phases: dict = {}
    old = signal.signal(signal.SIGTERM, _sigterm)
    # SIGINT too, even when inherited ignored (collectors.commands.interruptible says why)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if mode == "specs":
            from collectors.guest import scenarios
            sc = scenarios.load(a.scenario)
            plan = regress.Plan(specs={"baseline": a.baseline, "candidate": a.candidate},
                                scenario=a.scenario, runs=a.runs, jobs=a.jobs, out=out, smp=a.smp,
                                memory=a.memory, timeout=a.timeout, accel=a.accel, arch=a.arch)
            say = (lambda m: None) if a.quiet else (lambda m: print(f"mtaudit regress: {m}", file=sys.stderr))
            if not a.scheduler or a.scheduler == "local":   # refuse before fetching
                regress.plan_smp(a.smp or sc.smp, a.jobs, os.cpu_count() or 1)

            def note(m: str) -> None:
                notes.append(m)
                say(m)
            if a.scheduler:
                from . import dist
                runs, phases = dist.run_specs(plan, sc.smp, a.scheduler, a.quiet, on_note=note)
            else:
                runs, phases = regress.run_specs(plan, sc.smp, os.cpu_count() or 1, a.quiet, on_note=note)
            specs = dict(plan.specs)
            scenario = sc.name
        else:
            given = {"baseline": a.baseline_bundles, "candidate": a.candidate_bundles}
            if a.scheduler:
                from . import dist
                runs = dist.run_bundles(given, out, a.scheduler, a.jobs, a.quiet)
            else:
                runs = regress.run_bundles(given, out, a.jobs, a.quiet)
            specs = {s: _spec_of([r for r in runs if r.side == s]) for s in regress.SIDES}
            scs = sorted({(r.manifest.get("scenario") or {}).get("name") or "?" for r in runs})
            scenario = a.scenario or ", ".join(scs)
            if len(scs) > 1:
                notes.append(f"bundles come from different scenarios: {', '.join(scs)}")
    except CollectError:
        if created:
            _remove_if_empty(out)   # e.g. an unreachable scheduler: nothing ran, leave nothing behind
        raise
    except KeyboardInterrupt:
        if a.scheduler:
            print("mtaudit regress: interrupted; remote runs cancelled (running guests stopped), "
                  f"finished bundles kept in {out / 'bundles'}", file=sys.stderr)
        else:
            print("mtaudit regress: interrupted; guests killed, partial bundles kept in "
                  f"{out / 'bundles'}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)   # worker threads are blocked in QEMU; their VMs die with this process
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
    recs = {s: [run_record(r.label, r.side, r.problems(), r.analysis, r.console_problems(),
                           sum(int(v or 0) for v in (r.manifest.get("lost_events") or {}).values()) or None)
                for r in runs if r.side == s] for s in regress.SIDES}
    try:
        cmp = compare(recs["baseline"], recs["candidate"], a.expect_fix, a.alpha, a.min_events)
    except Exception as e:   # noqa: BLE001 -- any bug in the statistics: outputs still written
        cmp = failed_comparison(recs["baseline"], recs["candidate"], f"{type(e).__name__}: {e}",
                                a.alpha, a.min_events)
        notes.append(f"the comparison failed ({type(e).__name__}: {e}); outputs hold the runs only")
    if cmp["stats"].get("gate_note") and cmp["status"] != "error":
        notes.append(cmp["stats"]["gate_note"])
    harness = _harness_failure(runs) if cmp["status"] != "error" else None
    if harness:
        notes.append(harness)
        cmp["status"], cmp["exit_code"] = "error", 2
    if cmp["unknown_expectations"]:
        cmp["status"], cmp["exit_code"] = "error", 2
        notes.append("; ".join(x["reason"] for x in cmp["expectations"] if not x["known"]))
    timing = regress_report.phase_times(runs, phases, time.monotonic() - t0)
    result = regress_report.result_doc(mode, specs, scenario, a, runs, cmp, timing, notes, out)
    regress_report.write_outputs(out, result, runs, html=not a.no_html, quiet=a.quiet)
    result["timing"]["verdict_s"] = round(time.monotonic() - t0, 2)
    regress_report.write_result(out, result)
    if not a.quiet:
        regress_report.print_table(result)
    for n in notes:
        print(f"mtaudit regress: {n}", file=sys.stderr)
    print(str(out))
    return int(cmp["exit_code"])


def _spec_of(runs) -> str:
    specs = sorted({(r.manifest.get("kernel") or {}).get("spec") or
                    (r.analysis or {}).get("capture", {}).get("kernel_release") or "?" for r in runs})
    return ", ".join(specs)


def _harness_failure(runs) -> str | None:
    """Exit 2 when a side has no analyzable run at all: nothing about the kernels was measured.

    Not when that side's console shows a panic/Oops/BUG/WARNING: then the kernel, not the
    harness, is what failed, and the console check judges it."""
    from .regress import FAILING_CONSOLE
    for side in ("baseline", "candidate"):
        rs = [r for r in runs if r.side == side]
        if rs and any(p.get("kind") in FAILING_CONSOLE for r in rs for p in r.console_problems()):
            continue
        if not rs or all(r.analysis is None for r in rs):
            why = rs[0].problems()[0] if rs and rs[0].problems() else "no runs"
            return f"harness failure: no {side} run could be analyzed ({why})"
    return None
