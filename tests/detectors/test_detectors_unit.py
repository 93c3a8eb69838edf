"""Detectors S1-S5 on hand-written event stories: one positive and one negative case each."""
from __future__ import annotations

import numpy as np

from support.synth_model import K61, K61_MAINLINE, K612, Story
from analyzer import kernels
from analyzer.detectors import (ALL, run_all, s1_pcp_drain, s2_freelist, s3_cma_escape, s4_thp_pcp,
                                s5_isolation_leak)
from analyzer.detectors._common import FINDING_COLUMNS

UNMOV, MOV, RECL, CMA, ISO = (kernels.UNMOVABLE, kernels.MOVABLE, kernels.RECLAIMABLE, kernels.CMA,
                              kernels.ISOLATE)


def _ids(df):
    return list(df["detector"].astype(str))


def test_registry_modules_have_contract_constants():
    for mod in ALL:
        for attr in ("id", "meaning", "kernels", "severity"):
            assert isinstance(getattr(mod.INFO, attr), str) and getattr(mod.INFO, attr)
        assert callable(mod.applies) and callable(mod.detect)
    assert [m.INFO.id for m in ALL] == ["S1", "S2", "S3", "S4", "S5", "S6", "A1"]


# -- S1 ------------------------------------------------------------------------------
def test_s1a_freed_then_retyped_on_pcp():
    s = Story()
    p = s.pfn(2, 7)
    s.free(p, cpu=1)                 # cached MOVABLE (block type at free)
    s.retype(2, UNMOV)               # e.g. highatomic/steal seen by the kprobe
    d = s.drain(p, MOV, cpu=1)       # 6.1 prints the stale cached type
    r = s1_pcp_drain.detect(s.build(), K61)
    f = r.findings
    assert _ids(f) == ["S1a"]
    row = f.iloc[0]
    assert int(row["seq"]) == d and int(row["pfn"]) == p and int(row["block"]) == 2
    assert int(row["printed_mt"]) == MOV and int(row["block_mt"]) == UNMOV
    assert "freed to pcp cpu1" in row["explanation"] and "S1a" in row["explanation"]
    assert list(f.columns) == FINDING_COLUMNS


def test_s1b_refilled_from_polluted_freelist():
    s = Story()
    p = s.pfn(3, 0)
    s.zone_locked(p, UNMOV, cpu=0)   # refill from the UNMOVABLE list, block is MOVABLE
    s.drain(p, UNMOV, cpu=0)
    r = s1_pcp_drain.detect(s.build(), K61)
    f = r.findings
    assert _ids(f) == ["S1b"]
    assert "polluted" in f.iloc[0]["explanation"]


def test_s1_negative_matching_drain_and_isolation_window():
    s = Story()
    p, q = s.pfn(1, 0), s.pfn(4, 0)
    s.free(p)
    s.drain(p, MOV)                  # same type as block: fine
    s.free(q)
    s.retype(4, UNMOV)
    s.isolate(6, 6)                  # some block of the zone isolated: 6.1 prints the live type
    s.drain(q, UNMOV)
    s.unisolate()
    r = s1_pcp_drain.detect(s.build(), K61)
    f = r.findings
    assert len(f) == 0
    assert r.checked == 2


def test_s1_on_live_type_kernel_is_model_warning_not_bug():
    s = Story()
    p = s.pfn(2, 0)
    s.free(p)
    s.drain(p, UNMOV)                # 6.12 prints the live type: the model must be wrong
    r = s1_pcp_drain.detect(s.build(), K612)
    f = r.findings
    assert _ids(f) == ["MW"] and f.iloc[0]["severity"] == "info"
    findings, table = run_all(s.build(), K612)
    assert int(table.set_index("id").loc["S1", "count"]) == 0
    assert int(table.set_index("id").loc["MW", "count"]) == 1


def test_s1_skips_unknown_block_type():
    s = Story(initial={2: -1})
    p = s.pfn(2, 0)
    s.free(p)
    s.drain(p, UNMOV)
    r = s1_pcp_drain.detect(s.build(), K61)
    f = r.findings
    assert len(f) == 0 and r.skipped_unknown == 1


