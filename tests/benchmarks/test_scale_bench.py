"""`mtaudit bench scale` on real captures: what it measures is what a user runs, with its peer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from support.tools import requires_tool

from benchmarks import churn, scale_captures

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUNDLE = os.path.join(ROOT, "fixtures", "bundles", "src-6.1-x86_64-cma-race-stock")
PERF = os.path.join(ROOT, "fixtures", "perf", "host-6.18", "perf.data")


def test_trace_file_sniffs_content_not_name():
    assert scale_captures.trace_file(BUNDLE) == (os.path.join(BUNDLE, "trace.dat"), "trace.dat")
    assert scale_captures.trace_file(PERF) == (PERF, "perf.data")
    with pytest.raises(SystemExit, match="neither a trace.dat nor a perf.data"):
        scale_captures.trace_file(os.path.join(BUNDLE, "manifest.json"))


def test_count_matches_the_reader_and_is_cached(tmp_path):
    cache = str(tmp_path / "counts.json")
    events, lost = scale_captures.count(os.path.join(BUNDLE, "trace.dat"), cache)
    from analyzer.readers import load
    assert events == sum(load(os.path.join(BUNDLE, "trace.dat")).events().values())
    assert lost == 0
    assert len(json.loads(open(cache).read())) == 1
    assert scale_captures.count(os.path.join(BUNDLE, "trace.dat"), cache) == (events, lost)


@requires_tool("trace-cmd")
def test_bench_runs_analyze_as_a_user_would_and_the_peer(tmp_path):
    """Extra analyze arguments reach the child: `--json FILE` writes the same document as a direct run."""
    said: list[str] = []
    out = tmp_path / "doc.json"
    row = scale_captures.bench_capture(BUNDLE, ["--json", str(out)], str(tmp_path / "c.json"), said.append)
    direct = tmp_path / "direct.json"
    subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", BUNDLE, "-q", "--json", str(direct)],
                   cwd=ROOT, check=False)
    assert out.read_bytes() == direct.read_bytes()
    assert row.analyze.exit in (0, 1) and row.peer is not None and row.peer.exit == 0
    assert row.peer.cmd[:3] == ["trace-cmd", "report", "-R"]
    assert row.analyze.peak_rss > 50e6 and row.analyze.cpu_s > 0 and row.peer.cpu_s > 0
    table = scale_captures.markdown([row], ["--json", str(out)])
    assert f"| {row.events:,} |" in table and "trace-cmd report -R" in table
    png = tmp_path / "rss.png"
    scale_captures.plot([row], str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_record_command_stops_the_churn_at_the_size_for_n_events(tmp_path):
    cmd = scale_captures.record_command(str(tmp_path / "trace-10M"), "trace", 10_000_000)
    i = cmd.index("--")
    assert cmd[cmd.index("--backend") + 1] == "tracefs"
    assert cmd[i + 2] == scale_captures.CHURN and cmd[i + 3].endswith(".cpu*.raw")
    assert int(cmd[i + 4]) == int(10_000_000 * scale_captures.BYTES_PER_EVENT["tracefs"])


def test_churn_stops_when_the_watched_files_reach_the_target(tmp_path):
    """The real workload: it allocates pages until a file grows past the target, then ends with its workers."""
    watched = tmp_path / "grow.raw"
    watched.write_bytes(b"")
    p = subprocess.Popen([sys.executable, churn.__file__, str(tmp_path / "*.raw"), "1000", "1", "60"],
                         stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert p.poll() is None                     # still churning: nothing recorded yet
    watched.write_bytes(b"x" * 1000)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0 and "1,000 bytes recorded" in err


def test_a_run_past_max_rss_is_stopped_and_marked(tmp_path):
    """The guard that keeps a 100 M-event analyze from pushing a shared machine into the OOM killer."""
    r = scale_captures.measure([sys.executable, "-c", "b = bytearray(400 << 20); import time; time.sleep(30)"],
                               max_rss=100 << 20)
    assert r.stopped and r.exit == -9 and r.wall_s < 20
    ok = scale_captures.measure([sys.executable, "-c", "pass"], max_rss=1 << 30)
    assert not ok.stopped and ok.exit == 0
