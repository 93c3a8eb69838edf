"""Reading and analyzing a capture the way every analysis command does.

`analyze`, `history` (analyzer/commands.py), `plot` and `report` (analyzer/report/commands.py)
take the same capture flags and load a capture the same way, so a picture never disagrees with
the text report of the same input.  Both command modules import this one; it imports neither.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .errors import MtauditError
from .kernels import PAGEBLOCK_ORDER_MAX, PAGEBLOCK_ORDER_MIN

if TYPE_CHECKING:
    from .analysis import Analysis


def pfn_arg(text: str) -> int:
    """argparse type: a pfn or block number, 0x hex or decimal, not negative."""
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (use 0x... for hex)") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"negative: {text!r}")
    return v


def count_arg(text: str) -> int:
    """argparse type: a count >= 0 (argparse turns the ArgumentTypeError into exit 2)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return v


def positive_arg(text: str) -> int:
    """argparse type: a count >= 1."""
    v = count_arg(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text!r}")
    return v


def capture_args(p: argparse.ArgumentParser) -> None:
    """The capture flags every analysis command takes."""
    p.add_argument("trace", metavar="TRACE_OR_BUNDLE",
                   help="trace.dat / text trace, a capture directory, or a .tar.zst of one")
    p.add_argument("--kernel", metavar="REL", help="kernel release or full `uname -a` line (overrides the capture)")
    p.add_argument("--pageblock-order", type=int, metavar="N", help="pageblock order (default: capture, else 9)")
    p.add_argument("--cma", action="append", default=[], metavar="NAME:BASE:COUNT",
                   help="a CMA area (base pfn and page count, 0x hex allowed); repeatable")
    p.add_argument("--ground-truth", action="append", default=[], metavar="EVENT",
                   help="extra kprobe event carrying set_pfnblock_flags_mask writes; repeatable")


def overrides(args: argparse.Namespace) -> dict:
    """CaptureMeta overrides from the capture flags."""
    ov: dict = {}
    if args.kernel:
        ov["kernel"] = args.kernel
    if args.pageblock_order is not None:
        if not PAGEBLOCK_ORDER_MIN <= args.pageblock_order <= PAGEBLOCK_ORDER_MAX:
            raise MtauditError(f"--pageblock-order {args.pageblock_order}: expected "
                               f"{PAGEBLOCK_ORDER_MIN}..{PAGEBLOCK_ORDER_MAX}")
        ov["pageblock_order"] = args.pageblock_order
    if args.cma:
        ov["cma"] = list(args.cma)
    if args.ground_truth:
        ov["ground_truth_events"] = list(args.ground_truth)
    return ov


def run_analysis(args: argparse.Namespace) -> Analysis:
    """Load the capture named by the capture flags and analyze it, with rich progress on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from .analysis import analyze
    from .capture import load_capture
    err = Console(stderr=True)
    with err.status(f"reading {args.trace}"):
        trace, meta = load_capture(args.trace, overrides(args))
    for ev in args.ground_truth:
        if not trace.has(ev):
            raise MtauditError(f"{args.trace}: --ground-truth {ev}: no such event in the trace "
                               f"(events: {', '.join(sorted(trace.events()))})")
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        return analyze(trace, meta, progress=progress, chunk_events=getattr(args, "chunk_events", None))
