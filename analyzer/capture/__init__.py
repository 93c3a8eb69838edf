"""Capture metadata: what the trace alone cannot tell the model.

A trace.dat has the page-allocator events but not the memory layout they happen
in: pageblock order, zone spans, where the CMA areas are, what /proc/pagetypeinfo
said before and after.  `load_capture()` reads those from a capture directory (the
bundle layout of docs/contracts.md section 1), a `.tar.zst` of one, or nothing at all
(a bare trace file), and records in `CaptureMeta.unknowns` everything it had to
assume, so the report can say how far the conclusions reach.
"""
from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import weakref
from dataclasses import dataclass, field
from typing import Any

from ..bundle import (ALIASES, PERF_TRACE, STATS, TEXT_FILES, TRACE, CaptureError, Manifest, lost_events, parse_manifest,
                     parse_stats)
from ..kernels import CMA, PAGEBLOCK_ORDER_MAX, PAGEBLOCK_ORDER_MIN, Numbering, canonical_mt, numbering_from
from ..readers import load
from ..readers.base import Trace


DEFAULT_PAGEBLOCK_ORDER = 9
DEFAULT_PAGE_SIZE = 4096
# A pfn is a physical address >> PAGE_SHIFT: below 2^52 on every 64-bit kernel (at most 64
# address bits, pages of at least 4 KiB).  Larger values come from a corrupt or hostile input.
PFN_LIMIT = 1 << 52
# The model keeps one row per pageblock of every zone and CMA area: 2^22 blocks is 8 TiB of
# RAM in order-9 blocks of 4 KiB pages.  A span beyond that is a broken zoneinfo/--cma/trace
# for this tool, and would only exhaust memory.
MAX_SPAN_BLOCKS = 1 << 22
_ARCH_ALIASES = {"aarch64": "arm64", "amd64": "x86_64"}
_RELEASE_ARCHES = ("arm64", "amd64", "x86_64", "riscv64", "ppc64el", "s390x")


@dataclass
class PageTypeInfo:
    """One parsed /proc/pagetypeinfo snapshot."""

    path: str
    pageblock_order: int | None
    pages_per_block: int | None
    type_names: list[str]
    # (node, zone) -> {migratetype index: number of pageblocks}
    blocks: dict[tuple[int, str], dict[int, int]]
    # (node, zone, migratetype index) -> free pages count per order (">100000" capped as 100000)
    free: dict[tuple[int, str, int], list[int]]

    def zone_blocks(self, zone: str) -> dict[int, int]:
        """Block counts of a zone summed over nodes."""
        out: dict[int, int] = {}
        for (_, z), counts in self.blocks.items():
            if z == zone:
                for mt, n in counts.items():
                    out[mt] = out.get(mt, 0) + n
        return out


@dataclass
class CaptureMeta:
    """Everything known about a capture besides its events (contract section 3)."""

    source: str
    kind: str                               # "directory" | "archive" | "trace"
    kernel_release: str | None = None       # `uname -r`
    uname: str | None = None                # full `uname -a` when known (gives Debian's real version)
    arch: str | None = None
    pageblock_order: int = DEFAULT_PAGEBLOCK_ORDER
    page_size: int = DEFAULT_PAGE_SIZE
    zones: list[tuple[str, int, int]] = field(default_factory=list)       # (name, start_pfn, end_pfn)
    cma_areas: list[tuple[str, int, int]] = field(default_factory=list)   # (name, base_pfn, count)
    pagetypeinfo_start: PageTypeInfo | None = None
    pagetypeinfo_end: PageTypeInfo | None = None
    cmdline: str | None = None
    manifest: Manifest | None = None
    lost_events: dict[str, int] = field(default_factory=dict)
    ground_truth_events: list[str] = field(default_factory=list)  # extra kprobe event names given by the user
    files: dict[str, str] = field(default_factory=dict)           # metadata file name -> path used
    unknowns: list[str] = field(default_factory=list)
    provenance: dict[str, str] = field(default_factory=dict)      # field -> where it came from
    numbering: Numbering = field(default_factory=lambda: numbering_from(None, None))  # printed migratetypes

    @property
    def kernel_id(self) -> str | None:
        """The most precise kernel identification (full uname line if any) for `behavior_for()`."""
        return self.uname or self.kernel_release

    def zone_of_block(self, block: int) -> str | None:
        pbo = self.pageblock_order
        for name, lo, hi in self.zones:
            if (lo >> pbo) <= block <= ((hi - 1) >> pbo):
                return name
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source, "kind": self.kind, "kernel_release": self.kernel_release,
            "uname": self.uname, "arch": self.arch, "pageblock_order": self.pageblock_order,
            "zones": [list(z) for z in self.zones], "cma_areas": [list(c) for c in self.cma_areas],
            "pagetypeinfo_start": bool(self.pagetypeinfo_start),
            "pagetypeinfo_end": bool(self.pagetypeinfo_end),
            "unknowns": list(self.unknowns), "provenance": dict(self.provenance),
            "migratetypes": list(self.numbering.names) if self.numbering.known else None,
        }


