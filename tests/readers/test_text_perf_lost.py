"""`perf script` text of a lossy real capture (fixtures/perf/host-6.18/perf-lost.data).

perf's `PERF_RECORD_LOST lost N` lines (`--show-lost-events`) are lost events on their CPU;
without them, perf's end-of-run warnings ("lost 12 chunks", "lost 56.34%") still make the
trace lossy (a gap of unknown size), never "no events lost".
"""
from __future__ import annotations

import os
import subprocess


import analyzer
from analyzer.readers.perfdata import PerfData
from support.tools import requires_tool

D = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "perf", "host-6.18")


def test_lost_lines_count_per_cpu():
    t = analyzer.load(os.path.join(D, "perf-lost-show-lost-events.txt"))
    binary = PerfData(os.path.join(D, "perf-lost.data"))
    want = binary.lost.to_pandas()
    want = want[want.ts_start == want.ts_end]           # the PERF_RECORD_LOST rows
    got = t.lost.to_pandas()
    assert t.meta.extra["lost_chunk_lines"] == len(want) == binary.meta.extra["lost_chunks"]
    assert sorted(zip(got["cpu"], got["count"])) == sorted(zip(want["cpu"], want["count"]))
    assert t.events() == binary.events()
    assert t.meta.extra["perf_lost_percent"] == 56.34


def test_summary_only_is_never_lossless():
    t = analyzer.load(os.path.join(D, "perf-lost-script.txt"))
    rows = t.lost.to_pylist()
    assert len(rows) == 1 and rows[0]["cpu"] == -1 and rows[0]["count"] == -1
    assert t.meta.extra["perf_lost_chunks"] == 12


@requires_tool("perf")
def test_fixture_text_is_what_perf_prints(tmp_path):
    r = subprocess.run(["perf", "script", "--ns", "--show-lost-events", "-i", os.path.join(D, "perf-lost.data")],
                       capture_output=True, text=True, check=True)
    with open(os.path.join(D, "perf-lost-show-lost-events.txt")) as f:
        assert f.read() == r.stdout + r.stderr


def test_lossless_text_has_no_lost_rows():
    t = analyzer.load(os.path.join(D, "..", "..", "text", "perf-6.1-host-6.18", "perf-script-ns.txt"))
    assert t.lost.num_rows == 0
