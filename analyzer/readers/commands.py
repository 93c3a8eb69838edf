"""`mtaudit events TRACE` and `mtaudit convert TRACE OUTDIR`, for every trace format.

Both go through analyzer.readers.load and the Trace interface only, so a new
reader gets them for free.  `convert` streams `iter_batches` into one Parquet
file per event and writes everything into a temporary directory that replaces
OUTDIR only when all of it succeeded (analyzer/atomic.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..atomic import atomic_dir
from ..errors import MtauditError
from . import load
from .base import Trace

META_FILE = "meta.json"
CONVERT_SCHEMA_VERSION = 1


def register(subparsers) -> None:
    p = subparsers.add_parser("events", help="list a trace's events: counts, CPUs, time span, lost events",
                              description="Print the events of TRACE (trace.dat, ftrace text, trace-cmd "
                                          "report or perf script text) with counts, CPUs and time span.")
    p.add_argument("trace", help="trace file (format detected from its content)")
    p.set_defaults(func=cmd_events)
    p = subparsers.add_parser("convert", help="write one Parquet file per event plus meta.json",
                              description="Convert TRACE into OUTDIR: <system>.<event>.parquet per event and "
                                          "meta.json (trace metadata, counts, lost events). OUTDIR is "
                                          "replaced atomically, only when the conversion succeeded.")
    p.add_argument("trace", help="trace file (format detected from its content)")
    p.add_argument("outdir", help="output directory (created or replaced)")
    p.set_defaults(func=cmd_convert)


# -- shared summaries --------------------------------------------------------------------------

def fmt_ts(ts: int | None) -> str:
    if ts is None:
        return "-"
    sign = "-" if ts < 0 else ""
    ts = abs(int(ts))
    return f"{sign}{ts // 1_000_000_000}.{ts % 1_000_000_000:09d}"


def event_summary(trace: Trace) -> list[dict]:
    """Per event: name, count, CPUs seen, first and last ts (reads only seq/ts/cpu columns)."""
    out = []
    for name, count in sorted(trace.events().items()):
        t = trace.table(name, ["ts", "cpu"])
        cpus = sorted(int(c) for c in np.unique(t.column("cpu").to_numpy())) if t.num_rows else []
        mm = pc.min_max(t.column("ts")).as_py() if t.num_rows else {"min": None, "max": None}
        out.append({"event": name, "count": int(count), "cpus": cpus, "first_ts": mm["min"], "last_ts": mm["max"]})
    return out


def lost_per_cpu(trace: Trace) -> dict[int, dict]:
    lost = trace.lost
    res: dict[int, dict] = {}
    for row in lost.to_pylist():
        d = res.setdefault(int(row["cpu"]), {"gaps": 0, "events": 0, "unknown_counts": 0})
        d["gaps"] += 1
        if row["count"] is None or row["count"] < 0:
            d["unknown_counts"] += 1
        else:
            d["events"] += int(row["count"])
    return res


def _notes(trace: Trace) -> dict:
    fn = getattr(trace, "notes", None)
    return fn() if callable(fn) else {}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


# -- events -------------------------------------------------------------------------------------

def _load_with_status(path: str) -> Trace:
    """Open the trace (text traces are parsed here: seconds for large files) behind a spinner."""
    if not sys.stderr.isatty():
        return load(path)
    with _stderr_console().status(f"reading {path} ..."):
        return load(path)


def cmd_events(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    trace = _load_with_status(args.trace)
    m = trace.meta
    if sys.stderr.isatty():
        with _stderr_console().status("summarising events ..."):
            summary = event_summary(trace)
            _notes(trace)
    else:
        summary = event_summary(trace)
    console = Console(width=None if sys.stdout.isatty() else 140, highlight=False)
    first = min((s["first_ts"] for s in summary if s["first_ts"] is not None), default=None)
    last = max((s["last_ts"] for s in summary if s["last_ts"] is not None), default=None)

    def val(x):
        return "-" if x in (None, "", []) else str(x)

    console.print(f"[bold]{m.path}[/bold]")
    console.print(f"format: {m.format}   version: {val(m.file_version)}   compression: {val(m.compression)}")
    console.print(f"kernel: {val(m.kernel_release)}   clock: {val(m.clock)}   cpus: {val(m.cpus)}"
                  + (f"   buffers: {', '.join(b or '(top)' for b in m.buffers)}" if m.buffers else ""))
    span = "-" if first is None else f"{fmt_ts(first)} .. {fmt_ts(last)} ({(last - first) / 1e9:.6f} s)"
    console.print(f"time span: {span}")
    lost = lost_per_cpu(trace)
    if lost:
        parts = []
        for cpu, d in sorted(lost.items()):
            n = f"{d['events']}" + (f" + {d['unknown_counts']} gap(s) of unknown size" if d["unknown_counts"] else "")
            parts.append(f"CPU{cpu}: {n} in {d['gaps']} gap(s)")
        console.print("lost events: " + "; ".join(parts))
    else:
        console.print("lost events: none recorded")

    table = Table(show_header=True, header_style="bold")
    table.add_column("event")
    table.add_column("count", justify="right")
    table.add_column("CPUs")
    table.add_column("first ts", justify="right")
    table.add_column("last ts", justify="right")
    for s in summary:
        table.add_row(s["event"], f"{s['count']:,}", ",".join(map(str, s["cpus"])),
                      fmt_ts(s["first_ts"]), fmt_ts(s["last_ts"]))
    table.add_row("[bold]total[/bold]", f"{sum(s['count'] for s in summary):,}", "", "", "")
    console.print(table)
    for ev, note in sorted(_notes(trace).items()):
        if note.get("failed_to_parse_lines"):
            console.print(f"note: {ev}: {note['failed_to_parse_lines']:,} lines marked [FAILED TO PARSE] "
                          "(raw fields after the marker were read)")
        for fld, info in sorted((note.get("unparsed_fields") or {}).items()):
            eg = f"; e.g. {info['example']!r}" if info.get("example") is not None else ""
            console.print(f"note: {ev}.{fld}: {info['count']:,} values not read ({info['why']}{eg}) -> null")
    return 0


# -- convert ------------------------------------------------------------------------------------

def _event_file(name: str) -> str:
    return name.replace(":", ".").replace("/", "_") + ".parquet"


def _check_outdir(outdir: str) -> None:
    """Only replace a directory that is absent, empty, or an earlier convert output."""
    if not os.path.exists(outdir):
        return
    if not os.path.isdir(outdir):
        raise MtauditError(f"{outdir}: exists and is not a directory")
    entries = os.listdir(outdir)
    if entries and META_FILE not in entries:
        raise MtauditError(f"{outdir}: not empty and not an earlier `mtaudit convert` output; "
                           "refusing to replace it")


def convert(trace: Trace, outdir: str, progress: bool = True) -> dict:
    """Write OUTDIR; returns the meta.json content."""
    import pyarrow.parquet as pq
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    _check_outdir(outdir)
    counts = trace.events()
    total = sum(counts.values())
    files: dict[str, dict] = {}
    with atomic_dir(outdir) as tmp, Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                             disable=not progress, transient=True,
                                             console=_stderr_console()) as prog:
        task = prog.add_task("convert", total=total)
        writers: dict[str, pq.ParquetWriter] = {}
        try:
            for name, batch in trace.iter_batches():
                w = writers.get(name)
                if w is None:
                    w = pq.ParquetWriter(os.path.join(tmp, _event_file(name)), batch.schema, compression="zstd")
                    writers[name] = w
                    files[name] = {"file": _event_file(name), "rows": 0}
                w.write_batch(batch)
                files[name]["rows"] += batch.num_rows
                prog.update(task, advance=batch.num_rows, description=name)
        finally:
            for w in writers.values():
                w.close()
        for name, n in counts.items():
            if name not in files:       # reader listed it but produced no rows: still write its schema
                t = trace.table(name)
                pq.write_table(t, os.path.join(tmp, _event_file(name)), compression="zstd")
                files[name] = {"file": _event_file(name), "rows": t.num_rows}
            if files[name]["rows"] != n:
                raise MtauditError(f"{trace.meta.path}: {name}: reader counted {n} events but produced "
                                   f"{files[name]['rows']} rows")
        meta = {
            "schema_version": CONVERT_SCHEMA_VERSION,
            "trace": _jsonable(trace.meta.as_dict()),
            "events": {k: {"count": counts[k], "file": files[k]["file"]} for k in sorted(counts)},
            "lost": _jsonable(trace.lost.to_pylist()),
            "notes": _jsonable(_notes(trace)),
        }
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.write("\n")
    return meta


def _stderr_console():
    from rich.console import Console
    return Console(stderr=True)


def cmd_convert(args: argparse.Namespace) -> int:
    trace = _load_with_status(args.trace)
    meta = convert(trace, args.outdir, progress=sys.stderr.isatty())
    n = sum(e["count"] for e in meta["events"].values())
    print(f"{args.outdir}: {len(meta['events'])} event files, {n:,} events, meta.json")
    return 0


def read_converted(outdir: str) -> tuple[dict, dict[str, pa.Table]]:
    """Read back a convert output (used by tests and by anyone loading Parquet)."""
    import pyarrow.parquet as pq
    with open(os.path.join(outdir, META_FILE)) as f:
        meta = json.load(f)
    return meta, {k: pq.read_table(os.path.join(outdir, v["file"])) for k, v in meta["events"].items()}
