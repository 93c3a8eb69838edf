"""The pageblock model built partition by partition (analyzer/model/partitioned.py) is the
model of the whole trace: same block history, inference, isolation windows, agreement,
warnings, stats and pcp residency, on every committed bundle and golden capture, with the
trace cut into several partitions (through zones and CMA areas)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analyzer import partition as P
from analyzer.capture import load_capture

FIX = Path(__file__).resolve().parents[2] / "fixtures"
# one per kernel family and model path (6.1 cached drains with and without the kprobe marker
# path, >= 6.10 live drains, 6.17+ isolate-bit probes, memory offline); test_partitioned_analysis.py
# compares the whole --json document on every capture
CAPTURES = ["bundles/src-6.1-x86_64-cma-race-stock", "bundles/debian-6.12-arm64-cma-churn",
            "bundles/debian-6.18-amd64-memory-offline", "bundles/debian-7.2-arm64-cma-churn",
            "captures/debian-6.1-arm64-cma-churn"]


def _chunk(tr, pbo: int) -> int:
    """A chunk that cuts the trace into about five partitions."""
    routed = P.routed_events(tr)
    n = sum(c for e, c in tr.events().items() if e in routed)
    return max(1000, n // 5)


@pytest.mark.parametrize("rel", CAPTURES)
def test_partitioned_model_equals_whole_trace_model(analyzed, rel):
    a = analyzed(rel)
    tr, meta = load_capture(str(FIX / rel))
    pbo = meta.pageblock_order
    pm, plan = P.build_model_partitioned(tr, meta, a.kernel, _chunk(tr, pbo), residency=True)
    m = a.model
    assert plan.k >= 3
    inner = [int(c) for c in plan.cuts[1:-1]]
    assert any(lo >> pbo < c <= (hi - 1) >> pbo for c in inner for _, lo, hi in meta.zones), "no cut inside a zone"
    if meta.cma_areas and rel.startswith("bundles/debian"):
        assert any(b >> pbo < c <= (b + n - 1) >> pbo for c in inner for _, b, n in meta.cma_areas), \
            "no cut inside a CMA area"
    assert pm.blocks.equals(m.blocks)
    assert pm.inference_blocks.equals(m.inference_blocks)
    assert pm.isolation.equals(m.isolation)
    assert pm.residency.equals(m.residency)
    assert json.dumps(pm.agreement, sort_keys=True) == json.dumps(m.agreement, sort_keys=True)
    assert pm.warnings == m.warnings
    assert pm.stats == m.stats
    assert (pm.kprobe_live_seq, pm.kprobe_live_ts, pm.ground_truth) == (m.kprobe_live_seq, m.kprobe_live_ts,
                                                                        m.ground_truth)
    assert all(np.array_equal(x, y) for x, y in zip(pm.offlined, m.offlined))
    assert pm.consistency().table.equals(m.consistency().table)
