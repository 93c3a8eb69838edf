"""`mtaudit analyze` and `mtaudit history`.

analyze exits 0 when no detector reports a kernel finding, 1 when one does
(model warnings alone do not count: they say the model is unsure, not the
kernel), 2 on bad input or usage (one line, from cli.main).
"""
from __future__ import annotations

import argparse
import sys

from .errors import MtauditError
from .run import capture_args, count_arg, overrides, pfn_arg, positive_arg, run_analysis

__all__ = ["register", "capture_args", "run_analysis"]


def register(subparsers) -> None:
    from .detectors import ALL   # the registry: the help cannot name a detector that does not exist
    ids = ", ".join(m.INFO.id for m in ALL)
    p = subparsers.add_parser(
        "analyze", help=f"rebuild pageblock types and run the detectors ({ids})",
        description="Rebuild every pageblock's migratetype history from a capture and run the detectors: "
                    + "; ".join(f"{m.INFO.id} {m.INFO.meaning}" for m in ALL)
                    + "; plus the /proc/pagetypeinfo consistency check.",
        epilog="exit status: 0 no kernel findings, 1 kernel findings (model warnings alone do not "
               "count), 2 bad input or usage, 3 inconclusive, 4 internal error")
    capture_args(p)
    p.add_argument("more", nargs="*", metavar="CAPTURE",
                   help="more captures: a fleet, analyzed in parallel into --out DIR")
    p.add_argument("--out", metavar="DIR",
                   help="fleet output: summary/findings/blocks .parquet + summary.txt for every capture")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="fleet: an existing dask scheduler (tcp://HOST:8786); default a local cluster "
                        "(dask installed) or a local process pool")
    p.add_argument("--jobs", "-j", type=positive_arg, metavar="N",
                   help="fleet: local workers (default: CPU count)")
    p.add_argument("--json", metavar="FILE|-", help="write summary, findings and block history as JSON")
    p.add_argument("--parquet", metavar="DIR", help="write findings/blocks/... as Parquet files into DIR")
    p.add_argument("--quiet", "-q", action="store_true", help="no console summary")
    p.add_argument("--explain", action="store_true",
                   help="also print what the columns and detectors mean, more examples, the consistency table")
    p.add_argument("--chunk-events", type=count_arg, metavar="N", default=None,
                   help="analyze in pageblock partitions of about N records each: peak memory follows N, not "
                        "the trace, findings are the same (spills the trace to $TMPDIR); 0: never. Default: "
                        "partition when the trace has more records than $MTAUDIT_CHUNK_EVENTS (default 4000000)")
    p.set_defaults(func=cmd_analyze)

    h = subparsers.add_parser("history", help="the story of one page or pageblock, in words",
                              description="Print, in time order and in words, everything the capture "
                                          "shows about one page (--pfn) or pageblock (--block): pcp "
                                          "stays, drains, refills, retypes, isolation, findings.")
    capture_args(h)
    g = h.add_mutually_exclusive_group(required=True)
    g.add_argument("--pfn", type=pfn_arg, help="page frame number (0x... hex or decimal)")
    g.add_argument("--block", type=pfn_arg, help="pageblock number (pfn >> pageblock_order)")
    h.add_argument("--limit", type=count_arg, default=200, help="print at most N steps (0: all)")
    h.set_defaults(func=cmd_history)


def cmd_analyze(args: argparse.Namespace) -> int:
    if args.more or args.out or args.scheduler:
        return cmd_fleet(args)
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
        render(a, Console(stderr=(args.json == "-")), explain=args.explain)
    return a.exit_status()


def cmd_fleet(args: argparse.Namespace) -> int:
    """Many captures into one Parquet dataset (analyzer/fleet.py)."""
    if not args.out:
        raise MtauditError("analyze: several captures need --out DIR (one Parquet dataset for all)")
    for flag in ("json", "parquet"):
        if getattr(args, flag):
            raise MtauditError(f"analyze: --{flag} is for one capture; a fleet writes --out DIR")
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from .fleet import fleet_exit, run_fleet, summary_text, write_dataset
    paths = [args.trace, *args.more]
    err = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("captures", total=len(dict.fromkeys(paths)))
        results = run_fleet(paths, overrides(args), scheduler=args.scheduler, jobs=args.jobs,
                            on_done=lambda r: progress.update(task, advance=1,
                                                              description=f"{r.status}: {r.capture}"))
    write_dataset(results, args.out)
    if not args.quiet:
        sys.stdout.write(summary_text(results))
        sys.stdout.write(f"dataset: {args.out}/{{summary,findings,blocks}}.parquet\n")
    return fleet_exit(results)


def cmd_history(args: argparse.Namespace) -> int:
    args.chunk_events = 0    # one page's story needs every record of it: never partitioned
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
        from .cma import blocked_by
        for line in blocked_by(a, args.pfn):
            out.write(line + "\n")
        story = a.narrative(args.pfn)
        if story:
            shown = story if not args.limit else story[:args.limit]
            out.write("story: " + " -> ".join(shown) + "\n")
    return 0
