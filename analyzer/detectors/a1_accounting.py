"""A1: free-page accounting, the other symptom 51bb1a4093cc names ("freepage counting problem").

A page of an isolated block put on a non-isolate freelist is counted free when it is
drained and again when the block is restored, so the zone's free counters drift above
what its freelists hold.  Wherever the capture has the /proc snapshots, check:

* /proc/meminfo: MemFree <= MemTotal and CmaFree <= CmaTotal (hard invariants);
* /proc/zoneinfo: nr_free_pages <= managed, nr_free_cma <= cma per zone (hard), and
  nr_free_pages / nr_free_cma against the free pages per type that /proc/pagetypeinfo
  lists for that zone at the same moment (NR_FREE_PAGES excludes the Isolate lists);
* the scenario snapshots (snap/meminfo-*, snap/pagetypeinfo-*): CmaFree against the
  CMA freelists.

Snapshots of a running system are not atomic: the counter-vs-freelist comparisons
allow `TOLERANCE_PAGES` (measured on the shipped stock captures: at most 27 pages
apart mid-run, 0 at start and end).  A live machine recorded long after boot moves far
more pages between the read of zoneinfo and the read of pagetypeinfo: unless the recorder
says it took the pair so that they agree (`mtaudit record` reads pagetypeinfo, zoneinfo,
pagetypeinfo and retakes until the two pagetypeinfo reads are equal), such a snapshot
is allowed `LIVE_FRACTION` of the zone's managed pages, at least two MAX_ORDER blocks.
Nothing here depends on the trace.
"""
from __future__ import annotations

import glob
import os
import re

import numpy as np

from ..kernels import KernelBehavior
from ._common import DetectorResult, ModelView, empty_findings, make_findings, with_stats
from .registry import DetectorInfo, FindingKind

INFO = DetectorInfo(
    id="A1", order=70, severity="critical",
    meaning="free-page counters disagree with the freelists or exceed their totals (double-counted free pages)",
    kernels="all",
    findings=(FindingKind("A1", "h"),),
    status_without_input="no snapshots",   # reads the capture's /proc snapshots, not events
)
TOLERANCE_PAGES = 256
LIVE_FRACTION = 0.001
LIVE_MIN_PAGES = 2048            # two order-10 (MAX_ORDER) blocks
PAGE_KB = 4


def applies(kernel: KernelBehavior) -> bool:
    return True


def _capture_dir(meta) -> str | None:
    src = getattr(meta, "source", None)
    if src and os.path.isdir(src):
        return src
    for p in (getattr(meta, "files", None) or {}).values():
        return os.path.dirname(p)
    return None


def read_meminfo(path: str) -> dict[str, int]:
    out = {}
    for line in open(path, errors="replace"):
        m = re.match(r"(\S+):\s+(\d+)", line)
        if m:
            out[m[1]] = int(m[2])
    return out


