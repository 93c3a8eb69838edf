"""Benchmark: time to a verdict for `mtaudit regress` (real kernels, real QEMU), per phase,
`--jobs 1` against `--jobs 2` measured in the same benchmark run (the peer).

Default case (the README's first demonstration): Debian 6.1 vs 6.12 arm64, cma-churn, 3 runs
per kernel.  Phases: fetch/build (both kernels, once), boot, scenario, extract (guest phases,
summed over runs), host overhead per run (initramfs, config checks, bundle writing), analyze
(per bundle), wall time of the runs and of the whole command.

    python3 -m benchmarks.regress [--runs 3] [--jobs 1 2] [--scenario cma-churn]
    python3 -m benchmarks.regress --from DIR [DIR ...]     # print from earlier result.json files
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_one(args, jobs: int, out: Path) -> dict:
    argv = [sys.executable, "-m", "analyzer.cli", "regress", "--baseline", args.baseline,
            "--candidate", args.candidate, "--scenario", args.scenario, "--runs", str(args.runs),
            "--jobs", str(jobs), "--out", str(out), "--no-html", "-q"]
    t0 = time.monotonic()
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    res_path = out / "result.json"
    if not res_path.is_file():
        sys.exit(f"benchmarks.regress: jobs {jobs}: no result.json (exit {p.returncode}): "
                 f"{p.stderr.strip().splitlines()[-1:]}")
    res = json.loads(res_path.read_text())
    res["_bench_wall_s"] = wall
    return res


def phases(res: dict) -> dict[str, float]:
    t = res["timing"]
    s = t["sum_over_runs"]
    fetch = sum((t.get("fetch_build_s") or {}).values())
    return {"fetch/build (both kernels)": fetch, "boot (sum)": s["boot_s"],
            "scenario (sum)": s["scenario_s"], "extract (sum)": s["extract_s"],
            "host overhead (sum)": s["host_overhead_s"], "analyze (sum)": s["analyze_s"],
            "runs wall": t.get("runs_wall_s") or 0.0,
            "time to verdict": t.get("verdict_s") or t.get("wall_s") or 0.0}


def show(results: list[dict]) -> None:
    heads = [f"jobs {r['jobs']} (smp {r['timing'].get('guest_smp')})" for r in results]
    print(f"regress {results[0]['scenario']}: {results[0]['baseline']} vs {results[0]['candidate']}, "
          f"{results[0]['stats']['runs']['baseline']}+{results[0]['stats']['runs']['candidate']} runs, "
          f"host {results[0]['host']['cores']} cores")
    print(f"{'phase (s)':28}" + "".join(f"{h:>22}" for h in heads))
    rows = [phases(r) for r in results]
    for k in rows[0]:
        print(f"{k:28}" + "".join(f"{row[k]:22.1f}" for row in rows))
    for r in results:
        per = r["timing"]["runs"]
        print(f"jobs {r['jobs']} per run (boot/scenario/extract/analyze s): "
              + ", ".join(f"{x['run']} {x['boot_s'] or 0:.0f}/{x['scenario_s'] or 0:.0f}/"
                          f"{x['extract_s'] or 0:.0f}/{x['analyze_s'] or 0:.0f}" for x in per))
        v = {d["id"]: d["verdict"] for d in r["detectors"]}
        print(f"jobs {r['jobs']} verdicts: " + " ".join(f"{k}={x}" for k, x in v.items())
              + f"; status {r['status']}")
        if r["timing"].get("smp_note"):
            print(f"jobs {r['jobs']}: {r['timing']['smp_note']}")
    if len(rows) == 2:
        a, b = rows[0]["time to verdict"], rows[1]["time to verdict"]
        ra, rb = rows[0]["runs wall"], rows[1]["runs wall"]
        print(f"ratio jobs {results[1]['jobs']} / jobs {results[0]['jobs']}: time to verdict "
              f"{b / a:.2f}x, runs wall {rb / ra:.2f}x" if a and ra else "ratio: n/a")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mtaudit bench regress", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default="debian:6.1/arm64")
    p.add_argument("--candidate", default="debian:6.12/arm64")
    p.add_argument("--scenario", default="cma-churn")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--keep", type=Path, help="keep the regress outputs under this directory")
    p.add_argument("--from", dest="from_", nargs="+", type=Path, metavar="DIR",
                   help="do not run: print the phases of earlier regress outputs (their result.json)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:   # `mtaudit bench regress -- --runs 3`: argparse REMAINDER keeps the '--'
        argv = argv[1:]
    a = p.parse_args(argv)
    if a.from_:
        results = []
        for d in a.from_:
            f = d / "result.json" if d.is_dir() else d
            if not f.is_file():
                print(f"benchmarks.regress: {f}: no result.json", file=sys.stderr)
                return 2
            results.append(json.loads(f.read_text()))
        show(results)
        return 0
    base = a.keep or Path(tempfile.mkdtemp(prefix="mtaudit-bench-regress-"))
    results = []
    for j in a.jobs:
        print(f"running regress --jobs {j} ({os.cpu_count()} host cores) ...", file=sys.stderr, flush=True)
        results.append(run_one(a, j, base / f"jobs{j}"))
    show(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
