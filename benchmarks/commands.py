"""`mtaudit bench ...`: the speed benchmarks as CLI sub-commands.

One line per benchmark in BENCHMARKS: (name, module in benchmarks/, help, how it takes its
arguments).  "parser": the module has `add_arguments(parser)` and `run(args) -> int` (its
docstring is the description); "main": the module keeps its own argument parser and
`main(argv) -> int` gets everything after the benchmark's name.
"""
from __future__ import annotations

import argparse
import importlib

BENCHMARKS = [
    ("ingest", "ingest", "trace.dat reader vs `trace-cmd report -R` (events/s, ratio, peak RSS)", "parser"),
    ("perf", "perf", "perf.data reader vs `perf script > /dev/null` (CPU and wall time, ratio)", "parser"),
    ("build", "build", "build: kernel specs: cold build vs cache hit vs one-file-patch rebuild", "parser"),
    ("analyze", "analyze", "analyze() events/s vs trace-cmd report", "main"),
    ("model", "model", "pageblock model speed", "main"),
    ("scale", "scale", "analyze/convert on real captures of growing size: peak RSS, time vs perf script / "
              "trace-cmd report", "parser"),
    ("regress", "regress", "time to a regress verdict per phase, --jobs 1 vs 2 (real QEMU)", "main"),
    ("verdicts", "verdicts", "regress verdicts: false-alarm rate and power by seeded simulation", "parser"),
]


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="speed benchmarks (ratios against a peer measured in the same run)",
                              description="Run a benchmark; each prints its numbers and the peer's.")
    sub = p.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, module, what, style in BENCHMARKS:
        if style == "parser":
            mod = importlib.import_module(f"benchmarks.{module}")
            ps = sub.add_parser(name, help=what, description=mod.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
            mod.add_arguments(ps)
            ps.set_defaults(func=mod.run)
        else:   # imported when run: these parse their own arguments
            ps = sub.add_parser(name, help=what, add_help=False, prefix_chars="+")   # every -x is the module's
            ps.add_argument("args", nargs=argparse.REMAINDER)
            ps.set_defaults(func=lambda a, _m=module: int(importlib.import_module(f"benchmarks.{_m}").main(a.args) or 0))
