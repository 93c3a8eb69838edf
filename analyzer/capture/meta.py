"""Metadata precedence: which source wins for each field of `CaptureMeta`.

CLI overrides beat the capture's files, which beat the manifest, which beats what the trace
itself says; whatever no source gives is assumed and recorded in `CaptureMeta.unknowns`.
"""
from __future__ import annotations

import os
import re

from ..bundle import STATS, CaptureError, lost_events, parse_manifest, parse_stats
from ..kernels import CMA, PAGEBLOCK_ORDER_MAX, PAGEBLOCK_ORDER_MIN, numbering_from
from ..readers.base import Trace
from .archive import _read_text
from .parsers import parse_cma_override, parse_dmesg_cma, parse_dmesg_zones, parse_pagetypeinfo, parse_zoneinfo
from .schema import _ARCH_ALIASES, _RELEASE_ARCHES, DEFAULT_PAGEBLOCK_ORDER, MAX_SPAN_BLOCKS, PFN_LIMIT, CaptureMeta



def config_value(config: object, opt: str) -> str | None:
    """A kernel config option from the manifest's `kernel.config`, keyed without the CONFIG_
    prefix (what collect and record write); bundles recorded before that convention carry the
    prefix, so both spellings are read."""
    if not isinstance(config, dict):
        return None
    v = config.get(opt, config.get(f"CONFIG_{opt}"))
    return None if v is None else str(v)

