"""Capture metadata types and the limits every loader enforces.

`CaptureMeta` is everything known about a capture besides its events; `PageTypeInfo` one
/proc/pagetypeinfo snapshot.  Kept apart from the loaders so the model can import the types
and limits without pulling in the readers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..bundle import Manifest
from ..kernels import Numbering, numbering_from


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
