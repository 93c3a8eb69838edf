"""Benchmark: events/s of model + detectors (analyze()) on the real captures.

Target (issue 3): >= 5 M events/s through model + detectors on this machine.
Decoding the trace.dat is the reader's job and is timed separately (the tables
are decoded once and cached, as in a real run).  The peer measured in the same
run is `trace-cmd report -R` on the same file: the C tool only decodes and
prints, so the ratio says how the whole analysis compares with merely reading
the trace with the reference tool.

    python3 -m benchmarks.analyze [CAPTURE_DIR ...] [--repeat N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = [os.path.join(HERE, "..", "fixtures", kind, d)
           for kind in ("captures", "bundles")
           for d in ("debian-6.1-arm64-cma-churn", "debian-6.12-arm64-cma-churn")]


def _peer(trace_path: str) -> float | None:
    exe = shutil.which("trace-cmd")
    if not exe:
        return None
    t0 = time.perf_counter()
    subprocess.run([exe, "report", "-R", "-i", trace_path], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - t0


def bench(capture: str, repeat: int) -> dict:
    from analyzer.analysis import analyze
    from analyzer.capture import load_capture
    from analyzer.detectors import run_all
    from analyzer.kernels import behavior_for
    from analyzer.model import build_model

    t0 = time.perf_counter()
    trace, meta = load_capture(capture)
    total_events = sum(trace.events().values())
    kernel = behavior_for(meta.kernel_id)
    build_model(trace, meta, kernel)              # warm: decode + cache the reader's tables
    t_load = time.perf_counter() - t0

    best_model = best_det = best_all = float("inf")
    for _ in range(repeat):
        t1 = time.perf_counter()
        model = build_model(trace, meta, kernel)
        t2 = time.perf_counter()
        run_all(model, kernel)
        t3 = time.perf_counter()
        analyze(trace, meta, kernel)
        t4 = time.perf_counter()
        best_model = min(best_model, t2 - t1)
        best_det = min(best_det, t3 - t2)
        best_all = min(best_all, t4 - t3)
    peer = _peer(os.path.join(capture, "trace.dat"))
    name = os.path.basename(os.path.normpath(capture))
    if os.path.basename(os.path.dirname(os.path.normpath(capture))) == "bundles":
        name = "bundle:" + name
    return {"capture": name, "events": total_events,
            "load_s": t_load, "model_s": best_model, "detectors_s": best_det, "analyze_s": best_all,
            "peer_s": peer}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("captures", nargs="*", default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"{'capture':32} {'events':>9} {'decode+1st':>10} {'model':>8} {'detect':>8} {'analyze':>8} "
          f"{'M ev/s':>7} {'det-only':>8} {'trace-cmd':>9} {'ratio':>6}")
    ok = True
    for cap in args.captures:
        r = bench(cap, args.repeat)
        eps = r["events"] / r["analyze_s"]
        peer = r["peer_s"]
        ratio = f"{(r['events'] / r['analyze_s']) / (r['events'] / peer):6.1f}" if peer else "   n/a"
        print(f"{r['capture']:32} {r['events']:9d} {r['load_s']:9.2f}s {r['model_s']:7.3f}s "
              f"{r['detectors_s']:7.3f}s {r['analyze_s']:7.3f}s {eps / 1e6:7.2f} "
              f"{r['events'] / r['detectors_s'] / 1e6:8.2f} "
              f"{(f'{peer:8.2f}s' if peer else '      n/a')} {ratio}")
        ok &= eps >= 5e6
    print("target >= 5 M events/s through model + detectors (analyze() on decoded tables): "
          + ("met" if ok else "NOT met"))
    print("ratio = analyze() events/s / `trace-cmd report -R` events/s, measured in this run; "
          "det-only = M events/s of the detectors alone on a built model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