def _fill_meta(meta: CaptureMeta, trace: Trace, texts: dict[str, str], ov: dict) -> None:
    tm = trace.meta
    if tm.page_size:
        meta.page_size = int(tm.page_size)
    # -- manifest ------------------------------------------------------------------
    if "manifest.json" in texts:
        man = parse_manifest(texts["manifest.json"], meta.files["manifest.json"])
        meta.manifest = man
        meta.lost_events = dict(man.lost_events)
        if man.cmdline:
            meta.cmdline = str(man.cmdline)
    # -- kernel --------------------------------------------------------------------
    kern = meta.manifest.kernel if meta.manifest else {}
    if ov.get("kernel"):
        k = str(ov["kernel"])
        meta.uname = k if " " in k else None
        meta.kernel_release = k.split()[2] if k.startswith("Linux ") else k.split()[0]
        meta.provenance["kernel"] = "--kernel"
    elif "uname.txt" in texts and texts["uname.txt"].strip():
        line = texts["uname.txt"].strip().splitlines()[0]
        toks = line.split()
        if len(toks) < 3 or toks[0] != "Linux":
            raise CaptureError(f"{meta.files['uname.txt']}: not a `uname -a` line: {line[:80]!r}")
        meta.uname, meta.kernel_release = line, toks[2]
        meta.provenance["kernel"] = "uname.txt"
    elif kern.get("release"):
        meta.kernel_release = str(kern["release"])
        ver = str(kern.get("version") or "")
        meta.uname = f"{meta.kernel_release} Debian {ver}" if re.match(r"\d+\.\d+\.\d+", ver) else None
        meta.provenance["kernel"] = "manifest.json"
    elif tm.uname or tm.kernel_release:
        meta.uname = tm.uname if tm.uname and " " in tm.uname else None
        meta.kernel_release = tm.kernel_release or (tm.uname.split()[2] if tm.uname and tm.uname.startswith("Linux ") else tm.uname)
        meta.provenance["kernel"] = "trace"
    else:
        meta.unknowns.append("kernel release unknown (no uname.txt, manifest or UNAME option): "
                             "6.1-like semantics assumed; pass --kernel")
    meta.arch = guess_arch(meta.uname, kern.get("arch"), meta.kernel_release)
    if "stats-end.txt" in texts and not meta.lost_events:
        meta.lost_events = lost_events(parse_stats(texts[STATS], meta.files[STATS]))
        meta.provenance["lost_events"] = "stats-end.txt"
    if "cmdline.txt" in texts and not meta.cmdline:
        meta.cmdline = texts["cmdline.txt"].strip()
    # -- pagetypeinfo / pageblock order ----------------------------------------------
    for when in ("start", "end"):
        name = f"pagetypeinfo-{when}.txt"
        if name in texts:
            setattr(meta, f"pagetypeinfo_{when}", parse_pagetypeinfo(texts[name], meta.files[name]))
    pti = meta.pagetypeinfo_end or meta.pagetypeinfo_start
    cfg_cma = config_value(kern.get("config"), "CMA")
    meta.numbering = numbering_from(pti.type_names if pti and pti.type_names else None,
                                    str(cfg_cma) if cfg_cma is not None else None)
    meta.provenance["migratetypes"] = meta.numbering.source
    if pti and pti.type_names and cfg_cma is not None and meta.numbering.has_cma != (str(cfg_cma) in ("y", "m")):
        meta.unknowns.append(f"pagetypeinfo columns ({' '.join(pti.type_names)}) disagree with the manifest's "
                             f"CONFIG_CMA={cfg_cma}: the columns are used")
    if not meta.numbering.known:
        meta.unknowns.append("migratetype numbering unknown (no pagetypeinfo, no kernel config): the CMA=y "
                             "numbering is used (4 = CMA, 5 = Isolate); on a CMA=n kernel 4 means Isolate")
    if ov.get("pageblock_order") is not None:
        meta.pageblock_order = int(ov["pageblock_order"])
        meta.provenance["pageblock_order"] = "--pageblock-order"
    elif pti and pti.pageblock_order is not None:
        meta.pageblock_order = pti.pageblock_order
        meta.provenance["pageblock_order"] = os.path.basename(pti.path)
    else:
        meta.pageblock_order = DEFAULT_PAGEBLOCK_ORDER
        meta.provenance["pageblock_order"] = "default"
        meta.unknowns.append(f"pageblock order unknown (no pagetypeinfo): assumed {DEFAULT_PAGEBLOCK_ORDER}")
    if not PAGEBLOCK_ORDER_MIN <= meta.pageblock_order <= PAGEBLOCK_ORDER_MAX:
        raise CaptureError(f"pageblock order {meta.pageblock_order} out of range "
                           f"{PAGEBLOCK_ORDER_MIN}..{PAGEBLOCK_ORDER_MAX}")
    # -- zones -------------------------------------------------------------------------
    for name in ("zoneinfo-end.txt", "zoneinfo-start.txt"):
        if name in texts:
            meta.zones = parse_zoneinfo(texts[name], meta.files[name])
            meta.provenance["zones"] = name
            break
    dmesgs = [texts[n] for n in ("dmesg-start.txt", "dmesg-end.txt", "dmesg-cma.txt") if n in texts]
    dmesg = "\n".join(dmesgs)
    if not meta.zones and dmesg:
        meta.zones = parse_dmesg_zones(dmesg, meta.page_size)
        if meta.zones:
            meta.provenance["zones"] = "dmesg Zone ranges"
    if not meta.zones:
        meta.unknowns.append("zone spans unknown (no zoneinfo or boot log): one zone '?' spanning the "
                             "pageblocks seen in the trace is assumed; blocks never touched are not counted")
    # -- CMA areas -----------------------------------------------------------------------
    if ov.get("cma"):
        meta.cma_areas = [c if isinstance(c, tuple) else parse_cma_override(str(c)) for c in ov["cma"]]
        meta.provenance["cma_areas"] = "--cma"
    else:
        if dmesgs:
            by_base: dict[int, tuple[str, int, int]] = {}
            for text in dmesgs:       # each log parsed alone (brackets must not span files)
                for a in parse_dmesg_cma(text, meta.page_size):
                    by_base.setdefault(a[1], a)
            meta.cma_areas = sorted(by_base.values(), key=lambda a: a[1])
            if meta.cma_areas:
                meta.provenance["cma_areas"] = "dmesg"
        _cma_from_events(meta, trace)
    if ov.get("ground_truth_events"):
        meta.ground_truth_events = list(ov["ground_truth_events"])