def read_zoneinfo(path: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    zone = None
    for line in open(path, errors="replace"):
        m = re.match(r"Node\s+(\d+),\s*zone\s+(\S+)", line)
        if m:
            zone = f"{m[1]}/{m[2]}"
            out[zone] = {}
            continue
        m = re.match(r"\s+(nr_free_pages|nr_free_cma|managed|cma|present)\s+(\d+)\s*$", line)
        if m and zone:
            out[zone].setdefault(m[1], int(m[2]))
    return out


def read_free_by_type(path: str) -> tuple[dict[tuple[str, str], int], bool]:
    """{(node/zone, type): free pages} from pagetypeinfo; capped (">100000") counts make it inexact."""
    out: dict[tuple[str, str], int] = {}
    capped = False
    for line in open(path, errors="replace"):
        m = re.match(r"Node\s+(\d+),\s*zone\s+(\S+),\s*type\s+(\S+)\s+(.*)$", line)
        if m:
            counts = m[4].split()
            capped |= any(c.startswith(">") for c in counts)
            out[(f"{m[1]}/{m[2]}", m[3])] = sum(int(c.lstrip(">")) << i for i, c in enumerate(counts))
    return out, capped


def _agreed(meta, tag: str) -> bool:
    """The recorder took this snapshot's zoneinfo and pagetypeinfo so that they agree."""
    man = getattr(meta, "manifest", None)
    rec = ((man.extra.get("recorder") if man is not None else None) or {}).get(tag) or {}
    return bool(rec.get("zoneinfo_pagetypeinfo_agree"))


def check_capture(meta, tol: int = TOLERANCE_PAGES, live: bool = False) -> tuple[list[dict], list[str]]:
    """(violations, snapshots checked).  Each violation: snapshot, what, counter, reference, text.

    live: the capture was taken on a running system (see the module docstring)."""
    cdir = _capture_dir(meta)
    if cdir is None:
        return [], []
    bad: list[dict] = []
    seen: list[str] = []

    def viol(snap, what, counter, ref, text):
        bad.append({"snapshot": snap, "check": what, "counter": int(counter), "reference": int(ref), "text": text})

    snaps = [(t, os.path.join(cdir, f"meminfo-{t}.txt"), os.path.join(cdir, f"zoneinfo-{t}.txt"),
              os.path.join(cdir, f"pagetypeinfo-{t}.txt")) for t in ("start", "end")]
    for snap_mi in sorted(glob.glob(os.path.join(cdir, "snap", "meminfo-*.txt"))):
        tag = "snap/" + os.path.basename(snap_mi)[len("meminfo-"):-len(".txt")]
        snaps.append((tag, snap_mi, "", snap_mi.replace("meminfo-", "pagetypeinfo-")))
    for tag, mi_p, zi_p, pt_p in snaps:
        checked = False
        mi = read_meminfo(mi_p) if os.path.isfile(mi_p) else {}
        if "MemFree" in mi and "MemTotal" in mi:
            checked = True
            if mi["MemFree"] > mi["MemTotal"]:
                viol(tag, "MemFree<=MemTotal", mi["MemFree"], mi["MemTotal"],
                     f"{tag}: MemFree {mi['MemFree']} kB > MemTotal {mi['MemTotal']} kB")
        if "CmaFree" in mi and "CmaTotal" in mi:
            if mi["CmaFree"] > mi["CmaTotal"]:
                viol(tag, "CmaFree<=CmaTotal", mi["CmaFree"], mi["CmaTotal"],
                     f"{tag}: CmaFree {mi['CmaFree']} kB > CmaTotal {mi['CmaTotal']} kB: free CMA pages "
                     "are counted more than once")
        free, capped = read_free_by_type(pt_p) if os.path.isfile(pt_p) else ({}, True)
        if "CmaFree" in mi and free and not capped and not zi_p:
            lists = sum(v for (_, t), v in free.items() if t == "CMA")
            cnt = mi["CmaFree"] // PAGE_KB
            if abs(cnt - lists) > tol:
                viol(tag, "CmaFree=CMA freelists", cnt, lists,
                     f"{tag}: CmaFree {cnt} pages but the CMA freelists hold {lists} "
                     f"({cnt - lists:+d} pages)")
        zi = read_zoneinfo(zi_p) if zi_p and os.path.isfile(zi_p) else {}
        loose = live and not _agreed(meta, tag)
        for z, v in zi.items():
            if not v.get("present"):
                continue
            checked = True
            ztol = max(tol, LIVE_MIN_PAGES, int(v.get("managed", 0) * LIVE_FRACTION)) if loose else tol
            if "managed" in v and v.get("nr_free_pages", 0) > v["managed"]:
                viol(tag, "nr_free_pages<=managed", v["nr_free_pages"], v["managed"],
                     f"{tag} zone {z}: nr_free_pages {v['nr_free_pages']} > managed {v['managed']}")
            if v.get("cma") is not None and v.get("nr_free_cma", 0) > v["cma"]:
                viol(tag, "nr_free_cma<=cma", v["nr_free_cma"], v["cma"],
                     f"{tag} zone {z}: nr_free_cma {v['nr_free_cma']} > its CMA pages {v['cma']}")
            if not free or capped:
                continue
            lists = sum(n for (zz, t), n in free.items() if zz == z and t != "Isolate")
            if "nr_free_pages" in v and abs(v["nr_free_pages"] - lists) > ztol:
                viol(tag, "nr_free_pages=freelists", v["nr_free_pages"], lists,
                     f"{tag} zone {z}: nr_free_pages {v['nr_free_pages']} but its non-isolate freelists hold "
                     f"{lists} ({v['nr_free_pages'] - lists:+d} pages)")
            cma = sum(n for (zz, t), n in free.items() if zz == z and t == "CMA")
            if "nr_free_cma" in v and abs(v["nr_free_cma"] - cma) > ztol:
                viol(tag, "nr_free_cma=CMA freelists", v["nr_free_cma"], cma,
                     f"{tag} zone {z}: nr_free_cma {v['nr_free_cma']} but the CMA freelists hold {cma} "
                     f"({v['nr_free_cma'] - cma:+d} pages)")
        if checked:
            seen.append(tag)
    return bad, seen


def detect(model: ModelView, kernel: KernelBehavior) -> DetectorResult:
    from ..model.consistency import live_start
    meta = getattr(model, "meta", None)
    bad, seen = check_capture(meta, live=live_start(model, meta)) if meta is not None else ([], [])
    if not bad:
        out = empty_findings()
    else:
        end_seq = int(getattr(model, "trace_end_seq", 0) or 0)
        end_ts = int(getattr(model, "trace_end_ts", 0) or 0)
        start = np.array([b["snapshot"] == "start" for b in bad])
        n = len(bad)
        out = make_findings(detector=INFO.id, severity=INFO.severity, seq=np.where(start, -1, end_seq),
                            ts=np.where(start, 0, end_ts), cpu=np.full(n, -1), pfn=np.zeros(n, np.uint64),
                            block=np.full(n, -1), event=[f"accounting:{b['check']}" for b in bad],
                            printed_mt=np.full(n, -1), block_mt=np.full(n, -1),
                            explanation=[b["text"] for b in bad])
    extra: dict[str, object] = {"violations": bad} if bad else {}
    return with_stats(out, checked=len(seen), skipped_unknown=0, **extra)
