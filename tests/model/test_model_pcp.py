"""pcp residency: entries (free / refill bursts), exits (alloc / drain), cached types."""
from __future__ import annotations

import pytest

import numpy as np

from analyzer.kernels import CMA, ISOLATE, MOVABLE, UNMOVABLE, behavior_for
from analyzer.model import build_model
from analyzer.model.pcp import pfn_seq_order
from analyzer.model.synthetic import SyntheticTrace, synthetic_meta

pytestmark = pytest.mark.cext   # run again on the numpy paths (scripts/test)

Z0, CMA_BASE = 0x40000, 0x48000
K61, K612 = behavior_for("6.1.0 Debian 6.1.176-1"), behavior_for("6.12.117")


def meta():
    return synthetic_meta(zones=[("DMA", Z0, 0x50000)], cma=[("reserved", CMA_BASE, 0x1000)])


def rows(m):
    return m.residency.to_dict("records")


def test_free_then_drain_and_free_then_alloc():
    tr = SyntheticTrace()
    tr.add("mm_page_free", pfn=Z0 + 1, order=0, cpu=1)
    tr.add("mm_page_free", pfn=CMA_BASE + 7, order=0, cpu=0)
    tr.add("mm_page_alloc", pfn=Z0 + 1, order=0, migratetype=MOVABLE, gfp_flags=0x100cca, cpu=1)
    tr.add("mm_page_pcpu_drain", pfn=CMA_BASE + 7, order=0, migratetype=CMA, cpu=0)
    r = rows(build_model(tr, meta(), K61))
    assert [(x["pfn"], x["enter_kind"], x["leave_kind"], x["cpu"]) for x in r] == [
        (Z0 + 1, "free", "alloc", 1), (CMA_BASE + 7, "free", "drain", 0)]
    assert r[1]["cached_mt"] == CMA and r[1]["pcp_list_mt"] == MOVABLE and r[1]["leave_printed_mt"] == CMA
    assert r[0]["leave_seq"] == 2 and r[1]["leave_seq"] == 3


def test_high_order_free_is_not_a_pcp_stay_but_thp_order_is():
    tr = SyntheticTrace()
    tr.add("mm_page_free", pfn=Z0 + 512, order=4)
    tr.add("mm_page_free", pfn=Z0 + 1024, order=9)
    tr.add("mm_page_free", pfn=Z0 + 8, order=3)
    r = rows(build_model(tr, meta(), K61))
    assert [(x["pfn"], x["order"], x["leave_kind"]) for x in r] == [(Z0 + 1024, 9, "open"), (Z0 + 8, 3, "open")]
    assert all(x["leave_seq"] is None or x["leave_seq"] != x["leave_seq"] for x in r)   # null when open


def test_refill_burst_vs_direct_zone_locked_allocation():
    tr = SyntheticTrace()
    # rmqueue_bulk on cpu0: three order-0 pages (an extfrag inside the burst does not break it),
    # interleaved with an unrelated cpu1 free
    tr.add("mm_page_alloc_zone_locked", pfn=Z0 + 100, order=0, migratetype=UNMOVABLE, percpu_refill=1, cpu=0)
    tr.add("mm_page_free", pfn=Z0 + 900, order=2, cpu=1)
    tr.add("mm_page_alloc_extfrag", pfn=Z0 + 512, alloc_order=0, fallback_order=9, alloc_migratetype=0,
           fallback_migratetype=1, change_ownership=1, cpu=0)
    tr.add("mm_page_alloc_zone_locked", pfn=Z0 + 101, order=0, migratetype=UNMOVABLE, percpu_refill=1, cpu=0)
    tr.add("mm_page_alloc_zone_locked", pfn=Z0 + 102, order=0, migratetype=UNMOVABLE, percpu_refill=1, cpu=0)
    tr.add("mm_page_alloc", pfn=Z0 + 100, order=0, migratetype=UNMOVABLE, gfp_flags=0xcc0, cpu=0)
    # direct rmqueue_buddy(): one zone_locked immediately followed by its mm_page_alloc
    tr.add("mm_page_alloc_zone_locked", pfn=Z0 + 200, order=0, migratetype=MOVABLE, percpu_refill=1, cpu=0)
    tr.add("mm_page_alloc", pfn=Z0 + 200, order=0, migratetype=MOVABLE, gfp_flags=0x100cca, cpu=0)
    # a single zone_locked NOT followed by its alloc is a 1-page refill (buddy ran dry)
    tr.add("mm_page_alloc_zone_locked", pfn=Z0 + 300, order=0, migratetype=MOVABLE, percpu_refill=1, cpu=1)
    tr.add("mm_page_pcpu_drain", pfn=Z0 + 300, order=0, migratetype=MOVABLE, cpu=1)
    r = rows(build_model(tr, meta(), K61))
    refills = [(x["pfn"] - Z0, x["leave_kind"], x["cached_mt"]) for x in r if x["enter_kind"] == "refill"]
    assert refills == [(100, "alloc", UNMOVABLE), (101, "open", UNMOVABLE), (102, "open", UNMOVABLE),
                       (300, "drain", MOVABLE)]
    # block_mt_enter is the model's block type at entry (the block of 100 is still MOVABLE)
    assert [x["block_mt_enter"] for x in r if x["enter_kind"] == "refill"][0] == MOVABLE


