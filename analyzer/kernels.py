"""The ONE table of kernel-version semantics mtaudit relies on.

Every "which kernel does what" question (what a drain's migratetype means, whether
cma_alloc_finish has errorno, which untraced retypes exist, which known bugs are
present) is answered here from the *upstream* version of the running kernel, so the
model, the detectors and the collector never compare version numbers themselves.
Each boundary names the kernel commit that moved it.

A release string describes what the kernel *should* do; a patched kernel may not.
`analyzer/model/behaviour.py` measures the drain and zone_locked print semantics from
the trace wherever the kprobe ground truth allows, and the analysis judges records by
what was observed (`KernelBehavior.with_observed`).

Debian releases such as "6.1.0-50-arm64" carry the real upstream version only in
`uname -v` ("#1 SMP Debian 6.1.176-1 (...)"), so `behavior_for()` accepts the full
`uname -a` line and prefers the version found there.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

# Migratetype numbering with CONFIG_CMA=y and CONFIG_MEMORY_ISOLATION=y (6.1 and 6.12).
UNMOVABLE, MOVABLE, RECLAIMABLE, HIGHATOMIC, CMA, ISOLATE = 0, 1, 2, 3, 4, 5
UNKNOWN_MT = -1
MIGRATETYPE_NAMES: dict[int, str] = {
    UNMOVABLE: "Unmovable", MOVABLE: "Movable", RECLAIMABLE: "Reclaimable",
    HIGHATOMIC: "HighAtomic", CMA: "CMA", ISOLATE: "Isolate", UNKNOWN_MT: "unknown",
}
MIGRATE_PCPTYPES = 3
# The names /proc/pagetypeinfo prints, in the kernel's enum order.  With CONFIG_CMA=n there is no
# MIGRATE_CMA and MIGRATE_ISOLATE is 4 (every Debian amd64 kernel from 6.12 through 7.1); mtaudit
# works in the numbering above ("canonical") and translates what a capture prints (`Numbering`).
NAMES_WITH_CMA = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate")
NAMES_WITHOUT_CMA = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "Isolate")
PAGE_ALLOC_COSTLY_ORDER = 3
MIGRATETYPE_MASK = 7
GFP_HIGH = 0x20          # ___GFP_HIGH, bit 5 in both 6.1 (#define) and 6.12 (enum bit)
# pageblock_order bounds accepted from users and capture files (one pair for the CLI and the
# capture reader; real kernels use 9..13: a pageblock is never larger than MAX_PAGE_ORDER).
PAGEBLOCK_ORDER_MIN, PAGEBLOCK_ORDER_MAX = 1, 20

# What a drain (mm_page_pcpu_drain) prints:
DRAIN_CACHED_ALWAYS = "cached-always"   # the pcp-cached type, even while a block of the zone is isolated
DRAIN_CACHED = "cached"                 # the cached type, the live block type while the zone has an isolated block
DRAIN_LIVE = "live"                     # always the live block type
DRAIN_MODES = (DRAIN_CACHED_ALWAYS, DRAIN_CACHED, DRAIN_LIVE)
# What mm_page_alloc_zone_locked prints:
ZL_FREELIST = "freelist"                # the freelist searched (may differ from the block)
ZL_BLOCK = "block"                      # the block type (freelists are kept hygienic)


def mt_name(mt: int) -> str:
    return MIGRATETYPE_NAMES.get(int(mt), f"mt{int(mt)}")


def canonical_mt(name: str) -> int | None:
    """The canonical number of a migratetype name as /proc/pagetypeinfo prints it (None: unknown)."""
    low = name.strip().lower()
    return next((k for k, v in MIGRATETYPE_NAMES.items() if k >= 0 and v.lower() == low), None)


@dataclass(frozen=True)
class Numbering:
    """How the traced kernel numbers its migratetypes, and where that was learned.

    Read from the capture (the "Number of blocks type" header of /proc/pagetypeinfo, else the
    kernel config's CONFIG_CMA), never from a constant alone: MIGRATE_ISOLATE is 5 with CMA and 4
    without.  `known` is False when neither source exists; the CMA=y numbering is then used and
    the analysis says so."""

    names: tuple[str, ...]
    source: str
    known: bool = True

    @property
    def has_cma(self) -> bool:
        return any(n.lower() == "cma" for n in self.names)

    @property
    def isolate(self) -> int:
        """The number the kernel prints for MIGRATE_ISOLATE."""
        return next((i for i, n in enumerate(self.names) if n.lower() == "isolate"), len(self.names))

    @property
    def identity(self) -> bool:
        return all(canonical_mt(n) == i for i, n in enumerate(self.names))

    def lut(self) -> list[int]:
        """kernel number -> canonical number (unknown names keep their number + 16)."""
        out = []
        for i, n in enumerate(self.names):
            c = canonical_mt(n)
            out.append(i + 16 if c is None else c)
        return out


def numbering_from(pagetypeinfo_names: list[str] | tuple[str, ...] | None, config_cma: str | None) -> Numbering:
    """The numbering of a capture: pagetypeinfo's column header wins, then CONFIG_CMA."""
    if pagetypeinfo_names:
        return Numbering(tuple(pagetypeinfo_names), "pagetypeinfo column header")
    if config_cma is not None and str(config_cma) in ("y", "m", "n"):
        cma = str(config_cma) in ("y", "m")
        return Numbering(NAMES_WITH_CMA if cma else NAMES_WITHOUT_CMA, f"kernel config CONFIG_CMA={config_cma}")
    return Numbering(NAMES_WITH_CMA, "unknown", known=False)


Version = tuple[int, int, int]


@dataclass(frozen=True)
class KernelBehavior:
    """What the traced kernel does, as far as mtaudit's model and detectors care.

    `version` is the upstream (kernel.org) version; None when it could not be
    determined, in which case the semantics of mainline 6.1.0 are assumed (the
    pessimistic cached-type era) and `assumed` says so.
    """

    release: str | None
    version: Version | None
    distro: str | None                     # "debian" or None
    assumed: list[str] = field(default_factory=list)

    # -- where printed migratetypes come from ------------------------------------
    drain_prints: str = DRAIN_CACHED       # one of DRAIN_MODES
    zone_locked_prints: str = ZL_FREELIST  # ZL_FREELIST | ZL_BLOCK
    # -- event formats -----------------------------------------------------------
    cma_finish_has_errorno: bool = False
    # -- untraced retype mechanisms (without the kprobe) ---------------------------
    merge_retypes_buddy: bool = False      # __free_one_page retypes the merged buddy's block
    # -- pcp ----------------------------------------------------------------------
    pcp_thp_order: bool = False            # pcp lists hold pageblock-order (THP) pages
    # -- known bugs ----------------------------------------------------------------
    cma_wrong_buddy_list: bool = False     # pcp-trylock failure frees CMA pages as MOVABLE
    thp_single_pcp_list: bool = False      # one THP pcp list shared by all migratetypes
    # -- 6.15 .. 7.3 ---------------------------------------------------------------
    probe_scheme: str = "mask"             # analyzer/probes.py: "mask" (<= 6.16) | "isolate-bit"
    isolate_bit: bool = False              # isolation is a bit beside the preserved type
    contig_range_info: bool = True         # kmem:mm_alloc_contig_migrate_range_info exists
    cma_start_counts: bool = False         # cma_alloc_start: request/available/total_count
    cma_fail_pfn0: bool = False            # a failed cma_alloc_finish reports pfn 0
    # -- where the flags above came from -------------------------------------------
    observed: tuple[str, ...] = ()         # flags replaced by what the trace showed

    @property
    def live_drain(self) -> bool:
        return self.drain_prints == DRAIN_LIVE

    @property
    def drain_rereads_when_isolated(self) -> bool:
        """51bb1a4093cc: free_pcppages_bulk() re-reads the block type while the zone has an
        isolated pageblock (or always, on live-type kernels)."""
        return self.drain_prints != DRAIN_CACHED_ALWAYS

    def with_observed(self, drain: str | None = None, zone_locked: str | None = None) -> "KernelBehavior":
        """This behaviour with the print semantics the trace showed in place of the table's."""
        changes: dict = {}
        seen: list[str] = list(self.observed)
        if drain is not None and drain != self.drain_prints:
            changes["drain_prints"] = drain
            seen.append("drain_prints")
        if zone_locked is not None and zone_locked != self.zone_locked_prints:
            changes["zone_locked_prints"] = zone_locked
            seen.append("zone_locked_prints")
        if not changes:
            return self
        return replace(self, observed=tuple(seen), **changes)

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


# -- the boundaries, each with the commit that moved it ----------------------------------
# 51bb1a4093cc "mm/page_alloc: add freepage on isolate pageblock to correct buddy list"
# (v3.18): free_pcppages_bulk() re-reads the pageblock type while the zone has an isolated
# block ("This patch also correct migratetype of the tracepoint output").
DRAIN_REREAD_SINCE = (3, 18, 0)
# "mm: page_alloc: remove pcppage migratetype caching" (Johannes Weiner, v6.10, the
# "freelist migratetype hygiene" series): no pcp type cache; drains and zone_locked print
# the block type, and "mm: page_alloc: fix up block types when merging compatible blocks"
# (same series) lets __free_one_page() retype a merged buddy's block.
HYGIENE_SINCE = (6, 10, 0)
# "cma:tracing: Print alloc result in trace_cma_alloc_finish" (Wenchao Hao, merged after 6.1):
# cma_alloc_finish gains `errorno`.
CMA_ERRORNO_SINCE = (6, 2, 0)
# 44042b449872 "mm/page_alloc: allow high-order pages to be stored on the per-cpu lists"
# (v5.13): pageblock-order (THP) pages go through the pcp lists.
PCP_THP_SINCE = (5, 13, 0)
# 5d0a661d808f "mm/page_alloc: use only one PCP list for THP-sized allocations" (v6.0) made
# the THP pcp list shared by every migratetype; bf14ed81f571 "mm/page_alloc: Separate THP
# PCP into movable and non-movable categories" (v6.10, stable 6.1.97) split it again.
THP_SINGLE_LIST_SINCE = (6, 0, 0)
THP_SPLIT_FIX = ((6, 10), {(6, 1): 97})
# 7b086755fb8c "mm: page_alloc: fix CMA and HIGHATOMIC landing on the wrong buddy list"
# (v6.6, stable 6.1.57) fixes a bug from 4b23a68f9536 "mm/page_alloc: protect PCP lists with
# a spinlock" (v6.0).  Other stable branches are not checked and count as unfixed.
CMA_WRONG_LIST_SINCE = (6, 0, 0)
CMA_WRONG_LIST_FIX = ((6, 6), {(6, 1): 57})
# Does the `kprobe_event=` boot parameter give the probe a tracefs directory (and so a format
# in trace.dat)?  Measured by booting them, not from a commit: Debian 6.1.192 arm64 no (the
# event records, but events/<group>/ is never created, so trace-cmd cannot decode it);
# Debian 6.12.118 arm64 yes.  (since (major, minor), works) rows, newest first; unknown
# versions: create the probe in /init.
BOOT_KPROBE_DIR = (((6, 12), True), ((6, 1), False))

# -- 6.16 .. 7.3 (facts checked in Debian's compiled 6.12.117, 6.16.12, 6.17.13, 6.18.15,
#    6.19.14, 7.0.13, 7.1.13, 7.2.12/7.2.13 and 7.3.4 kernels, amd64 and arm64) -----------------
# "mm/page_isolation: make page isolation a standalone bit" (Zi Yan, series "Make MIGRATE_ISOLATE
# a standalone bit", v6.17; lore 20250530162227.715551-3-ziy@nvidia.com): isolation is pageblock
# bit 4 (PB_migrate_isolate) beside the preserved 3-bit type; set_pfnblock_flags_mask() is gone,
# migratetype writes go through the static __set_pfnblock_flags_mask() (GCC: a .constprop clone
# taking (pfn, flags)), isolation through set_pfnblock_bit()/clear_pfnblock_bit().  The same
# series ("mm/page_isolation: remove migratetype parameter from more functions") drops the
# migratetype from alloc_contig_range() and with it kmem:mm_alloc_contig_migrate_range_info.
# Debian 6.16.12 still has the old writer; 6.17.13 the new one.  analyzer/probes.py holds the probes.
ISOLATE_BIT_SINCE = (6, 17, 0)
CONTIG_RANGE_INFO_GONE = (6, 17, 0)
# Multi-range CMA ("mm/cma: support multiple contiguous ranges, if requested", Frank van der
# Linden) and the cma_alloc_start rework: cma_alloc_start prints `request_count available_count
# total_count` (Debian 6.17.13 still `count`, 6.18.15 the new fields); the boot line loses its
# base ("cma: Reserved 1024 MiB in 1 range"), and a failed cma_alloc_finish reports pfn 0
# (both seen on booted Debian 6.18.15 arm64; 7.2 source: `page ? page_to_pfn(page) : 0`).
CMA_START_COUNTS_SINCE = (6, 18, 0)
CMA_FAIL_PFN0_SINCE = (6, 18, 0)
# "mm: page_alloc: trace type pollution from compaction capturing" (Johannes Weiner, with
# "mm: page_alloc: defrag_mode", v6.15): compaction_capture() emits mm_page_alloc_extfrag from
# __free_one_page() without any ownership change (absent in Debian 6.12.117, present in 6.16.12).
# No flag: the model retypes a block from an extfrag only on change_ownership=1, which a capture
# record never has (it fires because the block's type differs), and S2 only *excuses* with them.
EXTFRAG_FROM_CAPTURE_SINCE = (6, 15, 0)
# "mm/page_alloc: change all pageblocks migrate type on coalescing" (Alexander Gordeev, v6.19;
# stable 6.12.65 = Debian 6.12.69-1): __free_one_page() retypes every pageblock of a merged
# >= pageblock_order buddy (change_pageblock_range) while *freeing*.  6.13-6.18 stable branches
# are not checked.  No flag: since HYGIENE_SINCE every free already puts a TOUCH hazard on every
# other block of its MAX_ORDER buddy group (model/infer.py hazard_rows), which covers these writes.
MERGE_RETYPES_ALL_FIX = ((6, 19), {(6, 12): 65})
# Batched frees of contiguous ranges (free_prepared_contig_range(), Debian 7.2/7.3, not 7.1):
# cma_release()/free_contig_range() prepare each page (one mm_page_free order=0) and hand
# naturally aligned chunks to the buddy/pcp with FPI_PREPARED, so a later mm_page_pcpu_drain can
# carry an order that no mm_page_free ever showed.  No flag: pcp stays pair an entry and an exit
# of the same pfn *and* order (model/pcp.py), so such a drain starts no stay and judges nothing.
BATCHED_CONTIG_FREE_SINCE = (7, 2, 0)

# What behavior_for(None) assumes: the era with the most mechanisms to check.
ASSUMED_VERSION: Version = (6, 1, 0)


def boot_kprobe_creates_dir(version: tuple[int, ...] | None) -> bool:
    """True when `kprobe_event=` on the command line is known to create the tracefs directory."""
    if version is None:
        return False
    for since, ok in BOOT_KPROBE_DIR:
        if tuple(version[:2]) >= since:
            return ok
    return False


def _for_version(v: Version) -> dict:
    hygiene = v >= HYGIENE_SINCE
    return dict(
        drain_prints=DRAIN_LIVE if hygiene else (DRAIN_CACHED if v >= DRAIN_REREAD_SINCE else DRAIN_CACHED_ALWAYS),
        zone_locked_prints=ZL_BLOCK if hygiene else ZL_FREELIST,
        cma_finish_has_errorno=v >= CMA_ERRORNO_SINCE,
        merge_retypes_buddy=hygiene,
        pcp_thp_order=v >= PCP_THP_SINCE,
        cma_wrong_buddy_list=v >= CMA_WRONG_LIST_SINCE and not _stable_fixed(v, *CMA_WRONG_LIST_FIX),
        thp_single_pcp_list=v >= THP_SINGLE_LIST_SINCE and not _stable_fixed(v, *THP_SPLIT_FIX),
        probe_scheme="isolate-bit" if v >= ISOLATE_BIT_SINCE else "mask",
        isolate_bit=v >= ISOLATE_BIT_SINCE,
        contig_range_info=v < CONTIG_RANGE_INFO_GONE,
        cma_start_counts=v >= CMA_START_COUNTS_SINCE,
        cma_fail_pfn0=v >= CMA_FAIL_PFN0_SINCE,
    )


def behavior_for(release: str | None) -> KernelBehavior:
    """Semantics for a release string or a full `uname -a` line (None -> those of 6.1.0, said so)."""
    v, distro, rel = parse_version(release)
    if v is None:
        return KernelBehavior(release=rel or release, version=None, distro=distro,
                              assumed=["kernel version unknown: assuming the semantics of 6.1.0 "
                                       "(cached pcp migratetype on drain)"],
                              **_for_version(ASSUMED_VERSION))
    assumed: list[str] = []
    if distro == "debian" and v[2] == 0 and "Debian" not in (release or ""):
        assumed.append(f"Debian release {rel} without `uname -v`: stable sublevel unknown, "
                       "assuming the .0 release (pass the full uname line to be exact)")
    return KernelBehavior(release=rel, version=v, distro=distro, assumed=assumed, **_for_version(v))
