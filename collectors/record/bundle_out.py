"""The recorder's bundle: the one place it uses the bundle writer `mtaudit collect` uses.

Same files and manifest keys as a collect bundle (docs/contracts.md §1), with `qemu` null,
`scenario` naming the recorded command, and `recorder` holding what only a live recording
has (backend, buffers, per-CPU readers, the recorder's own CPU time).  `lost_events` are
the kernel's own counters: the ring buffer's per-CPU overrun + commit overrun + dropped
(difference between the end and start stats) for tracefs; the per-CPU lost-sample
counters perf stores in perf.data for perf.
"""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from analyzer.errors import MtauditError

from analyzer import bundle
from . import snapshots

CONFIG_KEYS = ("CONFIG_CMA", "CONFIG_KPROBE_EVENTS", "CONFIG_KPROBES", "CONFIG_MEMORY_ISOLATION",
               "CONFIG_CONTIG_ALLOC", "CONFIG_COMPACTION", "CONFIG_TRACING", "CONFIG_FTRACE",
               "CONFIG_PAGE_OWNER", "CONFIG_HUGETLB_PAGE", "CONFIG_TRANSPARENT_HUGEPAGE")


def utcnow() -> str:
    return bundle.utcnow()


def lost_from_stats(start: str, end: str) -> dict[str, int]:
    """Per CPU ("cpuN"): lost events during the recording, from the ring buffer's own counters."""
    a = bundle.lost_events(bundle.parse_stats(start, "per_cpu stats at start"))
    b = bundle.lost_events(bundle.parse_stats(end, "per_cpu stats at end"))
    return {cpu: max(0, n - a.get(cpu, 0)) for cpu, n in b.items()}


def lost_from_perf(path: Path) -> tuple[dict[str, int], dict]:
    """Per CPU ("cpuN"): lost samples in perf.data (the kernel's counters when perf stored them)."""
    from analyzer.readers.perfdata import PerfData
    t = PerfData(str(path))
    out: dict[str, int] = {f"cpu{c}": 0 for c in range(t.meta.cpus or 0)}
    for row in t.lost.to_pylist():
        key = f"cpu{row['cpu']}" if row["cpu"] >= 0 else "cpu?"
        out[key] = out.get(key, 0) + max(0, int(row["count"]))
    return out, {"lost_chunks": t.meta.extra["lost_chunks"], "lost_samples": t.meta.extra["lost_samples"],
                 "samples": sum(t.events().values())}


def config_subset(out: Path) -> dict[str, str]:
    p = out / "config.txt"
    if not p.exists():
        return {}
    got: dict[str, str] = {}
    for line in p.read_text(errors="replace").splitlines():
        m = re.match(r"^(CONFIG_[A-Z0-9_]+)=(.*)$", line)
        if m and m[1] in CONFIG_KEYS:
            got[m[1].removeprefix("CONFIG_")] = m[2]      # the manifest's convention (collect's too)
        m = re.match(r"^# (CONFIG_[A-Z0-9_]+) is not set$", line)
        if m and m[1] in CONFIG_KEYS:
            got[m[1].removeprefix("CONFIG_")] = "n"
    return got


def finish(out: Path, dfd: int, o, info: dict, started: str, enabled: list[str], probes: list, sess,
           why: str, rc: int | None, failure: str | None, stats_start: str, stats_end: str,
           log: list[str]) -> dict:
    """console.log, lost events, manifest.json (last, with every file's hash), permissions."""
    if o.backend == "tracefs":
        lost = lost_from_stats(stats_start, stats_end) if stats_end else {}
        info["lost_source"] = "per_cpu/cpu*/stats: overrun + commit overrun + dropped events (end - start)"
    else:
        pd = out / "perf.data"
        try:
            lost, extra = lost_from_perf(pd) if pd.exists() and pd.stat().st_size else ({}, {})
        except MtauditError as e:       # a perf.data cut short: the bundle says so
            lost, extra = {}, {"perf_data_error": str(e)}
        info.update(extra)
        info["lost_source"] = "perf.data: PERF_RECORD_LOST, topped up to the kernel's LOST_SAMPLES counters"
    snapshots.write_new(dfd, "console.log", "\n".join(log) + "\n")
    u = platform.uname()
    interrupted = why.startswith("interrupted")
    manifest = {
        "schema_version": bundle.SCHEMA_VERSION,
        "status": "failed" if failure else "ok",
        "failure": failure,
        "kernel": {"spec": "running", "release": u.release, "arch": u.machine, "version": u.version,
                   "package": None, "config": config_subset(out)},
        "cmdline": (out / "cmdline.txt").read_text().strip() if (out / "cmdline.txt").exists() else "",
        "scenario": {"name": "record", "command": list(o.command) or None, "duration_s": o.duration,
                     "ended_by": why, "interrupted": interrupted},
        "qemu": None,
        "started": started,
        "finished": utcnow(),
        "lost_events": lost,
        "guest_exit": rc,
        "console_problems": [],
        "kprobe": {"probes": [{"event": p.event, "definition": p.definition, "filter": p.filter} for p in probes],
                   "source": "record" if probes else None,
                   "kprobe_events": os.path.isfile(os.path.join(sess.root, "kprobe_events")),
                   "errors": list(sess.probe_errors)},
        "events": enabled,
        "recorder": info,
        "collector": "mtaudit record",
    }
    written = bundle.write_manifest(out, bundle.Manifest.from_dict(manifest, str(out / bundle.MANIFEST)))
    bundle.make_readable(out)
    return written.to_dict()
