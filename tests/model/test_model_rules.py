"""Every source/rule of the pageblock model on small synthetic traces."""
from __future__ import annotations

import numpy as np
import pytest

from analyzer.kernels import CMA, ISOLATE, MOVABLE, RECLAIMABLE, UNMOVABLE, behavior_for
from analyzer.model import SOURCES, build_model
from analyzer.model.synthetic import SyntheticTrace, synthetic_meta

PB = 512
Z0 = 0x40000                       # zone DMA: blocks 0x200..0x27f
CMA_BASE, CMA_COUNT = 0x48000, 0x1000   # blocks 0x240..0x247
K61, K612 = behavior_for("6.1.0-50-arm64 #1 SMP Debian 6.1.176-1"), behavior_for("6.12.117+deb13-arm64")


def meta(cma=True):
    return synthetic_meta(zones=[("DMA", Z0, 0x50000)], cma=[("reserved", CMA_BASE, CMA_COUNT)] if cma else [])


def blk(pfn: int) -> int:
    return pfn >> 9


def state(model, pfn, seq, use="model"):
    st = model.block_type_at(np.array([pfn]), np.array([seq]), use=use)
    return int(st.mt[0]), int(st.confidence[0]), SOURCES[st.source[0]], bool(st.isolated[0]), bool(st.zone_isolated[0])


def test_boot_default_and_cma_reservation():
    tr = SyntheticTrace()
    s = tr.add("mm_page_free", pfn=Z0, order=0)
    m = build_model(tr, meta(), K61)
    assert state(m, Z0, s) == (MOVABLE, 1, "boot", False, False)        # never "known": pre-trace steals
    assert state(m, CMA_BASE + 5, s) == (CMA, 2, "cma-reserve", False, False)
    b = m.blocks
    assert set(b["block"]) == set(range(0x200, 0x280))                  # whole zone, one interval each
    assert len(b) == 0x80
    assert (b["end_ts"] == m.trace_end_ts).all()
    assert not m.ground_truth and m.agreement is None


def test_without_cma_info_nothing_is_known():
    tr = SyntheticTrace()
    s = tr.add("mm_page_free", pfn=CMA_BASE, order=0)
    m = build_model(tr, meta(cma=False), K61)
    assert state(m, CMA_BASE, s)[:3] == (MOVABLE, 1, "boot")


def test_extfrag_claims_aligned_multi_block_range():
    tr = SyntheticTrace()
    a = tr.add("mm_page_alloc_extfrag", pfn=Z0 + 3 * PB, alloc_order=0, fallback_order=10,
               alloc_migratetype=UNMOVABLE, fallback_migratetype=MOVABLE, change_ownership=1)
    b = tr.add("mm_page_alloc_extfrag", pfn=Z0 + 8 * PB + 40, alloc_order=0, fallback_order=3,
               alloc_migratetype=RECLAIMABLE, fallback_migratetype=MOVABLE, change_ownership=1)
    c = tr.add("mm_page_alloc_extfrag", pfn=Z0 + 12 * PB, alloc_order=0, fallback_order=10,
               alloc_migratetype=UNMOVABLE, fallback_migratetype=MOVABLE, change_ownership=0)
    end = tr.add("mm_page_free", pfn=Z0, order=0)
    m = build_model(tr, meta(), K61)
    # order-10 buddy at block 3 -> aligned pair 2,3 (pfn aligned down to 2^10)
    assert state(m, Z0 + 2 * PB, a)[0] == MOVABLE                       # not yet: applies after seq a
    for k in (2, 3):
        assert state(m, Z0 + k * PB, a + 1)[:3] == (UNMOVABLE, 1, "extfrag")
    assert state(m, Z0 + 4 * PB, end)[0] == MOVABLE
    assert state(m, Z0 + 8 * PB, b + 1)[:3] == (RECLAIMABLE, 1, "extfrag")   # partial claim: one block
    assert state(m, Z0 + 9 * PB, end)[0] == MOVABLE
    assert state(m, Z0 + 12 * PB, end)[:3] == (MOVABLE, 1, "boot")           # no ownership change
    assert c < end


