"""Benchmark: how often `mtaudit regress` verdicts fail CI for identical kernels, and how often
they catch real changes, by seeded simulation through the real verdict code
(harness.stats.compare, the function the command calls).

Per run count (3+3, 5+5, 10+10 by default) it simulates comparisons of two kernels:

  identical kernels (false alarm = exit 1):
    poisson        one detector, Poisson counts, mean 20-100 per run
    overdispersed  one detector, gamma-Poisson counts (run-to-run CV 0.3), mean 20-100
    rare           one detector firing in 10-30 % of runs (1 + Poisson(1.5) findings when it does)
    mix8           8 detectors (2 Poisson, 2 overdispersed, 2 rare, 2 silent) and a console
                   WARNING in 5 % of runs: the whole family of one comparison
  real changes, on the mix8 background (power):
    fix            a Poisson detector (mean 20-100) drops to 0 on the candidate: verdict fixed
    2x             a Poisson / overdispersed detector doubles its rate: exit 1 with it failing
    new            a finding the baseline never shows appears in 50 % of candidate runs
                   (1 + Poisson(2) findings when it does): exit 1 with it failing

Targets: false alarm <= 0.05 at 3+3 and 5+5 in every identical-kernel case; power_fix = 1.0
at 3+3.  The peer measured in the same run is the previous rule (range rule or any
zero-vs-nonzero fails CI, no multiple-comparison control), so the table shows what changed.

    mtaudit bench verdicts [--sims 500] [--runs 3 5 10] [--seed 1] [--json FILE|-]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.stats import compare, run_record

FALSE_ALARM_TARGET = 0.05
Spec = Callable[[np.random.Generator, int], list[int]]


def _poisson(mu: float) -> Spec:
    return lambda g, n: [int(x) for x in g.poisson(mu, n)]


def _overdispersed(mu: float, cv: float = 0.3) -> Spec:
    shape = 1.0 / cv ** 2
    return lambda g, n: [int(x) for x in g.poisson(g.gamma(shape, mu / shape, n))]


def _rare(q: float, extra: float = 1.5) -> Spec:
    return lambda g, n: [int(1 + g.poisson(extra)) if g.random() < q else 0 for _ in range(n)]


def _silent() -> Spec:
    return lambda g, n: [0] * n


def _records(side: str, dets: dict[str, list[int]], warn: list[int]) -> list[dict]:
    n = len(next(iter(dets.values())))
    out = []
    for i in range(n):
        analysis = {"detectors": [{"id": d, "count": c[i], "checked": 100_000, "applies": True,
                                   "severity": "high"} for d, c in dets.items()],
                    "consistency": {"available": True, "passed": True}}
        console = [{"kind": "WARNING", "line": "WARNING: x"}] * warn[i]
        # a console WARNING makes a run "failed" in the harness; keep that here too
        problems = ["console WARNING: x"] if warn[i] else []
        out.append(run_record(f"{side[0]}{i + 1}", side, problems, analysis, console, 0))
    return out


def _mix8(g: np.random.Generator) -> dict[str, Spec]:
    return {"P1": _poisson(g.uniform(20, 100)), "P2": _poisson(g.uniform(20, 100)),
            "O1": _overdispersed(g.uniform(20, 100)), "O2": _overdispersed(g.uniform(20, 100)),
            "R1": _rare(g.uniform(0.1, 0.3)), "R2": _rare(g.uniform(0.1, 0.3)),
            "Z1": _silent(), "Z2": _silent()}


def simulate(case: str, n: int, g: np.random.Generator, rule: str = "current") -> dict[str, Any]:
    """One comparison of `case` at n+n runs: the exit code and the target row's verdict."""
    warn_q = 0.0
    target, expect = None, None
    if case == "poisson":
        base = {"S1": _poisson(g.uniform(20, 100))}
        cand = dict(base)
    elif case == "overdispersed":
        base = {"S1": _overdispersed(g.uniform(20, 100))}
        cand = dict(base)
    elif case == "rare":
        base = {"S1": _rare(g.uniform(0.1, 0.3))}
        cand = dict(base)
    else:
        base = _mix8(g)
        cand = dict(base)
        warn_q = 0.05
        mu = g.uniform(20, 100)
        target = "T"
        if case == "mix8":
            target = None
        elif case == "fix":
            base["T"], cand["T"], expect = _poisson(mu), _silent(), ["T"]
        elif case == "2x_poisson":
            base["T"], cand["T"] = _poisson(mu), _poisson(2 * mu)
        elif case == "2x_overdispersed":
            base["T"], cand["T"] = _overdispersed(mu), _overdispersed(2 * mu)
        elif case == "new":
            base["T"], cand["T"] = _silent(), _rare(0.5, 2.0)
        else:
            raise ValueError(case)
    b = _records("baseline", {d: f(g, n) for d, f in base.items()}, [int(x) for x in g.random(n) < warn_q])
    c = _records("candidate", {d: f(g, n) for d, f in cand.items()}, [int(x) for x in g.random(n) < warn_q])
    if rule == "previous":
        return _previous_rule(b, c, target)
    res = compare(b, c, expect_fix=expect, secondary=False)
    v = next((r["verdict"] for r in res["detectors"] if r["id"] == target), None)
    return {"exit": res["exit_code"], "verdict": v, "target_failing": target in res["failing"]}


