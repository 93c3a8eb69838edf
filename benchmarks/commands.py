"""`mtaudit bench ...`: the speed benchmarks as CLI sub-commands.

`bench ingest` is benchmarks/ingest.py (trace.dat reader vs `trace-cmd report -R`).  The
other benchmark modules keep their own argument parsers; `bench analyze|model ARGS...`
hands ARGS to their main().
"""
from __future__ import annotations

import argparse
import importlib


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="speed benchmarks (ratios against a peer measured in the same run)",
                              description="Run a benchmark; each prints its numbers and the peer's.")
    sub = p.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    from . import ingest
    pi = sub.add_parser("ingest", help="trace.dat reader vs `trace-cmd report -R` (events/s, ratio, peak RSS)",
                        description=ingest.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ingest.add_arguments(pi)
    pi.set_defaults(func=ingest.run)
    from . import build
    pb = sub.add_parser("build", help="build: kernel specs: cold build vs cache hit vs one-file-patch rebuild",
                        description=build.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_arguments(pb)
    pb.set_defaults(func=build.run)
    for name, what in (("analyze", "analyze() events/s vs trace-cmd report"), ("model", "pageblock model speed"),
                       ("regress", "time to a regress verdict per phase, --jobs 1 vs 2 (real QEMU)")):
        ps = sub.add_parser(name, help=what, add_help=False)
        ps.add_argument("args", nargs=argparse.REMAINDER)
        ps.set_defaults(func=lambda a, _n=name: int(importlib.import_module(f"benchmarks.{_n}").main(a.args) or 0))