def test_extfrag_movable_claim_is_known():
    tr = SyntheticTrace()
    a = tr.add("mm_page_alloc_extfrag", pfn=Z0, alloc_order=0, fallback_order=9,
               alloc_migratetype=MOVABLE, fallback_migratetype=UNMOVABLE, change_ownership=1)
    m = build_model(tr, meta(), K61)
    assert state(m, Z0, a + 1)[:3] == (MOVABLE, 2, "extfrag")


def test_cma_isolation_windows_and_restore():
    tr = SyntheticTrace()
    s0 = tr.add("cma_alloc_start", name="reserved", count=1024, align=10)
    inside1 = tr.add("mm_page_free", pfn=Z0, order=0)
    br = tr.add("cma_alloc_busy_retry", name="reserved", pfn=CMA_BASE, page=1, count=1024, align=10)
    inside2 = tr.add("mm_page_free", pfn=Z0, order=0)
    fin = tr.add("cma_alloc_finish", name="reserved", pfn=CMA_BASE + 1024, page=1, count=1024, align=10)
    after = tr.add("mm_page_free", pfn=Z0, order=0)
    m = build_model(tr, meta(), K61)
    iso = m.isolation
    assert list(iso["kind"]) == ["cma", "cma"]
    assert list(iso["outcome"]) == ["busy", "success"]
    assert list(iso["start_pfn"]) == [CMA_BASE, CMA_BASE + 1024]
    assert list(iso["end_pfn"]) == [CMA_BASE + 1024, CMA_BASE + 2048]
    assert list(iso["restore_mt"]) == [CMA, CMA]
    assert list(iso["start_seq"]) == [s0, br] and list(iso["end_seq"]) == [br, fin]
    # attempt 1: blocks 0x240,0x241 isolated between start and busy_retry
    assert state(m, CMA_BASE, inside1) == (ISOLATE, 1, "isolation", True, True)
    assert state(m, CMA_BASE + 1024, inside1)[0] == CMA
    assert state(m, CMA_BASE, inside2)[:3] == (CMA, 2, "restore")
    assert state(m, CMA_BASE + 1024, inside2)[:2] == (ISOLATE, 1)
    assert state(m, Z0, inside2)[4] is True                            # another block of the zone
    assert state(m, CMA_BASE + 1024, after)[:3] == (CMA, 2, "restore")
    assert state(m, CMA_BASE + 1024, after)[4] is False
    assert state(m, CMA_BASE + 1024, fin)[0] == ISOLATE                 # "just before" the finish record


def test_failed_cma_search_is_no_window_and_repeat_pfn_is_not_a_new_attempt():
    tr = SyntheticTrace()
    tr.add("cma_alloc_start", name="reserved", count=512, align=9)
    tr.add("cma_alloc_finish", name="reserved", pfn=-1, page=0, count=512, align=9)
    tr.add("cma_alloc_start", name="reserved", count=512, align=9)
    tr.add("cma_alloc_busy_retry", name="reserved", pfn=CMA_BASE, page=1, count=512, align=9)
    tr.add("cma_alloc_finish", name="reserved", pfn=CMA_BASE, page=0, count=512, align=9)
    m = build_model(tr, meta(), K61)
    assert len(m.isolation) == 1 and m.isolation["outcome"].iloc[0] == "busy"


def test_contig_window_restores_movable():
    """alloc_contig_pages(): test_pages_isolated outside any cma call; undo sets MOVABLE."""
    tr = SyntheticTrace()
    tr.add("mm_page_alloc_extfrag", pfn=Z0 + 16 * PB, alloc_order=0, fallback_order=9,
           alloc_migratetype=UNMOVABLE, fallback_migratetype=MOVABLE, change_ownership=1)
    t = tr.add("test_pages_isolated", start_pfn=Z0 + 16 * PB, end_pfn=Z0 + 24 * PB, fin_pfn=Z0 + 24 * PB)
    m = build_model(tr, meta(), K61)
    assert list(m.isolation["kind"]) == ["contig"] and m.isolation["restore_mt"].iloc[0] == MOVABLE
    assert state(m, Z0 + 16 * PB, t)[0] == UNMOVABLE
    assert state(m, Z0 + 16 * PB, t + 1)[:3] == (MOVABLE, 1, "restore")