# ----------------------------------------------------------------------------- parsers
_PTI_ORDER = re.compile(r"^Page block order:\s*(\d+)\s*$")
_PTI_PPB = re.compile(r"^Pages per block:\s*(\d+)\s*$")
_PTI_FREE = re.compile(r"^Node\s+(\d+),\s*zone\s+(\S+),\s*type\s+(\S+)\s+(.*)$")
_PTI_BLOCKS = re.compile(r"^Node\s+(\d+),\s*zone\s+(\S+)\s+([\d\s]+)$")


def parse_pagetypeinfo(text: str, path: str) -> PageTypeInfo:
    order = ppb = None
    type_names: list[str] = []
    blocks: dict[tuple[int, str], dict[int, int]] = {}
    free_by_name: dict[tuple[int, str, str], list[int]] = {}
    section = None
    for ln, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if m := _PTI_ORDER.match(s):
            order = int(m[1]); continue
        if m := _PTI_PPB.match(s):
            ppb = int(m[1]); continue
        if s.startswith("Free pages count per migrate type"):
            section = "free"; continue
        if s.startswith("Number of blocks type"):
            section = "blocks"
            type_names = s[len("Number of blocks type"):].split()
            continue
        if s.startswith("Number of mixed blocks"):
            section = "mixed"; continue
        if section == "free" and (m := _PTI_FREE.match(s)):
            try:
                vals = [int(v.lstrip(">")) for v in m[4].split()]
            except ValueError:
                raise CaptureError(f"{path}: line {ln}: bad free page count: {s[:80]!r}") from None
            free_by_name[(int(m[1]), m[2], m[3])] = vals
            continue
        if section == "blocks" and (m := _PTI_BLOCKS.match(s)):
            vals = [int(v) for v in m[3].split()]
            if len(vals) != len(type_names):
                raise CaptureError(f"{path}: line {ln}: {len(vals)} block counts for {len(type_names)} types")
            # canonical numbers (CMA=n kernels have no CMA column: Isolate is their 4th index)
            blocks[(int(m[1]), m[2])] = {_canon(n, i): v for i, (n, v) in enumerate(zip(type_names, vals))}
            continue
        if section == "mixed":
            continue
        raise CaptureError(f"{path}: line {ln}: not a /proc/pagetypeinfo line: {s[:80]!r}")
    if order is None and not blocks:
        raise CaptureError(f"{path}: no 'Page block order' line and no block table: not /proc/pagetypeinfo")
    name_to_mt = {n.lower(): _canon(n, i) for i, n in enumerate(type_names)}
    free_mt: dict[tuple[int, str, int], list[int]] = {}
    for (node, zone, tname), vals in free_by_name.items():
        mt = name_to_mt.get(tname.lower())
        if mt is None:
            c = canonical_mt(tname)
            mt = -1 if c is None else c
        free_mt[(node, zone, mt)] = vals
    if order is not None and ppb is not None and ppb != 1 << order:
        raise CaptureError(f"{path}: 'Pages per block' {ppb} != 2^'Page block order' {order}")
    if order is None and ppb:
        order = ppb.bit_length() - 1
    return PageTypeInfo(path, order, ppb, type_names, blocks, free_mt)


def _canon(name: str, index: int) -> int:
    """Canonical migratetype number of a pagetypeinfo column (unknown names: index + 16)."""
    c = canonical_mt(name)
    return index + 16 if c is None else c


_ZI_HEAD = re.compile(r"^Node\s+(\d+),\s*zone\s+(\S+)\s*$")


