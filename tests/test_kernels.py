"""The version-semantics table: release parsing (incl. Debian's hidden stable version) and flags."""
from __future__ import annotations

import pytest

from analyzer.kernels import CMA, ISOLATE, MIGRATETYPE_NAMES, behavior_for, mt_name, parse_version

DEB61 = "Linux (none) 6.1.0-50-arm64 #1 SMP Debian 6.1.176-1 (2026-07-02) aarch64 GNU/Linux"
DEB612 = "Linux (none) 6.12.117+deb13-arm64 #1 SMP Debian 6.12.117-1 (2026-11-12) aarch64 GNU/Linux"


@pytest.mark.parametrize("text,version,distro,release", [
    (DEB61, (6, 1, 176), "debian", "6.1.0-50-arm64"),
    ("6.1.0-50-arm64", (6, 1, 0), "debian", "6.1.0-50-arm64"),
    ("6.1.0-50-arm64 Debian 6.1.176-1", (6, 1, 176), "debian", "6.1.0-50-arm64"),
    (DEB612, (6, 12, 117), "debian", "6.12.117+deb13-arm64"),
    ("6.12.117+deb13-arm64", (6, 12, 117), "debian", "6.12.117+deb13-arm64"),
    ("Linux (none) 6.1.192 x86_64", (6, 1, 192), None, "6.1.192"),
    ("6.10-rc3", (6, 10, 0), None, "6.10-rc3"),
    ("5.15.0-91-generic", (5, 15, 0), None, "5.15.0-91-generic"),
])
def test_parse_version(text, version, distro, release):
    assert parse_version(text) == (version, distro, release)


def test_unknown_release_assumes_61_semantics_and_says_so():
    for r in (None, "", "garbage"):
        k = behavior_for(r)
        assert k.version is None and k.drain_prints == "cached" and k.assumed


def test_debian_61_without_uname_v_warns():
    assert any("sublevel" in a for a in behavior_for("6.1.0-50-arm64").assumed)
    assert not behavior_for(DEB61).assumed


def test_61_vs_612_semantics():
    a, b = behavior_for(DEB61), behavior_for(DEB612)
    assert (a.drain_prints, b.drain_prints) == ("cached", "live")
    assert (a.zone_locked_prints, b.zone_locked_prints) == ("freelist", "block")
    assert a.pcp_caches_migratetype and not b.pcp_caches_migratetype
    assert not a.cma_finish_has_errorno and b.cma_finish_has_errorno
    assert not a.has_contig_migrate_range_info and b.has_contig_migrate_range_info
    assert not a.gigantic_free_single_event and b.gigantic_free_single_event
    assert not a.merge_retypes_buddy and b.merge_retypes_buddy
    assert a.free_batched_prints_order0 and b.free_batched_prints_order0
    assert b.extfrag_claim_steal_split            # Debian 6.12.29+ backport
    assert not b.merge_retypes_first_block_only   # fixed in 6.12.65
    assert not a.live_drain and b.live_drain


@pytest.mark.parametrize("rel,cma_bug,thp_bug", [
    ("6.1.0", True, True),            # mainline 6.1: both bugs
    ("6.1.56", True, True),
    ("6.1.57", False, True),          # CMA wrong-buddy fix backported
    ("6.1.96", False, True),
    ("6.1.97", False, False),         # THP pcp split backported
    ("6.1.0-50-arm64 Debian 6.1.176-1", False, False),
    ("5.15.100", False, False),       # before the pcp spinlock rework / single THP list
    ("6.6.0", False, True),
    ("6.10.0", False, False),
])
def test_known_bug_ranges(rel, cma_bug, thp_bug):
    k = behavior_for(rel)
    assert (k.cma_wrong_buddy_list, k.thp_single_pcp_list) == (cma_bug, thp_bug)


@pytest.mark.parametrize("rel,split", [("6.12.28", False), ("6.12.29", True), ("6.14.0", False),
                                       ("6.15.0", True), ("6.1.176", False)])
def test_extfrag_claim_steal_split(rel, split):
    assert behavior_for(rel).extfrag_claim_steal_split is split


def test_merge_first_block_bug_window():
    assert behavior_for("6.12.64").merge_retypes_first_block_only
    assert not behavior_for("6.12.65").merge_retypes_first_block_only
    assert not behavior_for("6.9.0").merge_retypes_first_block_only


def test_errorno_and_contig_info_boundaries():
    assert not behavior_for("6.1.192").cma_finish_has_errorno and behavior_for("6.2.0").cma_finish_has_errorno
    assert not behavior_for("6.8.9").has_contig_migrate_range_info
    assert behavior_for("6.9.0").has_contig_migrate_range_info


def test_migratetype_names():
    assert MIGRATETYPE_NAMES[CMA] == "CMA" and mt_name(ISOLATE) == "Isolate" and mt_name(-1) == "unknown"


def test_drain_semantics_across_the_three_eras():
    """pre-3.18: cached always; 3.18..6.9: cached unless the zone has an isolated block; 6.10+: live."""
    from analyzer.kernels import behavior_for
    assert behavior_for("3.3.0").drain_prints == "cached-always"
    assert behavior_for("3.18.0").drain_prints == "cached"
    assert behavior_for("6.9.12").drain_prints == "cached"
    assert behavior_for("6.10.0").drain_prints == "live"