def test_contig_window_from_migrate_range_info_612():
    tr = SyntheticTrace()
    a = tr.add("mm_alloc_contig_migrate_range_info", start=Z0 + 16 * PB, end=Z0 + 24 * PB, migratetype=MOVABLE)
    mid = tr.add("mm_page_free", pfn=Z0, order=0, cpu=1)
    b = tr.add("test_pages_isolated", start_pfn=Z0 + 16 * PB, end_pfn=Z0 + 24 * PB, fin_pfn=Z0 + 16 * PB)
    # a CMA-typed migrate_range_info belongs to cma_alloc, not to a contig window
    tr.add("mm_alloc_contig_migrate_range_info", start=CMA_BASE, end=CMA_BASE + 512, migratetype=CMA, pid=2)
    m = build_model(tr, meta(), K612)
    assert len(m.isolation) == 1
    w = m.isolation.iloc[0]
    assert (w["start_seq"], w["end_seq"], w["outcome"]) == (a, b, "fail")
    assert state(m, Z0 + 17 * PB, mid)[:2] == (ISOLATE, 1)


def test_contig_window_after_failed_cma_alloc_spans_to_the_tasks_next_step():
    """hugetlb: cma_alloc finds no range -> alloc_contig_pages() isolates (untraced) -> test -> undo."""
    tr = SyntheticTrace()
    tr.add("cma_alloc_start", name="hugetlb0", count=8192, align=13, pid=7)
    f = tr.add("cma_alloc_finish", name="hugetlb0", pfn=-1, page=0, count=8192, align=13, pid=7)
    mid = tr.add("mm_page_free", pfn=Z0, order=0, pid=7)
    t = tr.add("test_pages_isolated", start_pfn=Z0 + 16 * PB, end_pfn=Z0 + 32 * PB, fin_pfn=Z0 + 32 * PB, pid=7)
    late = tr.add("mm_page_free", pfn=Z0, order=0, pid=7)                  # undo not yet done
    nxt = tr.add("cma_alloc_start", name="hugetlb0", count=8192, align=13, pid=7)
    m = build_model(tr, meta(), K61)
    w = m.isolation[m.isolation["kind"] == "contig"].iloc[0]
    assert (w["start_seq"], w["end_seq"], w["restore_mt"]) == (f, nxt, MOVABLE)
    assert state(m, Z0 + 20 * PB, mid)[:2] == (ISOLATE, 1)
    assert state(m, Z0 + 20 * PB, late)[:2] == (ISOLATE, 1)
    assert state(m, Z0 + 20 * PB, nxt + 1)[:3] == (MOVABLE, 1, "restore")
    assert t < late


def _with_kprobe(tr: SyntheticTrace) -> int:
    return tr.add("print", buf="pb/setmt kprobe active (filter mask == 7)\n")


def test_kprobe_ground_truth_overrides_and_agreement_is_measured():
    tr = SyntheticTrace()
    mk = _with_kprobe(tr)
    w = tr.add("setmt", page=0, flags=UNMOVABLE, pfn=Z0 + 5 * PB, mask=7, ts=10_000)
    tr.add("setmt", page=0, flags=1, pfn=Z0 + 6 * PB, mask=8, ts=20_000)          # skip bit: ignored
    tr.add("mm_page_free", pfn=Z0, order=0, ts=110_000)
    m = build_model(tr, meta(), K61)
    assert m.ground_truth and m.kprobe_live_seq == mk
    assert state(m, Z0 + 5 * PB, w + 1)[:3] == (UNMOVABLE, 2, "kprobe")
    assert state(m, Z0 + 6 * PB, w + 5)[:3] == (MOVABLE, 1, "boot")
    # the inference never saw that retype
    assert state(m, Z0 + 5 * PB, w + 1, use="inference")[:2] == (MOVABLE, 1)
    a = m.agreement
    # truth is known for block 5 from ts 10_000 and for the 8 CMA blocks from the marker (ts 1000)
    # to the end (110_000); the inference is right on CMA and wrong on block 5 all along
    assert a["window_start_ts"] == 1000 and a["window_end_ts"] == 110_000
    assert a["truth_known_block_seconds"] == pytest.approx((100_000 + 8 * 109_000) / 1e9)
    assert a["disagree_block_seconds"] == pytest.approx(100_000 / 1e9)
    assert a["rate"] == pytest.approx(8 * 109_000 / (100_000 + 8 * 109_000)) and a["coverage"] == 1.0
    assert a["disagreeing_blocks"] == [0x205]