def parse_zoneinfo(text: str, path: str) -> list[tuple[str, int, int]]:
    """(zone, start_pfn, end_pfn) for every zone with pages, from /proc/zoneinfo."""
    zones: list[tuple[str, int, int]] = []
    cur: dict[str, Any] | None = None
    heads = 0

    def flush() -> None:
        if cur and cur.get("spanned") and cur.get("start") is not None:
            zones.append((cur["name"], cur["start"], cur["start"] + cur["spanned"]))

    for line in text.splitlines():
        s = line.strip()
        if m := _ZI_HEAD.match(s):
            flush()
            cur = {"name": m[2], "spanned": None, "start": None}
            heads += 1
            continue
        if cur is None:
            continue
        parts = s.replace(":", " ").split()
        try:
            if len(parts) == 2 and parts[0] == "spanned":
                cur["spanned"] = int(parts[1])
            elif len(parts) == 2 and parts[0] == "start_pfn":
                cur["start"] = int(parts[1])
        except ValueError:
            raise CaptureError(f"{path}: bad number in line {s[:80]!r}") from None
    flush()
    if heads == 0:
        raise CaptureError(f"{path}: no 'Node N, zone NAME' header: not /proc/zoneinfo")
    return zones


_CMA_RES = re.compile(r"cma: Reserved (\d+) MiB at (0x[0-9a-fA-F]+)(?: on node (-?\d+))?")
_HUGETLB_RESERVE = re.compile(r"hugetlb_cma: reserve \d+ MiB")
_HUGETLB_RESERVED = re.compile(r"hugetlb_cma: reserved \d+ MiB on node (\d+)")
_ZONE_RANGE = re.compile(r"^\s*(\w+)\s+\[mem (0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)\]")


def parse_dmesg_cma(text: str, page_size: int) -> list[tuple[str, int, int]]:
    """CMA areas from "cma: Reserved N MiB at 0x..." boot lines, named as well as the log allows.

    A reservation between "hugetlb_cma: reserve" and "hugetlb_cma: reserved ... on node N"
    (or carrying "on node N" inside that bracket) is `hugetlbN`; the first other one is the
    default DMA area `reserved`.  Names are later confirmed against the cma_* events.
    """
    areas: list[tuple[str, int, int]] = []
    pending: list[int] = []        # indexes of areas inside an open hugetlb_cma bracket
    in_hugetlb = False
    seen_default = False
    shift = page_size.bit_length() - 1
    for raw in text.splitlines():
        line = re.sub(r"^\[\s*[\d.]+\]\s*", "", raw)
        if _HUGETLB_RESERVE.search(line):
            in_hugetlb = True
            continue
        if m := _HUGETLB_RESERVED.search(line):
            for i in pending:
                areas[i] = (f"hugetlb{m[1]}", areas[i][1], areas[i][2])
            pending, in_hugetlb = [], False
            continue
        if m := _CMA_RES.search(line):
            base = int(m[2], 16) >> shift
            count = (int(m[1]) << 20) >> shift
            if in_hugetlb:
                pending.append(len(areas))
                name = f"hugetlb{m[3]}" if m[3] not in (None, "-1") else f"hugetlb{len(pending) - 1}"
            elif not seen_default:
                name, seen_default = "reserved", True
            else:
                name = f"cma{len(areas)}"
            areas.append((name, base, count))
    return areas


def parse_dmesg_zones(text: str, page_size: int) -> list[tuple[str, int, int]]:
    """Zone spans from the boot log's "Zone ranges:" block (fallback when zoneinfo is missing)."""
    zones: list[tuple[str, int, int]] = []
    lines = [re.sub(r"^\[\s*[\d.]+\]\s*", "", l) for l in text.splitlines()]
    shift = page_size.bit_length() - 1
    for i, l in enumerate(lines):
        if l.strip() == "Zone ranges:":
            for l2 in lines[i + 1:i + 8]:
                if m := _ZONE_RANGE.match(l2):
                    zones.append((m[1], int(m[2], 16) >> shift, (int(m[3], 16) + 1) >> shift))
                elif "empty" not in l2:
                    break
            break
    return zones


def parse_cma_override(spec: str) -> tuple[str, int, int]:
    """--cma NAME:BASEPFN:COUNT (numbers decimal or 0x hex)."""
    parts = spec.split(":")
    if len(parts) != 3:
        raise CaptureError(f"--cma {spec!r}: expected NAME:BASEPFN:COUNT")
    try:
        return parts[0], int(parts[1], 0), int(parts[2], 0)
    except ValueError:
        raise CaptureError(f"--cma {spec!r}: BASEPFN and COUNT must be numbers") from None


# ----------------------------------------------------------------------------- loading
def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CaptureError(f"{path}: {e.strerror or e}") from None
    if b"\0" in data[:4096]:
        raise CaptureError(f"{path}: binary data where a text snapshot was expected")
    return data.decode("utf-8", "replace")