def test_reentry_without_exit_is_untraced_and_order_mismatch_is_not_an_exit():
    tr = SyntheticTrace()
    tr.add("mm_page_free", pfn=Z0 + 4, order=0)
    tr.add("mm_page_free", pfn=Z0 + 4, order=0)                  # no exit in between
    tr.add("mm_page_alloc", pfn=Z0 + 4, order=2, migratetype=1, gfp_flags=0)   # other order
    r = rows(build_model(tr, meta(), K61))
    assert [x["leave_kind"] for x in r] == ["untraced", "untraced"]


def test_free_into_isolated_block_bypasses_pcp():
    tr = SyntheticTrace()
    tr.add("cma_alloc_start", name="reserved", count=512, align=9)
    tr.add("mm_page_free", pfn=CMA_BASE + 1, order=0)
    tr.add("cma_alloc_finish", name="reserved", pfn=CMA_BASE, page=1, count=512, align=9)
    tr.add("mm_page_free", pfn=CMA_BASE + 2, order=0)
    m = build_model(tr, meta(), K61)
    assert [x["pfn"] for x in rows(m)] == [CMA_BASE + 2]
    st = m.block_type_at(np.array([CMA_BASE + 1]), np.array([1]))
    assert st.mt[0] == ISOLATE


def test_pfn_seq_order_matches_lexsort():
    rng = np.random.default_rng(7)
    for n in (1, 5, 5000):
        pfn = rng.integers(0, 1 << 40, n)
        seq = np.concatenate([np.sort(rng.choice(10 * n, n // 2, replace=False)),
                              np.sort(rng.choice(np.arange(10 * n, 20 * n), n - n // 2, replace=False))])
        o = pfn_seq_order(pfn, seq)
        r = np.lexsort((seq, pfn))
        assert (pfn[o] == pfn[r]).all() and (seq[o] == seq[r]).all()


def test_sorted_rows_merge_matches_a_full_sort():
    from analyzer.model.timeline import SET, TOUCH, Rows, SortedRows, _lexsorted
    rng = np.random.default_rng(3)
    n, m = 2000, 300
    base = Rows.make(rng.integers(0, 50, n), rng.integers(-1, 500, n), rng.integers(0, 9, n),
                     rng.choice([SET, TOUCH], n), rng.integers(0, 6, n), 0, 1, sub=rng.integers(0, 3, n))
    extra = Rows.make(rng.integers(0, 60, m), rng.integers(0, 600, m), 0, SET, 1, 6, 2, sub=3)
    got = SortedRows(base).with_extra(extra)
    want = _lexsorted(Rows.concat([base, extra]))
    for f in ("block", "seq", "sub"):
        assert (getattr(got, f) == getattr(want, f)).all()
    assert len(got) == n + m