def test_kprobe_before_marker_not_trusted_and_tracepoints_after_marker_ignored():
    tr = SyntheticTrace()
    tr.add("mm_page_alloc_extfrag", pfn=Z0, alloc_order=0, fallback_order=9,
           alloc_migratetype=UNMOVABLE, fallback_migratetype=MOVABLE, change_ownership=1)   # before marker
    _with_kprobe(tr)
    e = tr.add("mm_page_alloc_extfrag", pfn=Z0 + PB, alloc_order=0, fallback_order=9,
               alloc_migratetype=UNMOVABLE, fallback_migratetype=MOVABLE, change_ownership=1)
    tr.add("setmt", page=0, flags=UNMOVABLE, pfn=Z0 + PB, mask=7)
    m = build_model(tr, meta(), K61)
    assert state(m, Z0, e)[:3] == (UNMOVABLE, 1, "extfrag")                 # pre-marker inference kept
    assert state(m, Z0 + PB, e + 1)[0] == MOVABLE                            # extfrag after marker ignored...
    assert state(m, Z0 + PB, e + 2)[:3] == (UNMOVABLE, 2, "kprobe")          # ...the kprobe write counts


def test_unknown_after_possible_highatomic_reserve():
    tr = SyntheticTrace()
    a = tr.add("mm_page_alloc", pfn=Z0 + 7 * PB, order=2, gfp_flags=0x20 | 0x800, migratetype=UNMOVABLE)
    tr.add("mm_page_alloc", pfn=CMA_BASE, order=2, gfp_flags=0x20, migratetype=MOVABLE)
    b = tr.add("mm_page_alloc", pfn=Z0 + 8 * PB, order=2, gfp_flags=0xcc0, migratetype=UNMOVABLE)  # GFP_KERNEL
    m = build_model(tr, meta(), K61)
    mt, conf, src, _, _ = state(m, Z0 + 7 * PB, a + 1)
    assert (mt, conf, src) == (-1, 0, "boot")
    assert int(m.block_type_at(np.array([Z0 + 7 * PB]), np.array([a + 1])).guess[0]) == MOVABLE
    assert state(m, CMA_BASE, a + 5)[:2] == (CMA, 2)                         # CMA blocks are never reserved
    assert state(m, Z0 + 8 * PB, b + 1)[:2] == (MOVABLE, 1)
    rows = m.blocks[m.blocks["block"] == 0x207]
    assert list(rows["confidence"]) == ["inferred", "unknown"] and list(rows["migratetype"]) == [MOVABLE, -1]


def test_drain_reveals_live_type_on_612_not_on_61():
    tr = SyntheticTrace()
    d = tr.add("mm_page_pcpu_drain", pfn=Z0 + 9 * PB + 3, order=0, migratetype=UNMOVABLE)
    tr.add("mm_page_free", pfn=Z0, order=0)
    m12 = build_model(tr, meta(), K612)
    assert state(m12, Z0 + 9 * PB, d + 1)[:3] == (UNMOVABLE, 1, "drain-observed")
    # nothing traced changed the block before: its type is carried back to the trace start
    assert state(m12, Z0 + 9 * PB, d)[:3] == (UNMOVABLE, 1, "backfill")
    assert m12.stats["backfilled_blocks"] == 1
    m61 = build_model(tr, meta(), K61)          # 6.1: a drain prints the cached type
    assert state(m61, Z0 + 9 * PB, d + 1)[:3] == (MOVABLE, 1, "boot")


def test_61_free_then_drain_reveals_type_at_free_time():
    tr = SyntheticTrace()
    f = tr.add("mm_page_free", pfn=Z0 + 10 * PB, order=0)
    tr.add("mm_page_pcpu_drain", pfn=Z0 + 10 * PB, order=0, migratetype=RECLAIMABLE)
    m = build_model(tr, meta(), K61)
    assert state(m, Z0 + 10 * PB, f + 1)[:3] == (RECLAIMABLE, 1, "free-observed")
    assert state(m, Z0 + 10 * PB, f)[:3] == (RECLAIMABLE, 1, "backfill")


