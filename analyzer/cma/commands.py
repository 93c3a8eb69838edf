"""`mtaudit cma`: one row per CMA allocation, with the reason for every failure or retry.

Exit status: 0 every traced cma_alloc() succeeded at its first range, 1 a failure or a busy
retry, 2 bad input or usage, 3 the capture has no CMA events (nothing to explain), 4 internal
error.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..run import capture_args, run_analysis

EXIT_NO_CMA = 3


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cma", help="why each CMA allocation failed, retried or was slow",
        description="One row per cma_alloc() call (and per alloc_contig_range() without CMA): area, count, "
                    "align, outcome, latency, busy retries, isolated range, isolation test, migration "
                    "counts; for every failure or retry the reason from the trace (the busy page's story, "
                    "the area's occupancy for -ENOMEM, or which event is missing).",
        epilog="exit status: 0 no failure or retry, 1 a failure or busy retry, 2 bad input or usage, "
               "3 no CMA events in the capture, 4 internal error")
    capture_args(p)
    p.add_argument("--json", metavar="FILE|-", help="write the allocations and their reasons as JSON")
    p.add_argument("--markdown", metavar="FILE|-", help="write the same as Markdown")
    p.add_argument("--all", action="store_true", help="show every allocation, not only failures, retries "
                                                      "and the slowest")
    p.add_argument("--quiet", "-q", action="store_true", help="no console output")
    p.set_defaults(func=cmd_cma)


def cmd_cma(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    from ..atomic import atomic_file
    from . import explain
    from .text import render_console, render_markdown
    a = run_analysis(args)
    cma = explain(a)
    console = Console(stderr=(args.json == "-" or args.markdown == "-"), highlight=False)
    if not console.is_terminal:     # a pipe or file: wide enough for the table on one line a row
        console.width = 200
    if args.json:
        text = json.dumps(cma, indent=1) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            with atomic_file(args.json, "w") as f:
                f.write(text)
    if args.markdown:
        if args.markdown == "-":
            render_markdown(cma, sys.stdout, str(a.meta.source), args.all)
        else:
            with atomic_file(args.markdown, "w") as f:
                render_markdown(cma, f, str(a.meta.source), args.all)
    if not cma["available"]:
        console.print(Text(f"{args.trace}: no CMA events (cma:cma_alloc_start/finish/busy_retry/release) in the "
                           "capture: nothing to explain" + (f"; {cma['summary']['contig_calls']} "
                                                            "alloc_contig_range call(s) without CMA"
                                                            if cma["summary"]["contig_calls"] else "")))
        return EXIT_NO_CMA
    if not args.quiet:
        render_console(cma, console, args.all)
    s = cma["summary"]
    return 1 if s["failed"] or s["retried"] else 0