# -- S2 ------------------------------------------------------------------------------
def test_s2_polluted_freelist_allocation():
    s = Story()
    p = s.pfn(5, 8)
    z = s.zone_locked(p, UNMOV, cpu=1, refill=False)
    s.alloc(p, UNMOV, cpu=1)
    r = s2_freelist.detect(s.build(), K61)
    f = r.findings
    assert _ids(f) == ["S2"] and int(f.iloc[0]["seq"]) == z
    assert int(f.iloc[0]["block_mt"]) == MOV


def test_s2_negative_fallback_in_same_allocation_and_clean_list():
    s = Story()
    s.alloc(s.pfn(0, 0), MOV, cpu=1)                # ends a previous allocation on cpu1
    s.extfrag(s.pfn(5, 0), UNMOV, MOV, 0, cpu=1)    # 6.1 moved block 5's pages to UNMOVABLE
    p = s.pfn(5, 16)
    s.zone_locked(p, UNMOV, cpu=1, refill=False)    # retry from the start type's list
    s.alloc(p, UNMOV, cpu=1)
    s.zone_locked(s.pfn(6, 0), MOV, cpu=0, refill=False)
    r = s2_freelist.detect(s.build(), K61)
    f = r.findings
    assert len(f) == 0 and r.notes["excused_by_fallback"] == 1


def test_s2_fallback_in_an_earlier_allocation_does_not_excuse():
    s = Story()
    s.extfrag(s.pfn(5, 0), UNMOV, MOV, 0, cpu=1)
    s.zone_locked(s.pfn(5, 0), UNMOV, cpu=1, refill=False)
    s.alloc(s.pfn(5, 0), UNMOV, cpu=1)
    s.zone_locked(s.pfn(5, 4), UNMOV, cpu=1, refill=False)   # next allocation: polluted list
    s.alloc(s.pfn(5, 4), UNMOV, cpu=1)
    r = s2_freelist.detect(s.build(), K61)
    f = r.findings
    assert [int(x) for x in f["pfn"]] == [s.pfn(5, 4)]


# -- S3 ------------------------------------------------------------------------------
def test_s3_cma_page_on_movable_freelist():
    s = Story(cma_blocks=(6, 7))
    p = s.pfn(6, 3)
    s.free(p, cpu=0)
    s.drain(p, MOV)                          # CMA pfn drained to the MOVABLE list
    r = s3_cma_escape.detect(s.build(), K61_MAINLINE)
    f = r.findings
    assert _ids(f) == ["S3"] and f.iloc[0]["severity"] == "critical"
    assert "CMA area" in f.iloc[0]["explanation"]


def test_s3_negative_cma_lists_only():
    s = Story(cma_blocks=(6, 7))
    p = s.pfn(6, 3)
    s.free(p)
    s.drain(p, CMA)
    s.zone_locked(s.pfn(7, 0), CMA, refill=False)   # __rmqueue_cma_fallback
    s.isolate(6, 7)
    s.drain(s.pfn(6, 9), ISO)
    s.unisolate()
    r = s3_cma_escape.detect(s.build(), K61)
    f = r.findings
    assert len(f) == 0


def test_s3_cma_block_lost_by_restore_to_movable():
    s = Story(cma_blocks=(6,))
    s.retype(6, ISO)
    s.retype(6, MOV)                          # undo_isolate with the wrong caller type
    r = s3_cma_escape.detect(s.build(), K61)
    f = r.findings
    assert _ids(f) == ["S3"] and f.iloc[0]["event"] == "cma-block-lost"
    assert int(f.iloc[0]["block"]) == 6 and "lost from the CMA pool" in f.iloc[0]["explanation"]


# -- S4 ------------------------------------------------------------------------------
def test_s4_unmovable_thp_from_movable_block_via_pcp():
    s = Story(cma_blocks=(6,))
    p = s.pfn(6)
    s.free(p, order=9)                        # movable THP freed to the single THP pcp list
    s.alloc(p, UNMOV, order=9)                # handed to an unmovable request
    m = s.build()
    assert s4_thp_pcp.applies(K61_MAINLINE)
    r = s4_thp_pcp.detect(m, K61_MAINLINE)
    f = r.findings
    assert _ids(f) == ["S4"] and int(f.iloc[0]["block_mt"]) == CMA


def test_s4_negative_buddy_allocation_and_fixed_kernels():
    s = Story()
    p = s.pfn(3)
    s.zone_locked(p, UNMOV, order=9, refill=False)
    s.alloc(p, UNMOV, order=9)                # came from the buddy: zone_locked in this allocation
    s.alloc(s.pfn(4), MOV, order=9)           # movable request: fine
    assert len(s4_thp_pcp.detect(s.build(), K61_MAINLINE).findings) == 0
    assert not s4_thp_pcp.applies(K61) and not s4_thp_pcp.applies(K612)   # 6.1.97+ / 6.10+


