"""Parsers of the text snapshots a capture carries: /proc/pagetypeinfo, /proc/zoneinfo, the
boot log's CMA reservations and zone ranges, and the `--cma NAME:BASE:COUNT` override.

Each takes the text (and the file name for its error messages) and returns plain values:
the precedence between sources lives in meta.py.
"""
from __future__ import annotations

import re
from typing import Any

from ..bundle import CaptureError
from ..kernels import canonical_mt
from .schema import PageTypeInfo


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
