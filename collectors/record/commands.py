"""`mtaudit record`: the command line of collectors/record."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .run import DEFAULT_BUFFER_MB, Options, record


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "record", help="record the page allocator on this machine (root) into a bundle",
        description="Record the page-allocator, CMA and isolation tracepoints this kernel has (and the "
                    "ground-truth kprobe where it has kprobe events) while COMMAND runs or for S seconds, "
                    "with /proc snapshots at start and end, into a new bundle directory that "
                    "`mtaudit analyze DIR` reads. Needs root; refuses (exit 2, nothing changed) when tracing "
                    "is in use. Ctrl-C ends the recording and still writes a complete bundle.",
        epilog="examples: sudo mtaudit record -o run -- make -j2;  sudo mtaudit record --duration 10")
    p.add_argument("-o", "--out", type=Path, metavar="DIR",
                   help="bundle directory to create (must not exist; default mtaudit-record-<UTC time>)")
    p.add_argument("--duration", type=float, metavar="S", help="record for S seconds (with a COMMAND: at most S)")
    p.add_argument("--backend", choices=("tracefs", "perf"), default="tracefs",
                   help="tracefs: ftrace instance read from trace_pipe_raw, written as trace.dat (default); "
                        "perf: perf record, kept as perf.data")
    p.add_argument("--buffer-mb", type=int, default=DEFAULT_BUFFER_MB, metavar="N",
                   help=f"ring buffer per CPU in MiB (default {DEFAULT_BUFFER_MB})")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="workload to run (in its own process group, stopped when the recording ends)")
    p.set_defaults(func=cmd_record)


def cmd_record(args: argparse.Namespace) -> int:
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd and args.duration is None:
        print("mtaudit record: give --duration S or -- COMMAND ...", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration <= 0:
        print("mtaudit record: --duration must be positive", file=sys.stderr)
        return 2
    out = args.out or Path(time.strftime("mtaudit-record-%Y%m%dT%H%M%SZ", time.gmtime()))

    def say(msg: str) -> None:
        print(f"mtaudit record: {msg}", file=sys.stderr)

    path, man = record(Options(out=out, duration=args.duration, command=cmd, backend=args.backend,
                               buffer_mb=args.buffer_mb), say)
    lost = sum(man["lost_events"].values())
    rec = man["recorder"]
    print(f"{path}: {man['status']}, {rec.get('recording_s', 0):.1f} s, {len(man['events'])} events enabled, "
          f"lost events: {lost}" + (f" ({man['failure']})" if man["failure"] else ""))
    if man["guest_exit"] not in (0, None):
        print(f"mtaudit record: the workload exited {man['guest_exit']} (the bundle is complete)", file=sys.stderr)
    return 2 if man["failure"] else 0