# -- S5 ------------------------------------------------------------------------------
def test_s5_allocation_inside_isolated_block():
    s = Story(cma_blocks=(6, 7))
    s.isolate(6, 7)
    a = s.alloc(s.pfn(7, 40), MOV, cpu=1)
    s.unisolate()
    r = s5_isolation_leak.detect(s.build(), K612)
    f = r.findings
    assert _ids(f) == ["S5"] and int(f.iloc[0]["seq"]) == a
    assert "cma_alloc(hugetlb0)" in f.iloc[0]["explanation"]


def test_s5_negative_outside_window_or_range():
    s = Story(cma_blocks=(6, 7))
    s.alloc(s.pfn(7, 40), MOV)               # before
    s.isolate(6, 6)
    s.alloc(s.pfn(7, 40), MOV)               # other block
    s.unisolate()
    s.alloc(s.pfn(6, 0), MOV)                # after
    assert len(s5_isolation_leak.detect(s.build(), K61).findings) == 0


def test_run_all_table_and_sorted_findings():
    s = Story(cma_blocks=(6,))
    s.free(s.pfn(6, 1))
    s.drain(s.pfn(6, 1), MOV)                # S1 (block CMA) + S3
    findings, table = run_all(s.build(), K61)
    assert sorted(_ids(findings)) == ["S1a", "S3"]
    assert list(findings["seq"]) == sorted(findings["seq"])
    t = table.set_index("id")
    assert bool(t.loc["S4", "applies"]) is False and int(t.loc["S3", "count"]) == 1
    assert all(isinstance(e, str) and e for e in findings["explanation"])
    assert np.all(findings["pfn"].to_numpy(dtype=np.uint64) == s.pfn(6, 1))


# -- consistency ----------------------------------------------------------------------
def _pti(counts):
    from analyzer.capture import PageTypeInfo
    return PageTypeInfo(path="synthetic", pageblock_order=9, pages_per_block=512,
                        type_names=["Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate"],
                        blocks={(0, "DMA"): counts}, free={})


def test_consistency_pass_and_fail():
    from analyzer.model import consistency
    s = Story(nblocks=8, cma_blocks=(6, 7))
    s.retype(2, UNMOV)
    m = s.build()
    s.meta.pagetypeinfo_end = _pti({0: 1, 1: 5, 2: 0, 3: 0, 4: 2, 5: 0})
    cr = consistency.check(m, s.meta)
    c = cr.table
    assert cr.passed is True and cr.exact is True
    row = c[(c["zone"] == "DMA") & (c["type"] == "CMA")].iloc[0]
    assert row["reconstructed"] == 2 and row["pagetypeinfo"] == 2
    s.meta.pagetypeinfo_end = _pti({0: 0, 1: 6, 2: 0, 3: 0, 4: 2, 5: 0})   # kernel says block 2 is MOVABLE
    cr = consistency.check(m, s.meta)
    c = cr.table
    assert cr.passed is False
    assert list(c[c["diff"] != 0]["type"]) == ["Unmovable", "Movable"]


def test_consistency_unknown_blocks_can_only_fill_a_shortfall():
    from analyzer.model import consistency
    s = Story(nblocks=4, initial={3: -1})
    m = s.build()
    s.meta.pagetypeinfo_end = _pti({0: 1, 1: 3})
    cr = consistency.check(m, s.meta)
    assert cr.passed is True and cr.exact is False and cr.unknown_blocks == 1
    s.meta.pagetypeinfo_end = _pti({0: 0, 1: 2, 4: 2})
    assert consistency.check(m, s.meta).passed is False


def test_consistency_boot_seeded_blocks_are_unverified_but_evidence_must_fit():
    from analyzer.model import consistency
    s = Story(nblocks=4, confidence=1)          # boot seed only inferred: retypes before tracing unseen
    s.retype(0, RECL)                           # evidenced by the kprobe
    m = s.build()
    s.meta.pagetypeinfo_end = _pti({0: 2, 1: 1, 2: 1})
    cr = consistency.check(m, s.meta)
    c = cr.table
    assert cr.passed is True and cr.exact is False and cr.unverified_blocks == 3
    s.meta.pagetypeinfo_end = _pti({0: 2, 1: 2, 2: 0})   # the kernel has no RECLAIMABLE block
    cr = consistency.check(m, s.meta)
    c = cr.table
    assert cr.passed is False
    assert int(c[c["type"] == "Reclaimable"]["evidenced"].iloc[0]) == 1


