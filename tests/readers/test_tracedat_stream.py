"""iter_batches streams per CPU and per block: same rows (and seq) as the tables, bounded memory."""
from __future__ import annotations

import pytest

import os
import tracemalloc

import pyarrow as pa

from analyzer.readers.tracedat import TraceDat

pytestmark = pytest.mark.cext   # run again on the numpy paths (scripts/test)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "captures")
CAPTURE = os.path.join(ROOT, "debian-6.1-arm64-cma-churn", "trace.dat")


def test_iter_batches_equals_tables_and_stays_small():
    t = TraceDat(CAPTURE)
    t._block_bytes = 256 << 10          # small blocks, so "bounded" is visible on a 1 M-event file
    tracemalloc.start()
    parts: dict[str, list[pa.RecordBatch]] = {}
    for name, batch in t.iter_batches(max_rows=50_000):
        assert batch.num_rows <= 50_000
        parts.setdefault(name, []).append(batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert t._tables is None, "streaming must not materialise the tables"
    full = TraceDat(CAPTURE)
    total = 0
    for name, _n in full.events().items():
        want = full.table(name)
        got = pa.Table.from_batches(parts[name]).sort_by("seq")
        assert got.equals(want), name
        total += want.nbytes
    # nothing per record is kept besides the yielded batches: one block per CPU stream and the
    # rows decoded from it (~0.3 MB + ~10k records here) against ~53 MB of tables
    held = sum(b.nbytes for bs in parts.values() for b in bs)
    assert peak - held < 0.05 * total, (peak, held, total)


def test_iter_batches_selected_event_only():
    t = TraceDat(CAPTURE)
    names = {name for name, _ in t.iter_batches(["mm_page_pcpu_drain", "cma/cma_alloc_start"])}
    assert names == {"kmem:mm_page_pcpu_drain", "cma:cma_alloc_start"}