def guess_arch(uname: str | None, manifest_arch: object, release: str | None) -> str | None:
    """The machine architecture, from the best source present, in kernel naming (arm64, x86_64).

    Order: the `uname -a` line (its machine field), the bundle manifest, then a Debian
    release suffix ("6.1.0-50-arm64", "...-amd64")."""
    arch = None
    toks = (uname or "").split()
    if toks and toks[-1] == "GNU/Linux":
        toks = toks[:-1]
    if len(toks) >= 4 and toks[0] == "Linux":
        arch = toks[-1]
    elif manifest_arch:
        arch = str(manifest_arch)
    elif release:
        arch = next((a for a in _RELEASE_ARCHES if release.endswith(a)), None)
    return _ARCH_ALIASES.get(arch, arch) if arch else None


def check_extents(meta: CaptureMeta) -> None:
    """Zones and CMA areas must be real memory: inside 0..PFN_LIMIT and at most MAX_SPAN_BLOCKS
    pageblocks each (the model lists every block of them).  Called by load_capture() and by
    analyze() for a CaptureMeta built in code."""
    pbo = min(max(int(meta.pageblock_order or DEFAULT_PAGEBLOCK_ORDER), 0), 63)
    spans = [(f"zone {n}", int(lo), int(hi), meta.provenance.get("zones", "metadata")) for n, lo, hi in meta.zones]
    spans += [(f"CMA area {n!r}", int(b), int(b) + int(c), meta.provenance.get("cma_areas", "metadata"))
              for n, b, c in meta.cma_areas]
    for what, lo, hi, src in spans:
        if lo < 0 or hi < lo or hi > PFN_LIMIT:
            raise CaptureError(f"{meta.source}: {what} (from {src}) spans pfns [{lo:#x}, {hi:#x}): "
                               f"not a memory range (pfns are 0..{PFN_LIMIT:#x})")
        if (hi - lo) >> pbo > MAX_SPAN_BLOCKS:
            raise CaptureError(f"{meta.source}: {what} (from {src}) spans {(hi - lo) >> pbo} pageblocks, "
                               f"more than the {MAX_SPAN_BLOCKS} the model handles: a broken zone/CMA record?")


def _no_cma(meta: CaptureMeta) -> str | None:
    """Why the capture certainly has no CMA area (a recorded live kernel), or None.

    The manifest's kernel config says CONFIG_CMA is off, or the recorded boot log is complete
    (it still holds the "Linux version" banner) and has no reservation line."""
    cfg = ((meta.manifest.kernel if meta.manifest else {}) or {}).get("config") or {}
    if config_value(cfg, "CMA") == "n":
        return "none (kernel config: CONFIG_CMA is not set)"
    for name in ("dmesg-start.txt", "dmesg-end.txt"):
        p = meta.files.get(name)
        if p and config_value(cfg, "CMA") == "y":
            text = _read_text(p)
            if "Linux version" in text and "cma: Reserved" not in text:
                return f"none (complete boot log {name} has no 'cma: Reserved' line)"
    return None


STREAM_BYTES = 64 << 20


def _streamed(trace: Trace, events: list[str]):
    """{event: table} of a few small events read in one streaming pass, when the trace is a big
    trace.dat not decoded yet (`table()` would decode every record in memory, which a
    pageblock-partitioned analysis of a big capture must not); None: use `table()`."""
    if not events or getattr(trace.meta, "format", None) != "trace.dat" or getattr(trace, "_tables", 1) is not None:
        return None
    try:
        if os.path.getsize(trace.meta.path) < STREAM_BYTES:
            return None
    except OSError:
        return None
    import pyarrow as pa
    full = {trace.resolve(e): e for e in events}
    got: dict[str, list] = {e: [] for e in events}
    for name, batch in trace.iter_batches(list(full)):
        got[full[name]].append(batch)
    return {e: pa.Table.from_batches(b) for e, b in got.items() if b}   # no records: nothing to confirm