def test_unconfirmed_boot_seed_is_not_evidence_for_kernel_findings():
    s = Story(confidence=1)                  # every block only "inferred MOVABLE" from the boot seed
    p = s.pfn(3, 0)
    s.zone_locked(p, UNMOV, refill=False)    # block may have been retyped before tracing started
    s.alloc(p, UNMOV)
    s.retype(4, MOV)                         # the kprobe confirms block 4
    s.zone_locked(s.pfn(4, 0), UNMOV, refill=False)
    s.alloc(s.pfn(4, 0), UNMOV)
    r = s2_freelist.detect(s.build(), K61)
    f = r.findings
    assert [int(b) for b in f["block"]] == [4]
    assert r.notes["skipped_unverified_mismatch"] == 1


def test_s2_claim_path_extfrag_after_zone_locked_excuses():
    # 6.12 claim of a partial block: zone_locked from the start type's list, then extfrag
    s = Story()
    s.alloc(s.pfn(0, 0), MOV, cpu=0)
    p = s.pfn(5, 0)
    s.zone_locked(p, UNMOV, cpu=0, refill=False)
    s.extfrag(p, UNMOV, MOV, 1, cpu=0)
    s.alloc(p, UNMOV, cpu=0)
    r = s2_freelist.detect(s.build(), K612)
    f = r.findings
    assert len(f) == 0 and r.notes["excused_by_fallback"] == 1


# -- robustness: random stories -----------------------------------------------------------
from hypothesis import given, settings, strategies as hst  # noqa: E402

_op = hst.tuples(hst.sampled_from(["free", "alloc", "zl", "drain", "ext", "retype", "iso"]),
                 hst.integers(0, 7), hst.integers(0, 3), hst.integers(0, 5), hst.integers(0, 1),
                 hst.sampled_from([0, 1, 9]))


@settings(max_examples=60, deadline=None)
@given(hst.lists(_op, max_size=40), hst.sampled_from(["K61", "K612", "K61_MAINLINE"]))
def test_random_stories_keep_the_findings_contract(ops, kname):
    from support import synth_model as _synth_model
    kernel = getattr(_synth_model, kname)
    s = Story(cma_blocks=(6, 7))
    open_iso = False
    for kind, blk, off, mt, cpu, order in ops:
        p = s.pfn(blk, off * 8)
        if kind == "free":
            s.free(p, cpu=cpu, order=order)
        elif kind == "alloc":
            s.alloc(p, mt % 3, cpu=cpu, order=order)
        elif kind == "zl":
            s.zone_locked(p, mt % 5, cpu=cpu, order=min(order, 3))
        elif kind == "drain":
            s.drain(p, mt % 5, cpu=cpu, order=min(order, 3))
        elif kind == "ext":
            s.extfrag(p, mt % 3, (mt + 1) % 3, cpu, cpu=cpu)
        elif kind == "retype":
            s.retype(blk, mt)
        elif kind == "iso":
            if open_iso:
                s.unisolate()
            else:
                s.isolate(blk, blk)
            open_iso = not open_iso
    m = s.build()
    findings, table = run_all(m, kernel)
    assert list(findings.columns) == FINDING_COLUMNS
    assert list(findings["seq"]) == sorted(findings["seq"])
    assert set(findings["detector"].astype(str)) <= {"S1a", "S1b", "S2", "S3", "S4", "S5", "S6", "MW"}
    assert all(isinstance(e, str) and e for e in findings["explanation"])
    kf = findings[findings["detector"].astype(str) != "MW"]
    assert (kf["block_mt"].astype(int) >= 0).all()
    if kernel.drain_prints == "live":   # a live print is only the kernel's fault against the kprobe
        from analyzer.detectors import finding_tiers
        s1 = findings[findings["detector"].astype(str).isin(["S1a", "S1b"])]
        assert (finding_tiers(m, s1) == "probe").all()
    assert int(table["count"].sum()) == len(kf) + int((findings["detector"] == "MW").sum())
