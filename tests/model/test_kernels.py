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
    assert not a.cma_finish_has_errorno and b.cma_finish_has_errorno
    assert not a.merge_retypes_buddy and b.merge_retypes_buddy
    assert a.pcp_thp_order and b.pcp_thp_order
    assert not a.live_drain and b.live_drain
    assert a.drain_rereads_when_isolated and b.drain_rereads_when_isolated


@pytest.mark.parametrize("rel,cma_bug,thp_bug", [
    ("6.1.0", True, True),            # mainline 6.1: both bugs
    ("6.1.56", True, True),
    ("6.1.57", False, True),          # CMA wrong-buddy fix backported
    ("6.1.96", False, True),
    ("6.1.97", False, False),         # THP pcp split backported
    ("6.1.0-50-arm64 Debian 6.1.176-1", False, False),
    ("5.15.100", False, False),       # before 5d0a661d808f (one THP list) and 4b23a68f9536
    ("5.19.17", False, False),
    ("6.0.0", True, True),            # both came with the 6.0 pcp rework
    ("6.6.0", False, True),
    ("6.10.0", False, False),
])
def test_known_bug_ranges(rel, cma_bug, thp_bug):
    k = behavior_for(rel)
    assert (k.cma_wrong_buddy_list, k.thp_single_pcp_list) == (cma_bug, thp_bug)


def test_pcp_thp_order_since_513():
    assert not behavior_for("5.12.19").pcp_thp_order and behavior_for("5.13.0").pcp_thp_order


def test_errorno_boundary():
    assert not behavior_for("6.1.192").cma_finish_has_errorno and behavior_for("6.2.0").cma_finish_has_errorno


def test_unknown_version_is_exactly_61_0_plus_the_assumption():
    from dataclasses import fields
    a, b = behavior_for(None), behavior_for("6.1.0")
    for f in fields(a):
        if f.name not in ("release", "version", "distro", "assumed"):
            assert getattr(a, f.name) == getattr(b, f.name), f.name


def test_every_flag_is_read_somewhere_outside_the_table():
    """A flag nobody reads is a promise nobody keeps: each one must be used by the analyzer."""
    import pathlib
    import re
    from dataclasses import fields
    root = pathlib.Path(__file__).resolve().parents[2] / "analyzer"
    text = "\n".join(p.read_text() for p in root.rglob("*.py") if p.name != "kernels.py")
    for f in fields(behavior_for("6.1.0")):
        if f.name in ("release", "version", "distro", "assumed", "observed"):
            continue
        assert re.search(rf"\b{f.name}\b", text), f"{f.name} is never read"


def test_with_observed_replaces_and_records():
    k = behavior_for(DEB61)
    assert k.with_observed(drain="cached") is k
    o = k.with_observed(drain="cached-always")
    assert o.drain_prints == "cached-always" and not o.drain_rereads_when_isolated
    assert o.observed == ("drain_prints",) and k.drain_prints == "cached"


def test_boot_kprobe_table():
    from analyzer.kernels import boot_kprobe_creates_dir
    assert boot_kprobe_creates_dir((6, 12, 118)) and not boot_kprobe_creates_dir((6, 1, 192))
    assert not boot_kprobe_creates_dir(None) and not boot_kprobe_creates_dir((5, 10, 0))


def test_migratetype_names():
    assert MIGRATETYPE_NAMES[CMA] == "CMA" and mt_name(ISOLATE) == "Isolate" and mt_name(-1) == "unknown"


def test_drain_semantics_across_the_three_eras():
    """pre-3.18: cached always; 3.18..6.9: cached unless the zone has an isolated block; 6.10+: live."""
    from analyzer.kernels import behavior_for
    assert behavior_for("3.3.0").drain_prints == "cached-always"
    assert behavior_for("3.18.0").drain_prints == "cached"
    assert behavior_for("6.9.12").drain_prints == "cached"
    assert behavior_for("6.10.0").drain_prints == "live"


# -- 6.16 .. 7.3 ---------------------------------------------------------------------------
@pytest.mark.parametrize("uname, scheme, contig_info, start_counts, fail_pfn0", [
    ("6.16.12+deb13-arm64 #1 SMP Debian 6.16.12-1~bpo13+1", "mask", True, False, False),
    ("6.17.13+deb13-arm64 #1 SMP Debian 6.17.13-1~bpo13+1", "isolate-bit", False, False, False),
    ("6.18.15+deb13-arm64 #1 SMP Debian 6.18.15-1~bpo13+1", "isolate-bit", False, True, True),
    ("7.2.13+deb14-amd64 #1 SMP Debian 7.2.13-1", "isolate-bit", False, True, True),
    ("7.3.4+deb13-arm64 #1 SMP Debian 7.3.4-1~bpo13+1", "isolate-bit", False, True, True),
])
def test_modern_boundaries(uname, scheme, contig_info, start_counts, fail_pfn0):
    k = behavior_for(uname)
    assert (k.probe_scheme, k.isolate_bit) == (scheme, scheme == "isolate-bit")
    assert k.contig_range_info == contig_info
    assert k.cma_start_counts == start_counts and k.cma_fail_pfn0 == fail_pfn0
    assert k.live_drain and k.merge_retypes_buddy      # the hygiene era continues


def test_probe_scheme_table_and_probe_module_agree():
    """The version boundary in the table and the symbol rule in analyzer/probes.py name the same schemes."""
    from analyzer import probes
    assert {behavior_for("6.12.0").probe_scheme, behavior_for("6.17.0").probe_scheme} == \
        {probes.SCHEME_MASK, probes.SCHEME_ISOLATE_BIT}
