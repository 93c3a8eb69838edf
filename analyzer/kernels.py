"""The ONE table of kernel-version semantics mtaudit relies on.

Every "which kernel does what" question (what a drain's migratetype means, whether
cma_alloc_finish has errorno, which untraced retypes exist, which known bugs are
present) is answered here from the *upstream* version of the running kernel, so the
model and detectors never compare version numbers themselves.

Sources: ../shared/notes/kernel-mm.md (sections 1.5-1.9, 3.4, 3.6, 3.7).  Debian
releases such as "6.1.0-50-arm64" carry the real upstream version only in
`uname -v` ("#1 SMP Debian 6.1.176-1 (...)"), so `behavior_for()` accepts the full
`uname -a` line and prefers the version found there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# Migratetype numbering with CONFIG_CMA=y and CONFIG_MEMORY_ISOLATION=y (6.1 and 6.12).
UNMOVABLE, MOVABLE, RECLAIMABLE, HIGHATOMIC, CMA, ISOLATE = 0, 1, 2, 3, 4, 5
UNKNOWN_MT = -1
MIGRATETYPE_NAMES: dict[int, str] = {
    UNMOVABLE: "Unmovable", MOVABLE: "Movable", RECLAIMABLE: "Reclaimable",
    HIGHATOMIC: "HighAtomic", CMA: "CMA", ISOLATE: "Isolate", UNKNOWN_MT: "unknown",
}
MIGRATE_PCPTYPES = 3
PAGE_ALLOC_COSTLY_ORDER = 3
MIGRATETYPE_MASK = 7
GFP_HIGH = 0x20          # ___GFP_HIGH, bit 5 in both 6.1 (#define) and 6.12 (enum bit)


def mt_name(mt: int) -> str:
    return MIGRATETYPE_NAMES.get(int(mt), f"mt{int(mt)}")


Version = tuple[int, int, int]


@dataclass(frozen=True)
class KernelBehavior:
    """What the traced kernel does, as far as mtaudit's model and detectors care.

    `version` is the upstream (kernel.org) version; None when it could not be
    determined, in which case the 6.1-like (pessimistic, cached-type) semantics are
    assumed and `assumed` says so.
    """

    release: str | None
    version: Version | None
    distro: str | None                     # "debian" or None
    assumed: list[str] = field(default_factory=list)

    # -- where printed migratetypes come from ------------------------------------
    pcp_caches_migratetype: bool = True    # < 6.10: page->index holds the pcp type
    drain_prints: str = "cached"           # "cached" (unless zone has an isolated block) | "live" | "cached-always" (< 3.18)
    zone_locked_prints: str = "freelist"   # "freelist" (may differ from block) | "block"
    # -- event formats -----------------------------------------------------------
    cma_finish_has_errorno: bool = False   # >= 6.2
    has_contig_migrate_range_info: bool = False  # >= 6.9
    free_batched_prints_order0: bool = True      # always: the format hard-codes order=0
    free_batched_may_be_high_order: bool = False  # >= 6.10 free_unref_folios batches folios
    gigantic_free_single_event: bool = False     # 6.12: one order-N free; 6.1: N x order-0
    # -- untraced retype mechanisms (without the kprobe) ---------------------------
    merge_retypes_buddy: bool = False      # >= 6.10 __free_one_page retypes the merged buddy block
    merge_retypes_first_block_only: bool = False  # 6.10 .. 6.12.64 (fixed 6.12.65)
    extfrag_claim_steal_split: bool = False  # mainline 6.15, stable 6.12.29
    extfrag_pfn_is_fallback_buddy: bool = True  # 6.1: page = the buddy found; >= 6.10: returned page
    # -- known bugs ----------------------------------------------------------------
    cma_wrong_buddy_list: bool = False     # 6.0 .. 6.1.56 (and mainline < 6.6)
    thp_single_pcp_list: bool = False      # 5.19? .. 6.1.96 / mainline < 6.10
    # -- pcp ----------------------------------------------------------------------
    pcp_thp_order: bool = True             # pcp_allowed_order() includes the THP order

    @property
    def live_drain(self) -> bool:
        return self.drain_prints == "live"

    def describe(self) -> str:
        v = ".".join(map(str, self.version)) if self.version else "unknown"
        return f"{self.release or '?'} (upstream {v}{', ' + self.distro if self.distro else ''})"


_REL_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_DEBIAN_RE = re.compile(r"Debian (\d+)\.(\d+)\.(\d+)")


def parse_version(text: str | None) -> tuple[Version | None, str | None, str | None]:
    """(upstream version, distro, release) from a release string or a full `uname -a` line.

    "6.1.0-50-arm64" alone gives (6, 1, 0) with distro "debian"; with the rest of the
    uname line ("... Debian 6.1.176-1 ...") it gives the real (6, 1, 176).
    """
    if not text:
        return None, None, None
    text = text.strip()
    release = None
    toks = text.split()
    if len(toks) >= 3 and toks[0] == "Linux":
        release = toks[2]
    elif toks:
        release = toks[0]
    distro = None
    m = _DEBIAN_RE.search(text)
    if m:
        return (int(m[1]), int(m[2]), int(m[3])), "debian", release
    if release and ("deb" in release or re.search(r"-\d+-(arm64|amd64|686|cloud|rt)", release)):
        distro = "debian"
    m = _REL_RE.search(release or text)
    if not m:
        return None, distro, release
    return (int(m[1]), int(m[2]), int(m[3] or 0)), distro, release


def _stable_fixed(v: Version, mainline_fix: tuple[int, int], backports: dict[tuple[int, int], int]) -> bool:
    """True if version v has a fix merged in mainline `mainline_fix` or backported to a stable branch."""
    if v[:2] >= mainline_fix:
        return True
    sub = backports.get(v[:2])
    return sub is not None and v[2] >= sub


def behavior_for(release: str | None) -> KernelBehavior:
    """Semantics for a release string or a full `uname -a` line (None -> assume 6.1-like)."""
    v, distro, rel = parse_version(release)
    if v is None:
        return KernelBehavior(release=rel or release, version=None, distro=distro,
                              assumed=["kernel version unknown: assuming 6.1-like semantics "
                                       "(cached pcp migratetype on drain)"])
    assumed: list[str] = []
    if distro == "debian" and v[2] == 0 and "Debian" not in (release or ""):
        assumed.append(f"Debian release {rel} without `uname -v`: stable sublevel unknown, "
                       "assuming the .0 release (pass the full uname line to be exact)")
    hygiene = v >= (6, 10, 0)
    claim_split = _stable_fixed(v, (6, 15), {(6, 12): 29})
    # 7b086755fb8c "fix CMA and HIGHATOMIC landing on the wrong buddy list": bug since 6.0.
    # Only the 6.1.y backport is verified (notes 3.4/3.6); other stable branches count as unfixed.
    cma_bug = (6, 0, 0) <= v and not _stable_fixed(v, (6, 6), {(6, 1): 57})
    # "Separate THP PCP into movable and non-movable categories" fixes 5d0a661d808f (5.19).
    thp_bug = (5, 19, 0) <= v and not _stable_fixed(v, (6, 10), {(6, 1): 97})
    return KernelBehavior(
        release=rel, version=v, distro=distro, assumed=assumed,
        pcp_caches_migratetype=not hygiene,
        # 51bb1a4093cc (v3.18) re-reads the block type on drain while the zone has an isolated
        # block; before it (the 2012 CMA thread's kernels) the cached type is always printed.
        drain_prints="live" if hygiene else ("cached" if v >= (3, 18, 0) else "cached-always"),
        zone_locked_prints="block" if hygiene else "freelist",
        cma_finish_has_errorno=v >= (6, 2, 0),
        has_contig_migrate_range_info=v >= (6, 9, 0),
        free_batched_may_be_high_order=hygiene,
        # Observed: 6.1 frees 32 MiB pages as 8192 order-0 events, 6.12 as one order-13 event.
        # The change (gigantic hugetlb folios allocated with __GFP_COMP, so free_contig_range()
        # puts the folio whole) is believed to be 6.12-rc1 - not verified, hence >= 6.12.
        gigantic_free_single_event=v >= (6, 12, 0),
        merge_retypes_buddy=hygiene,
        merge_retypes_first_block_only=hygiene and not _stable_fixed(v, (6, 19), {(6, 12): 65}),
        extfrag_claim_steal_split=claim_split,
        extfrag_pfn_is_fallback_buddy=not hygiene,
        cma_wrong_buddy_list=cma_bug,
        thp_single_pcp_list=thp_bug,
    )
