"""Partition plan and spill (analyzer/partition.py) on a real bundle: every record lands in
exactly one partition (or in the shared files), cuts keep buddy groups whole, the spill
directory goes away on every exit path, and a partition's size follows the chunk, not the trace."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from analyzer import partition as P
from analyzer.capture import load_capture

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "bundles"
BUNDLE = FIX / "src-6.1-x86_64-cma-race-revert"


@pytest.fixture(scope="module")
def capture():
    return load_capture(str(BUNDLE))


def test_plan_cuts_on_buddy_groups_with_about_chunk_records(capture):
    tr, meta = capture
    p = P.plan(tr, meta.pageblock_order, 100_000)
    assert p.k >= 3
    assert p.total_events == sum(tr.events().values())
    assert int(p.events.sum()) + p.shared_events == p.total_events
    g = P.group_blocks(meta.pageblock_order)
    assert all(int(c) % g == 0 for c in p.cuts[1:-1])
    # no partition holds much more than a chunk plus one buddy group's records
    assert int(p.events.max()) < 2 * 100_000
    one = P.plan(tr, meta.pageblock_order, 10**9)
    assert one.k == 1


def test_spill_routes_every_record_once(capture, tmp_path):
    tr, meta = capture
    p = P.plan(tr, meta.pageblock_order, 100_000)
    sp = P.spill(tr, p, str(tmp_path))
    parts = [P.PartitionTrace(tr, sp, i) for i in range(p.k)]
    for name in tr.events():
        full = tr.table(name).sort_by("seq")
        got = [pt.table(name) for pt in parts]
        if name in p.routed:
            u = pa.concat_tables(got).sort_by("seq")
            assert u.equals(full), name
            for i, t in enumerate(got):      # every routed record sits in its partition's blocks
                b = P.block_of(t.column(p.routed[name]), p.pageblock_order)
                lo, hi = p.block_range(i)
                assert ((b == -1) & (i == 0) | (b >= lo) & (b < hi)).all(), (name, i)
        else:                                # shared: every partition sees all of them
            for t in got:
                assert t.sort_by("seq").equals(full), name


def test_partition_size_follows_the_chunk_not_the_trace(capture, tmp_path):
    """The largest partition's records: set by the chunk size (peak rows, counted)."""
    tr, meta = capture
    peak = {}
    for chunk in (50_000, 200_000):
        p = P.plan(tr, meta.pageblock_order, chunk)
        d = tmp_path / str(chunk)
        d.mkdir()
        sp = P.spill(tr, p, str(d))
        rows = []
        for i in range(p.k):
            pt = P.PartitionTrace(tr, sp, i)
            for name in tr.events():
                pt.table(name)
            rows.append(pt.rows_loaded)
        peak[chunk] = max(rows)
        assert peak[chunk] <= chunk + int(np.max(p.events)) + p.shared_events
        assert peak[chunk] < p.total_events
    assert peak[50_000] < peak[200_000]


class _Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [None, _Boom, KeyboardInterrupt])
def test_spill_dir_removed_on_every_exit(capture, tmp_path, exc):
    tr, meta = capture
    seen = []
    try:
        with P.spill_dir(str(tmp_path)) as d:
            seen.append(d)
            P.spill(tr, P.plan(tr, meta.pageblock_order, 100_000), d)
            assert any(Path(d).iterdir())
            if exc is not None:
                raise exc()
    except (_Boom, KeyboardInterrupt):
        pass
    assert seen and not Path(seen[0]).exists()


def test_no_space_is_one_clear_error(capture, tmp_path, monkeypatch):
    tr, meta = capture
    p = P.plan(tr, meta.pageblock_order, 100_000)
    monkeypatch.setattr(P, "DISK_MARGIN", float(2**62))
    with pytest.raises(P.SpillSpaceError, match="free, the partition files need"):
        P.spill(tr, p, str(tmp_path))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("max_rows", [4096, 1 << 18])
def test_refill_stream_decides_like_the_whole_trace(capture, max_rows):
    """Streamed in small batches, the refill decision equals pcp.refill_mask on the whole trace."""
    from analyzer.model.events import read_events
    from analyzer.model.pcp import refill_mask
    from analyzer.model.refill_stream import RefillStream
    tr, meta = capture
    rs = RefillStream()
    for name, batch in tr.iter_batches(None, max_rows):
        rs.feed(name, batch)
    rs.finish()
    got, _ = rs.decided()
    ev = read_events(tr, meta.ground_truth_events, meta.pageblock_order)
    want = ev["mm_page_alloc_zone_locked"]["seq"][refill_mask(ev)]
    assert len(want) and np.array_equal(np.sort(got), np.sort(want))
    assert rs.peak_rows < sum(tr.events().values())


def _with_lost(tmp_path) -> str:
    """The 6.12 corpus capture rewritten with three lost-event pages on CPU 0 (tests/support writer)."""
    from support import tracedat_write as W
    from support.tracedat_variants import extract

    from analyzer.readers.tracedat import TraceDat
    src = TraceDat(str(FIX.parent / "captures" / "debian-6.12-arm64-cma-churn" / "trace.dat"))
    bufs = extract(src)
    r = bufs[0][1][0]
    n = len(r.ts)
    r.lost = {n // 7: 5, n // 3: -1, n // 2: 1234}
    out = str(tmp_path / "lost.dat")
    W.write(out, src.h, bufs, version=6)
    return out


def test_stream_lost_equals_the_readers_lost(tmp_path):
    """The block-at-a-time lost windows equal the reader's (which index every record)."""
    from analyzer.readers.tracedat import TraceDat
    path = _with_lost(tmp_path)
    want = TraceDat(path).lost
    assert want.num_rows == 3
    tiny = TraceDat(path)
    tiny._block_bytes = 2 * tiny.h.page_size      # many blocks: windows carried across them
    for t in (TraceDat(path), tiny):
        assert P.stream_lost(t).equals(want)
        assert t._counts is None                 # nothing indexed


def test_partitioned_analysis_with_lost_windows(tmp_path):
    """Lost windows lower confidence in every block: the partitioned analysis still equals the whole one."""
    import json

    from analyzer.analysis import analyze
    from analyzer.readers import load
    from analyzer.report.export import json_doc
    path = _with_lost(tmp_path)
    whole = analyze(load(path), chunk_events=0)
    assert len(whole.lost)
    part = analyze(load(path), chunk_events=100_000)
    assert json.dumps(json_doc(part), sort_keys=True, default=str) == \
        json.dumps(json_doc(whole), sort_keys=True, default=str)


def test_big_trace_cma_events_streamed_for_the_metadata(monkeypatch):
    """Above STREAM_BYTES the capture's cma_* events are streamed, not decoded with every record:
    same CMA areas, and the trace is left undecoded."""
    from analyzer.capture import meta as cmeta
    _tr, want = load_capture(str(BUNDLE))
    monkeypatch.setattr(cmeta, "STREAM_BYTES", 0)
    tr, got = load_capture(str(BUNDLE))
    assert got.cma_areas == want.cma_areas and got.cma_areas
    assert tr._tables is None and tr._counts is None
