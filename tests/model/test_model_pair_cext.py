"""The compiled pcp pairing and interval search (analyzer/model/_pair.c) against numpy.

Both paths must give bit-identical stays, residency and block histories on a real capture
(the 6.1 bundle `mtaudit collect` made: ~876k pcp entries); skipped when the extension is
not built (`python3 setup.py build_ext --inplace`).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from analyzer.capture import load_capture
from analyzer.kernels import behavior_for
from analyzer.model import build_model, pcp, timeline
from analyzer.model.events import read_events

BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "bundles", "debian-6.1-arm64-cma-churn")

needs_c = pytest.mark.skipif(pcp._cpair is None, reason="analyzer.model._pair not built (or MTAUDIT_NO_CEXT=1)")


@needs_c
def test_c_and_numpy_models_identical_on_real_bundle(monkeypatch):
    trace, meta = load_capture(BUNDLE)
    kernel = behavior_for(meta.kernel_id)
    ev = {k: t for k, t in read_events(trace, meta.ground_truth_events).items() if not k.startswith("kprobe:")}
    st_c = pcp.pair(ev, kernel, meta.pageblock_order)
    m_c = build_model(trace, meta, kernel)
    assert m_c.timeline._key[2] is not None          # the C interval search was used
    monkeypatch.setattr(pcp, "_cpair", None)
    monkeypatch.setattr(timeline, "_cpair", None)
    st_n = pcp.pair(ev, kernel, meta.pageblock_order)
    m_n = build_model(trace, meta, kernel)
    assert len(st_c.pfn) > 500_000
    for f in st_c.__dataclass_fields__:
        a, b = getattr(st_c, f), getattr(st_n, f)
        assert a.dtype == b.dtype and np.array_equal(a, b), f
    assert len(m_c.residency) == len(m_n.residency) > 500_000
    assert m_c.residency.equals(m_n.residency)
    assert m_c.blocks.equals(m_n.blocks)
    assert m_c.inference_blocks.equals(m_n.inference_blocks)


@needs_c
def test_c_successors_match_numpy_with_ties_and_decline_unsorted_runs():
    rng = np.random.default_rng(7)
    runs = [np.sort(rng.integers(0, 400, size=m)) for m in (300, 120, 250, 80)]
    seq = np.concatenate(runs).astype(np.int64)               # equal seqs across and within runs
    pfn = rng.integers(1000, 1040, size=len(seq)).astype(np.int64)
    bounds = np.cumsum([0] + [len(r) for r in runs]).astype(np.int64)
    n_ent = int(bounds[2])
    e_c, x_c = pcp._cpair.succ(pfn, seq, bounds, n_ent)
    e_n, x_n = pcp._successors_numpy(pfn, seq, n_ent)
    assert np.array_equal(e_c, e_n) and np.array_equal(x_c, x_n)
    assert (x_c >= 0).sum() > 100
    bad = seq.copy()
    bad[0] = bad[1] + 1                                       # run 0 no longer seq-sorted
    assert pcp._cpair.succ(pfn, bad, bounds, n_ent) is None   # caller falls back to numpy


@needs_c
def test_c_interval_search_matches_numpy_on_real_timeline(monkeypatch):
    trace, meta = load_capture(BUNDLE)
    tl = build_model(trace, meta, behavior_for(meta.kernel_id)).timeline
    rng = np.random.default_rng(1)
    # blocks outside the universe, seqs before the first row and past the last
    qb = rng.integers(int(tl.blocks[0]) - 5, int(tl.blocks[-1]) + 5, size=200_000)
    qs = rng.integers(-3, int(tl.start_seq.max()) + 10, size=200_000)
    qs[:1000] = tl.start_seq[rng.integers(0, len(tl.start_seq), size=1000)]   # exact interval starts
    got = tl.at(qb, qs)
    assert tl._key[2] is not None
    monkeypatch.setattr(timeline, "_cpair", None)
    ref = timeline.Timeline(tl.block, tl.start_seq, tl.start_ts, tl.mt, tl.guess, tl.conf, tl.src,
                            tl.blocks).at(qb, qs)
    assert np.array_equal(got, ref)
    assert 0 < (ref < 0).sum() < len(ref)


@needs_c
def test_c_successors_full_64bit_pfn_span_declines_instead_of_crashing():
    """pfns INT64_MIN and INT64_MAX: the span hi - lo + 1 is 2^64, which used to wrap to 0
    and write through a NULL table (segfault); now too large -> None (numpy path)."""
    pfn = np.array([0x1000, -(1 << 63), (1 << 63) - 1], dtype=np.int64)
    seq = np.array([1, 2, 3], dtype=np.int64)
    assert pcp._cpair.succ(pfn, seq, np.array([0, 1, 1, 1, 3], dtype=np.int64), 1) is None
    for big in ((1 << 62), -(1 << 62), (1 << 63) - 1):
        assert pcp._cpair.succ(np.array([0, big], np.int64), seq[:2], np.array([0, 2], np.int64), 1) is None


@needs_c
def test_c_successors_reject_hostile_bounds_and_counts():
    pfn = np.arange(10, dtype=np.int64)
    seq = np.arange(10, dtype=np.int64)
    for bounds in ([0, 20, 10], [0, -5, 10], [0, 5, 3, 10], [1, 10], [0, 9], [0]):
        assert pcp._cpair.succ(pfn, seq, np.array(bounds, dtype=np.int64), 5) is None, bounds
    for n_ent in (-1, 11, 1 << 40):
        with pytest.raises(ValueError):
            pcp._cpair.succ(pfn, seq, np.array([0, 10], dtype=np.int64), n_ent)
    with pytest.raises(TypeError):
        pcp._cpair.succ(pfn.astype(np.int32), seq, np.array([0, 10], dtype=np.int64), 5)
    with pytest.raises(ValueError):
        pcp._cpair.at(np.array([0, 5], np.int64), np.arange(3, dtype=np.int64),
                      np.zeros(1, np.int64), np.zeros(1, np.int64))      # block start past the table
    with pytest.raises(ValueError):
        pcp._cpair.at(np.array([0, 3], np.int64), np.arange(3, dtype=np.int64),
                      np.array([1], np.int64), np.zeros(1, np.int64))    # rank past the blocks


def test_pairing_ignores_impossible_pfns():
    """A free and two drains at pfns that cannot be pages (the crash from a 7-line trace):
    the drains never enter the pairing, in either path."""
    from analyzer.kernels import behavior_for
    from analyzer.model.events import Table, empty
    import pyarrow as pa
    names = ("mm_page_free", "mm_page_alloc_zone_locked", "mm_page_alloc", "mm_page_pcpu_drain",
             "mm_page_free_batched")
    ev = {k: empty(k) for k in names}
    ev["mm_page_free"] = Table("mm_page_free", pa.table({
        "seq": [1], "ts": [1], "cpu": pa.array([0], pa.int32()), "pfn": pa.array([0x1000], pa.uint64()),
        "order": [0]}))
    ev["mm_page_pcpu_drain"] = Table("mm_page_pcpu_drain", pa.table({
        "seq": [2, 3], "ts": [2, 3], "cpu": pa.array([0, 0], pa.int32()),
        "pfn": pa.array([0x8000000000000000, 0x7fffffffffffffff], pa.uint64()),
        "order": [0, 0], "migratetype": [1, 1]}))
    st = pcp.pair(ev, behavior_for("6.1.0"), 9)
    assert list(st.pfn) == [0x1000] and list(st.leave_kind) == [2]      # open: no drain matched