def _previous_rule(b: list[dict], c: list[dict], target: str | None) -> dict[str, Any]:
    """The rule before family-wise control: a row fails CI when a zero side turns nonzero or
    (>= 3 runs) 0-day's range rule separates upward; failed runs make the comparison exit 3."""
    from harness.stats import _range_rule
    if any(not r["ok"] for r in b + c):
        # the old harness: a failed run anywhere makes every detector inconclusive; a console
        # problem only on the candidate side fails CI
        bw, cw = any(r["console"] for r in b), any(r["console"] for r in c)
        return {"exit": 1 if cw and not bw else 3, "verdict": None, "target_failing": False}
    failing = []
    fixed = None
    for d in b[0]["detectors"]:
        bc = [r["detectors"][d]["count"] for r in b]
        cc = [r["detectors"][d]["count"] for r in c]
        if not any(bc) and any(cc) or any(bc) and any(cc) and _range_rule([float(x) for x in bc], [float(x) for x in cc]) == "up":
            failing.append(d)
        if d == target and all(bc) and not any(cc):
            fixed = "fixed"
    return {"exit": 1 if failing else 0, "verdict": fixed, "target_failing": target in failing}


FA_CASES = ("poisson", "overdispersed", "rare", "mix8")
POWER_CASES = ("fix", "2x_poisson", "2x_overdispersed", "new")


def measure(sizes: list[int], sims: int, seed: int, progress: bool = True) -> dict[str, Any]:
    """Every case at every size, `sims` comparisons each, for the current and previous rule."""
    from rich.progress import Progress
    total = len(sizes) * (len(FA_CASES) + len(POWER_CASES)) * sims * 2
    out: dict[str, Any] = {"runs": [f"{n}+{n}" for n in sizes], "sims": sims, "seed": seed,
                           "alpha": 0.05, "false_alarm_rate": {}, "inconclusive_rate": {},
                           "power_fix": {}, "power_2x": {}, "power_new": {}, "previous_rule": {},
                           "ms_per_comparison": {}}
    with Progress(transient=True, disable=not progress) as prog:
        task = prog.add_task("simulating", total=total)
        for n in sizes:
            key = f"{n}+{n}"
            fa: dict[str, float] = {}
            inc: dict[str, float] = {}
            prev: dict[str, dict[str, float]] = {}
            t0 = time.perf_counter()
            count = 0
            for case in FA_CASES + POWER_CASES:
                for rule in ("current", "previous"):
                    g = np.random.default_rng([seed, n, (FA_CASES + POWER_CASES).index(case)])
                    rs = [simulate(case, n, g, rule) for _ in range(sims)]
                    prog.advance(task, sims)
                    if rule == "current":
                        count += sims
                    if case in FA_CASES:
                        rate = sum(r["exit"] == 1 for r in rs) / sims
                        if rule == "current":
                            fa[case] = rate
                            inc[case] = sum(r["exit"] == 3 for r in rs) / sims
                        else:
                            prev.setdefault("false_alarm_rate", {})[case] = rate
                    else:
                        if case == "fix":
                            p = sum(r["verdict"] == "fixed" for r in rs) / sims
                        else:
                            p = sum(r["exit"] == 1 and r["target_failing"] for r in rs) / sims
                        if rule == "current":
                            if case == "fix":
                                out["power_fix"][key] = p
                            elif case == "new":
                                out["power_new"][key] = p
                            else:
                                out["power_2x"].setdefault(key, {})[case[3:]] = p
                        else:
                            prev.setdefault("power", {})[case] = p
            fa["max"] = max(fa[c] for c in FA_CASES)
            out["false_alarm_rate"][key] = fa
            out["inconclusive_rate"][key] = inc
            out["previous_rule"][key] = prev
            out["ms_per_comparison"][key] = round(1000 * (time.perf_counter() - t0) / (2 * count), 2)
    checks = {k: out["false_alarm_rate"][k]["max"] <= FALSE_ALARM_TARGET
              for k in out["runs"] if k in ("3+3", "5+5")}
    out["targets"] = {"false_alarm_max": FALSE_ALARM_TARGET, "power_fix_3+3": 1.0,
                      "false_alarm_met": checks,
                      "power_fix_met": out["power_fix"].get("3+3") == 1.0 if "3+3" in out["power_fix"] else None}
    out["met"] = all(checks.values()) and out["targets"]["power_fix_met"] is not False
    return out


