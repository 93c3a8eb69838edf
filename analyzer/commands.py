"""`mtaudit analyze` and `mtaudit history`.

analyze exits 0 when no detector reports a kernel finding, 1 when one does
(model warnings alone do not count: they say the model is unsure, not the
kernel), 2 on bad input or usage (one line, from cli.main).
"""
from __future__ import annotations

import argparse
import sys

from .errors import MtauditError


def _pfn(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (use 0x... for hex)") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"negative: {text!r}")
    return v


def capture_args(p: argparse.ArgumentParser) -> None:
    """The capture flags every analysis command takes (also used by plot/report)."""
    p.add_argument("trace", metavar="TRACE_OR_BUNDLE",
                   help="trace.dat / text trace, a capture directory, or a .tar.zst of one")
    p.add_argument("--kernel", metavar="REL", help="kernel release or full `uname -a` line (overrides the capture)")
    p.add_argument("--pageblock-order", type=int, metavar="N", help="pageblock order (default: capture, else 9)")
    p.add_argument("--cma", action="append", default=[], metavar="NAME:BASE:COUNT",
                   help="a CMA area (base pfn and page count, 0x hex allowed); repeatable")
    p.add_argument("--ground-truth", action="append", default=[], metavar="EVENT",
                   help="extra kprobe event carrying set_pfnblock_flags_mask writes; repeatable")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze", help="rebuild pageblock types and run the S1-S5 detectors",
        description="Rebuild every pageblock's migratetype history from a capture and run the S1-S5 "
                    "detectors (stale pcp drains, polluted freelists, CMA escapes, THP pcp mixing, "
                    "isolation leaks) plus the /proc/pagetypeinfo consistency check.",
        epilog="exit status: 0 no kernel findings, 1 kernel findings (model warnings alone do not "
               "count), 2 bad input or usage")
    capture_args(p)
    p.add_argument("--json", metavar="FILE|-", help="write summary, findings and block history as JSON")
    p.add_argument("--parquet", metavar="DIR", help="write findings/blocks/... as Parquet files into DIR")
    p.add_argument("--quiet", "-q", action="store_true", help="no console summary")
    p.set_defaults(func=cmd_analyze)

    h = subparsers.add_parser("history", help="the story of one page or pageblock, in words",
                              description="Print, in time order and in words, everything the capture "
                                          "shows about one page (--pfn) or pageblock (--block): pcp "
                                          "stays, drains, refills, retypes, isolation, findings.")
    capture_args(h)
    g = h.add_mutually_exclusive_group(required=True)
    g.add_argument("--pfn", type=_pfn, help="page frame number (0x... hex or decimal)")
    g.add_argument("--block", type=_pfn, help="pageblock number (pfn >> pageblock_order)")
    h.add_argument("--limit", type=int, default=200, help="print at most N steps (0: all)")
    h.set_defaults(func=cmd_history)


def _overrides(args) -> dict:
    ov = {}
    if args.kernel:
        ov["kernel"] = args.kernel
    if args.pageblock_order is not None:
        if not 0 < args.pageblock_order < 20:
            raise MtauditError(f"--pageblock-order {args.pageblock_order}: expected 1..19")
        ov["pageblock_order"] = args.pageblock_order
    if args.cma:
        ov["cma"] = list(args.cma)
    if args.ground_truth:
        ov["ground_truth_events"] = list(args.ground_truth)
    return ov


def run_analysis(args):
    """Load the capture named by the capture flags and analyze it, with rich progress.

    Shared by analyze/history and by plot/report, so all four read a capture the same way."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .analysis import analyze
    from .capture import load_capture
    err = Console(stderr=True)
    with err.status(f"reading {args.trace}"):
        trace, meta = load_capture(args.trace, _overrides(args))
    for ev in args.ground_truth:
        if not trace.has(ev):
            raise MtauditError(f"{args.trace}: --ground-truth {ev}: no such event in the trace "
                               f"(events: {', '.join(sorted(trace.events()))})")
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        return analyze(trace, meta, progress=progress)


def cmd_analyze(args) -> int:
    a = run_analysis(args)
    if args.json:
        from .report.export import write_json
        write_json(a, args.json)
    if args.parquet:
        from .report.export import write_parquet
        write_parquet(a, args.parquet)
    if not args.quiet:
        from rich.console import Console

        from .report.console import render
        # with --json - the JSON owns stdout: the summary goes to stderr
        render(a, Console(stderr=(args.json == "-")))
    return a.exit_status()


def cmd_history(args) -> int:
    a = run_analysis(args)
    if args.pfn is not None:
        h = a.history(pfn=args.pfn)
        title = f"pfn 0x{args.pfn:x} (pageblock {args.pfn >> int(a.model.pageblock_order)})"
    else:
        h = a.history(block=args.block)
        title = f"pageblock {args.block} (pfns 0x{args.block << int(a.model.pageblock_order):x}..)"
    out = sys.stdout
    out.write(f"history of {title}: {len(h)} steps\n")
    rows = h if not args.limit else h.head(args.limit)
    for r in rows.itertuples(index=False):
        seq = f"seq {r.seq}" if r.seq >= 0 else "model"
        out.write(f"{r.ts / 1e9:14.6f}  {seq:>12}  {r.text}\n")
    if args.limit and len(h) > args.limit:
        out.write(f"... {len(h) - args.limit} more steps (--limit 0 shows all)\n")
    if args.pfn is not None:
        story = a.narrative(args.pfn)
        if story:
            shown = story if not args.limit else story[:args.limit]
            out.write("story: " + " -> ".join(shown) + "\n")
    return 0
