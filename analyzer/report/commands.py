"""`mtaudit plot` and `mtaudit report`: pictures and one HTML file from a capture.

Both load the capture and run the analysis exactly like `mtaudit analyze` (same
flags, same code), so a picture never disagrees with the text report of the same input.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..errors import MtauditError
from ..run import capture_args, positive_arg, run_analysis


def _range_arg(what: str, as_float: bool):
    def parse(text: str):
        from .plots import parse_range
        try:
            return parse_range(text, what=what, as_float=as_float)
        except MtauditError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _size_arg(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size: expected WIDTHxHEIGHT in pixels, got {text!r}") from None
    if not (200 <= w <= 20000 and 200 <= h <= 20000):
        raise argparse.ArgumentTypeError(f"--size: {text!r} out of range (200..20000 pixels per side)")
    return w, h


def _analyze(args: argparse.Namespace) -> Any:
    """Same loading, overrides (--kernel, --cma, ...) and progress as `mtaudit analyze`."""
    return run_analysis(args)


def _cmd_plot(args: argparse.Namespace) -> int:
    from rich.console import Console

    from . import plots

    analysis = _analyze(args)
    view = plots.make_view(analysis, zone=args.zone, pfn_range=args.pfn_range, time_range=args.time_range)
    w, h = args.size or ((1600, 1000) if args.kind == "timeline" else (1600, 700))
    opts = plots.PlotOptions(width_px=w, height_px=h, mode=args.mode)
    t0 = time.perf_counter()
    if args.kind == "timeline":
        fig = plots.timeline_figure(analysis, view, opts)
    else:
        fig = plots.counts_figure(analysis, view, opts)
    plots.write_png(fig, args.output)
    Console(stderr=True).print(f"[dim]wrote {args.output} ({w}x{h}) in {time.perf_counter() - t0:.1f}s[/dim]")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from . import html

    analysis = _analyze(args)
    t0 = time.perf_counter()
    html.write_report(analysis, args.output, source=args.trace, top=args.top)
    Console(stderr=True).print(f"[dim]wrote {args.output} in {time.perf_counter() - t0:.1f}s[/dim]")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot", help="draw a pageblock x time migratetype heatmap (or block counts) as PNG",
        description="Pageblock x time heatmap of migratetypes with zones, CMA areas, isolation "
                    "windows and findings; or per-type block counts over time (--kind counts).")
    capture_args(p)
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="PNG file to write (atomically)")
    p.add_argument("--kind", choices=("timeline", "counts"), default="timeline")
    p.add_argument("--zone", metavar="Z", help="only this zone (e.g. DMA, Normal)")
    p.add_argument("--pfn-range", type=_range_arg("--pfn-range", False), metavar="A-B",
                   help="only pfns A..B (hex or decimal, end exclusive)")
    p.add_argument("--time-range", type=_range_arg("--time-range", True), metavar="T0-T1",
                   help="only seconds T0..T1 of the trace clock")
    p.add_argument("--mode", choices=("dominant", "rarest"), default="dominant",
                   help="pixel colour when a pixel covers several blocks/moments: the type with most "
                        "block-time (default) or the rarest type present (shows lone polluted blocks)")
    p.add_argument("--size", type=_size_arg, metavar="WxH", help="image size in pixels (default 1600x1000)")
    p.set_defaults(func=_cmd_plot)

    r = subparsers.add_parser(
        "report", help="write one self-contained HTML report (plots, findings, histories)",
        description="One HTML file with everything inline (no network, no JavaScript): summary, "
                    "capture metadata, plots, top findings with their histories, consistency.")
    capture_args(r)
    r.add_argument("-o", "--output", required=True, metavar="HTML", help="HTML file to write (atomically)")
    r.add_argument("--top", type=positive_arg, default=15, help="how many findings to list (default 15)")
    r.set_defaults(func=_cmd_report)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python3 -m analyzer.cli plot|report ...")