def test_no_backfill_across_a_traced_retype():
    tr = SyntheticTrace()
    e = tr.add("mm_page_alloc_extfrag", pfn=Z0 + 10 * PB, alloc_order=0, fallback_order=9,
               alloc_migratetype=MOVABLE, fallback_migratetype=UNMOVABLE, change_ownership=1)
    d = tr.add("mm_page_pcpu_drain", pfn=Z0 + 10 * PB, order=0, migratetype=UNMOVABLE)
    m = build_model(tr, meta(), K612)
    assert state(m, Z0 + 10 * PB, e)[:3] == (MOVABLE, 1, "boot")
    assert state(m, Z0 + 10 * PB, d)[:3] == (MOVABLE, 2, "extfrag")
    assert state(m, Z0 + 10 * PB, d + 1)[:3] == (UNMOVABLE, 1, "drain-observed")
    assert m.stats["backfilled_blocks"] == 0


def test_612_buddy_merge_hazard_lowers_movable_known():
    tr = SyntheticTrace()
    d = tr.add("mm_page_alloc_extfrag", pfn=Z0 + 11 * PB, alloc_order=0, fallback_order=9,
               alloc_migratetype=MOVABLE, fallback_migratetype=UNMOVABLE, change_ownership=1)
    f = tr.add("mm_page_free", pfn=Z0 + 10 * PB, order=0)          # block 0x20a, buddy of 0x20b
    m = build_model(tr, meta(), K612)
    assert state(m, Z0 + 11 * PB, d + 1)[:2] == (MOVABLE, 2)
    assert state(m, Z0 + 11 * PB, f + 1)[:2] == (MOVABLE, 1)
    m61 = build_model(tr, meta(), K61)                              # no merge retype before 6.10
    assert state(m61, Z0 + 11 * PB, f + 1)[:2] == (MOVABLE, 2)


def test_lost_events_lower_confidence():
    tr = SyntheticTrace()
    tr.add("mm_page_alloc_extfrag", pfn=Z0, alloc_order=0, fallback_order=9,
           alloc_migratetype=MOVABLE, fallback_migratetype=UNMOVABLE, change_ownership=1)
    x = tr.add("mm_page_free", pfn=Z0 + PB, order=0, ts=50_000)
    tr.add("mm_page_free", pfn=Z0 + PB, order=0, ts=60_000)
    tr.lost_rows.append({"cpu": 0, "ts_start": 50_000, "ts_end": 60_000, "count": 12})
    m = build_model(tr, meta(), K61)
    assert state(m, Z0, x)[:2] == (MOVABLE, 2)      # lost window ends at the record after x
    assert state(m, Z0, x + 1)[:2] == (MOVABLE, 1)
    assert state(m, CMA_BASE, x + 1)[:2] == (CMA, 1)
    assert any("lost" in w for w in m.warnings)


def test_intervals_are_contiguous_and_cover_the_trace():
    tr = SyntheticTrace()
    tr.add("cma_alloc_start", name="reserved", count=512, align=9)
    tr.add("cma_alloc_finish", name="reserved", pfn=CMA_BASE, page=1, count=512, align=9)
    tr.add("mm_page_alloc_extfrag", pfn=Z0, alloc_order=0, fallback_order=10,
           alloc_migratetype=UNMOVABLE, fallback_migratetype=MOVABLE, change_ownership=1)
    m = build_model(tr, meta(), K61)
    for _, g in m.blocks.groupby("block"):
        s, e = g["start_ts"].to_numpy(), g["end_ts"].to_numpy()
        assert (s[1:] == e[:-1]).all() and e[-1] == m.trace_end_ts
    assert str(m.blocks["migratetype"].dtype) == "int8[pyarrow]"


def test_kprobe_with_mt_field_name_and_progress_callback():
    """The notes' recipe names the new type `mt`; any event with pfn + mask + a type field is truth."""
    from analyzer.model import synthetic
    synthetic.SCHEMAS["setmt2"] = ("pb", [("pfn", synthetic.U64), ("mt", synthetic.U64), ("mask", synthetic.U64)])
    try:
        tr = SyntheticTrace()
        _with_kprobe(tr)
        w = tr.add("setmt2", pfn=Z0 + 3 * PB, mt=RECLAIMABLE, mask=7)
        steps = []
        m = build_model(tr, meta(), K61, progress=steps.append)
        assert m.ground_truth and state(m, Z0 + 3 * PB, w + 1)[:3] == (RECLAIMABLE, 2, "kprobe")
        assert steps[0] == "reading events" and steps[-1] == "done"
    finally:
        del synthetic.SCHEMAS["setmt2"]