def _extract_archive(path: str) -> tuple[str, str]:
    """Extract a .tar.zst into a temp dir; return (tempdir, capture dir inside it)."""
    import zstandard
    tmp = tempfile.mkdtemp(prefix="mtaudit-capture-")
    try:
        with open(path, "rb") as f:
            reader = zstandard.ZstdDecompressor().stream_reader(f)
            with tarfile.open(fileobj=reader, mode="r|") as tf:
                tf.extractall(tmp, filter="data")
    except (zstandard.ZstdError, tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CaptureError(f"{path}: not a readable .tar.zst capture: {e}") from None
    for root, _dirs, files in os.walk(tmp):
        if "trace.dat" in files:
            return tmp, root
    shutil.rmtree(tmp, ignore_errors=True)
    raise CaptureError(f"{path}: archive holds no trace.dat")


def load_capture(path: str | os.PathLike, overrides: dict | None = None) -> tuple[Trace, CaptureMeta]:
    """Open a capture directory, a `.tar.zst` of one, or a bare trace file.

    overrides (from CLI flags, they win over files): pageblock_order (int), cma (list of
    "NAME:BASEPFN:COUNT" or tuples), kernel (release or full uname line),
    ground_truth_events (list of event names).
    """
    path = os.fspath(path)
    ov = dict(overrides or {})
    tmpdir = None
    if os.path.isdir(path):
        kind, cdir = "directory", path
        tpath = os.path.join(path, TRACE)
        if not os.path.exists(tpath) and os.path.exists(os.path.join(path, PERF_TRACE)):
            tpath = os.path.join(path, PERF_TRACE)        # `mtaudit record --backend perf`
        if not os.path.exists(tpath):
            raise CaptureError(f"{path}: capture directory has no trace.dat or perf.data")
    elif path.endswith((".tar.zst", ".tzst")):
        tmpdir, cdir = _extract_archive(path)
        kind, tpath = "archive", os.path.join(cdir, TRACE)
    elif os.path.exists(path):
        kind, cdir, tpath = "trace", None, path
    else:
        raise CaptureError(f"{path}: no such file or directory")
    try:
        trace = load(tpath)
    except BaseException:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    if tmpdir:
        # The reader may read lazily: the extracted files live as long as the Trace does.
        weakref.finalize(trace, shutil.rmtree, tmpdir, True)
    meta = CaptureMeta(source=path, kind=kind)
    texts: dict[str, str] = {}
    if cdir:
        for name in TEXT_FILES:
            p = os.path.join(cdir, name)
            if os.path.isfile(p):
                texts[name] = _read_text(p)
                meta.files[name] = p
        for alias, name in ALIASES.items():
            p = os.path.join(cdir, alias)
            if name not in texts and os.path.isfile(p):
                texts[name] = _read_text(p)
                meta.files[name] = p
                meta.provenance.setdefault("aliases", "")
                meta.provenance["aliases"] += f"{alias} as {name}; "
    _fill_meta(meta, trace, texts, ov)
    check_extents(meta)
    return trace, meta


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
    cfg_cma = ((kern.get("config") or {}) if isinstance(kern.get("config"), dict) else {}).get("CMA")
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
    if cfg.get("CONFIG_CMA") == "n":
        return "none (kernel config: CONFIG_CMA is not set)"
    for name in ("dmesg-start.txt", "dmesg-end.txt"):
        p = meta.files.get(name)
        if p and cfg.get("CONFIG_CMA") == "y":
            text = _read_text(p)
            if "Linux version" in text and "cma: Reserved" not in text:
                return f"none (complete boot log {name} has no 'cma: Reserved' line)"
    return None


def _cma_from_events(meta: CaptureMeta, trace: Trace) -> None:
    """Confirm area names with the cma_* events' pfns; derive extents when the boot log is missing."""
    import numpy as np
    spans: dict[str, tuple[int, int]] = {}
    for ev in ("cma_alloc_finish", "cma_alloc_busy_retry", "cma_release"):
        if not trace.has(ev):
            continue
        cols = ["name", "pfn", "count"]
        fmt = trace.formats().get(ev) or next((f for k, f in trace.formats().items() if k.endswith(":" + ev)), None)
        has_err = ev == "cma_alloc_finish" and fmt is not None and any(f.name == "errorno" for f in fmt.fields)
        t = trace.table(ev, cols + (["errorno"] if has_err else []))
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