def _cma_from_events(meta: CaptureMeta, trace: Trace) -> None:
    """Confirm area names with the cma_* events' pfns; derive extents when the boot log is missing."""
    import numpy as np
    spans: dict[str, tuple[int, int]] = {}
    present = [ev for ev in ("cma_alloc_finish", "cma_alloc_busy_retry", "cma_release") if trace.has(ev)]
    small = _streamed(trace, present)
    for ev in present:
        if small is not None and ev not in small:
            continue
        cols = ["name", "pfn", "count"]
        fmt = trace.formats().get(ev) or next((f for k, f in trace.formats().items() if k.endswith(":" + ev)), None)
        has_err = ev == "cma_alloc_finish" and fmt is not None and any(f.name == "errorno" for f in fmt.fields)
        t = small[ev].select(cols + (["errorno"] if has_err else [])) if small is not None \
            else trace.table(ev, cols + (["errorno"] if has_err else []))
        if not len(t):
            continue
        names = t.column("name").to_pylist()
        pfn = t.column("pfn").to_numpy(zero_copy_only=False).astype(np.uint64)
        cnt = t.column("count").to_numpy(zero_copy_only=False).astype(np.uint64)
        # a failed allocation names no page: pfn -1UL (<= 6.17) or 0 (6.18+, "page ? pfn : 0");
        # an area must never be guessed from it
        failed = np.zeros(len(pfn), bool)
        if has_err:
            err = t.column("errorno").to_numpy(zero_copy_only=False)
            failed = np.asarray(err, dtype=np.int64) != 0
        if ev == "cma_alloc_finish":
            failed |= pfn == 0
        for n, p, c, bad in zip(names, pfn, cnt, failed):
            if n is None or bad or int(p) >= PFN_LIMIT or int(c) >= PFN_LIMIT - int(p):   # -1UL "no page", or corrupt
                continue
            lo, hi = spans.get(n, (int(p), int(p + c)))
            spans[n] = (min(lo, int(p)), max(hi, int(p + c)))
    if not spans:
        pti = meta.pagetypeinfo_start
        no_cma_blocks = pti is not None and bool(pti.blocks) and meta.numbering.has_cma and \
            sum(c.get(CMA, 0) for c in pti.blocks.values()) == 0
        if not meta.cma_areas and meta.numbering.known and not meta.numbering.has_cma:
            meta.provenance.setdefault("cma_areas", f"none: the kernel has no CMA ({meta.numbering.source})")
        elif not meta.cma_areas and no_cma_blocks:
            meta.provenance.setdefault("cma_areas", "none: pagetypeinfo-start counts 0 CMA pageblocks")
        elif not meta.cma_areas and _no_cma(meta):
            meta.provenance["cma_areas"] = _no_cma(meta)
        elif not meta.cma_areas:
            meta.unknowns.append("CMA areas unknown (no 'cma: Reserved' boot lines, no cma_* events with "
                                 "pfns): blocks are assumed non-CMA; pass --cma NAME:BASEPFN:COUNT")
        return
    areas = list(meta.cma_areas)
    for name, (lo, hi) in sorted(spans.items()):
        hit = [i for i, (_, b, c) in enumerate(areas) if b <= lo and hi <= b + c]
        if hit:
            i = hit[0]
            if areas[i][0] != name:
                areas[i] = (name, areas[i][1], areas[i][2])
        elif not any(n == name for n, _, _ in areas):
            areas.append((name, lo, hi - lo))
            meta.unknowns.append(f"CMA area {name!r}: extent derived from cma_* event pfns "
                                 f"[{lo:#x}, {hi:#x}) — a lower bound of the real area")
            meta.provenance.setdefault("cma_areas", "cma events")
    meta.cma_areas = areas