def test_bare_trace_without_zones_uses_the_blocks_it_sees():
    tr = SyntheticTrace()
    s = tr.add("mm_page_free", pfn=0x123456, order=0)
    tr.add("mm_page_pcpu_drain", pfn=0x123456, order=0, migratetype=UNMOVABLE)
    m = build_model(tr, synthetic_meta(zones=[], cma=[]), K612)
    assert list(m.blocks["zone"].unique()) == ["?"] and set(m.blocks["block"]) == {0x123456 >> 9}
    assert state(m, 0x123456, s)[:3] == (UNMOVABLE, 1, "backfill")
    assert m.consistency().table["zone"].tolist()[0] == "?"


def test_lost_counts_without_positions_warn():
    tr = SyntheticTrace()
    tr.add("mm_page_free", pfn=Z0, order=0)
    md = meta()
    md.lost_events = {"cpu0": 0, "cpu1": 17}
    m = build_model(tr, md, K61)
    assert any("cpu1: 17" in w for w in m.warnings)


def test_observation_never_overrides_kprobe_truth_but_fills_unknown():
    tr = SyntheticTrace()
    _with_kprobe(tr)
    w = tr.add("setmt", page=0, flags=UNMOVABLE, pfn=Z0 + 5 * PB, mask=7)
    d = tr.add("mm_page_pcpu_drain", pfn=Z0 + 5 * PB, order=0, migratetype=MOVABLE)      # contradicts
    d2 = tr.add("mm_page_pcpu_drain", pfn=Z0 + 6 * PB, order=0, migratetype=RECLAIMABLE)  # fills in
    m = build_model(tr, meta(), K612)
    assert state(m, Z0 + 5 * PB, d + 1)[:3] == (UNMOVABLE, 2, "kprobe")
    assert m.stats["observations_contradicting_truth"] == 1
    assert any("contradict the kprobe" in x for x in m.warnings)
    # after the marker nothing can change a block untraced: the live type is known from here on
    assert state(m, Z0 + 6 * PB, d2 + 1)[:3] == (RECLAIMABLE, 2, "drain-observed")
    assert w < d


def test_two_nodes_same_zone_name_are_summed_in_consistency():
    from analyzer.capture import PageTypeInfo
    tr = SyntheticTrace()
    tr.add("mm_page_free", pfn=Z0, order=0)
    md = synthetic_meta(zones=[("Normal", Z0, Z0 + 4 * PB), ("Normal", 0x80000, 0x80000 + 2 * PB)], cma=[])
    md.pagetypeinfo_end = PageTypeInfo("p", 9, 512, [], {(0, "Normal"): {1: 4}, (1, "Normal"): {1: 2}}, {})
    m = build_model(tr, md, K61)
    c = m.consistency().table
    assert list(c["zone"].unique()) == ["Normal"]
    row = c[c["migratetype"] == MOVABLE].iloc[0]
    assert (row["reconstructed"], row["pagetypeinfo"]) == (6, 6)


def test_observation_fixed_point_that_is_not_reached_says_so():
    from analyzer.model import infer
    tr = SyntheticTrace()
    tr.add("mm_page_free", pfn=Z0 + 5, order=0)
    tr.add("mm_page_pcpu_drain", pfn=Z0 + 5, order=0, migratetype=UNMOVABLE)
    m = build_model(tr, meta(), K612)               # converges: no warning
    assert not any("fixed point" in w for w in m.warnings)
    ctx = m._ctx
    obs = infer.Obs(np.array([blk(Z0)]), np.array([1]), np.array([2000]), np.array([UNMOVABLE], np.int8),
                    np.array([SOURCES.index("drain-observed")], np.int8))
    warn: list[str] = []
    rows = infer.boot_rows(ctx)
    infer.resolve_with_observations(rows, obs, np.array([1], np.int8), np.zeros(1, bool), ctx, max_iter=0,
                                    warnings=warn)
    assert warn and "not reached after 0 passes: 1 observation(s) left unchecked" in warn[0]