def resample_cost(sizes: list[int]) -> dict[str, dict[str, float]]:
    """Time and peak traced memory (Python and numpy) of one 8-detector comparison at large run
    counts, split cache cold: the capped, seeded resampling keeps both small."""
    import tracemalloc

    from harness.pvalues import splits
    out = {}
    for n in sizes:
        splits.cache_clear()     # cold: building the splits is part of the cost
        tracemalloc.start()
        t0 = time.perf_counter()
        simulate("mix8", n, np.random.default_rng(n + 1))
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[f"{n}+{n}"] = {"seconds": round(dt, 3), "peak_mib": round(peak / 2 ** 20, 1)}
    return out


def show(res: dict[str, Any]) -> None:
    print(f"regress verdicts, {res['sims']} simulated comparisons per cell, seed {res['seed']}, "
          f"alpha {res['alpha']}: rate of exit 1 for identical kernels (target <= "
          f"{FALSE_ALARM_TARGET}) and power for real changes; 'was' = the previous rule")
    head = (f"{'runs':12}" + "".join(f"{c:>14}" for c in FA_CASES)
            + f"{'exit 3 mix8':>12}{'fix':>8}{'2x Poisson':>12}{'2x overdisp':>12}{'new rare':>10}{'ms/cmp':>8}")
    print(f"{'':12}{'false alarm (exit 1), identical kernels':^56}{'':12}{'power':^42}")
    print(head)
    for k in res["runs"]:
        fa, prev = res["false_alarm_rate"][k], res["previous_rule"][k]
        pp = prev.get("power", {})
        print(f"{k:12}" + "".join(f"{fa[c]:14.3f}" for c in FA_CASES)
              + f"{res['inconclusive_rate'][k]['mix8']:12.3f}{res['power_fix'][k]:8.3f}"
              + f"{res['power_2x'][k]['poisson']:12.3f}{res['power_2x'][k]['overdispersed']:12.3f}"
              + f"{res['power_new'][k]:10.3f}{res['ms_per_comparison'][k]:8.1f}")
        print(f"{'  was (' + k + ')':12}" + "".join(f"{prev['false_alarm_rate'][c]:14.3f}" for c in FA_CASES)
              + f"{'':12}{pp.get('fix', 0):8.3f}{pp.get('2x_poisson', 0):12.3f}"
              + f"{pp.get('2x_overdispersed', 0):12.3f}{pp.get('new', 0):10.3f}")
    if res.get("resample_cost"):
        print("one 8-detector comparison: " + ", ".join(
            f"{k} {v['seconds']:.3f} s / {v['peak_mib']:.1f} MiB peak" for k, v in res["resample_cost"].items()))
    t = res["targets"]
    if not t["false_alarm_met"]:
        print("targets: not judged (they are set for 3+3 and 5+5 runs)")
        return
    print("targets: false alarm <= 0.05 at " + ", ".join(
        f"{k} {'met' if ok else 'NOT MET'}" for k, ok in t["false_alarm_met"].items())
        + f"; power_fix = 1.0 at 3+3 {'met' if t['power_fix_met'] else 'NOT MET'}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, nargs="+", default=[3, 5, 10], metavar="N",
                   help="runs per side to simulate (default 3 5 10)")
    p.add_argument("--sims", type=int, default=500, help="comparisons per case and size (default 500)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE ('-': stdout)")
    p.add_argument("--cost", type=int, nargs="*", default=[10, 20], metavar="N",
                   help="also time one comparison at these runs per side (default 10 20)")


def run(a: argparse.Namespace) -> int:
    from analyzer.atomic import atomic_file
    if a.sims < 1 or any(n < 2 for n in a.runs):
        print("mtaudit bench verdicts: --sims must be >= 1 and --runs >= 2", file=sys.stderr)
        return 2
    res = measure(a.runs, a.sims, a.seed, progress=sys.stderr.isatty())
    res["resample_cost"] = resample_cost(a.cost) if a.cost else {}
    if a.json == "-":
        json.dump(res, sys.stdout, indent=1)
        print()
    else:
        show(res)
        if a.json:
            with atomic_file(a.json, "w") as f:
                json.dump(res, f, indent=1)
                f.write("\n")
    return 0 if res["met"] else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mtaudit bench verdicts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
