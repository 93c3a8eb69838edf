"""`analyze` by pageblock partitions (analyzer/partitioned_analysis.py) gives the same `--json`
document as the whole-trace analysis on every committed bundle and golden capture, holds a
partition's records at a time (counted, not timed), and leaves no spill files behind on any
exit path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer import partition as P
from analyzer import partitioned_analysis as PA
from analyzer.analysis import Analysis
from analyzer.capture import load_capture
from analyzer.model import partitioned as mp
from analyzer.report.export import json_doc

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
CAPTURES = sorted(f"bundles/{p.name}" for p in (FIX / "bundles").iterdir() if (p / "trace.dat").exists()) + \
    sorted(f"captures/{p.name}" for p in (FIX / "captures").iterdir() if (p / "trace.dat").exists())
SMALL = "bundles/src-6.1-x86_64-cma-race-stock"


def _doc(a) -> str:
    return json.dumps(json_doc(a), sort_keys=True, default=str)


def _partitioned(rel: str, kernel, div: int = 5, **kw):
    tr, meta = load_capture(str(FIX / rel))
    n = sum(tr.events().values())
    st: dict = {}
    a = Analysis(**PA.analyze_partitioned(tr, meta, kernel, max(1000, n // div), stats=st, **kw))
    return a, st, n


@pytest.mark.parametrize("rel", CAPTURES)
def test_partitioned_json_equals_whole_trace(analyzed, rel, tmp_path):
    whole = analyzed(rel)
    a, st, _n = _partitioned(rel, whole.table_kernel or whole.kernel, tmpdir=str(tmp_path))
    assert st["partitions"] >= 3
    assert _doc(a) == _doc(whole)
    assert not any(tmp_path.iterdir())          # the spill directory is gone


def test_peak_records_follow_the_chunk_not_the_trace(analyzed):
    """The most records any partition handed out in one pass: set by the chunk size."""
    whole = analyzed(SMALL)
    peaks = {}
    for div in (3, 12):
        _a, st, n = _partitioned(SMALL, whole.kernel, div)
        peaks[div] = st["peak_partition_records"]
        assert peaks[div] < n
    assert peaks[12] < 0.6 * peaks[3]


class _Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [_Boom, KeyboardInterrupt])
def test_spill_removed_when_the_analysis_stops(analyzed, tmp_path, monkeypatch, exc):
    whole = analyzed(SMALL)

    def stop(*_a, **_k):
        assert any(tmp_path.iterdir())           # the partitions were spilled there
        raise exc()
    monkeypatch.setattr(mp, "merge", stop)
    with pytest.raises(exc):
        _partitioned(SMALL, whole.kernel, tmpdir=str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_cli_chunk_events_and_environment(tmp_path):
    """`--chunk-events N` forces partitions, MTAUDIT_CHUNK_EVENTS sets the automatic threshold,
    0 turns it off: the same document each way."""
    cap = str(FIX / SMALL)
    docs = {}
    for name, extra, env in (("whole", ["--chunk-events", "0"], {}), ("forced", ["--chunk-events", "50000"], {}),
                             ("env", [], {"MTAUDIT_CHUNK_EVENTS": "60000"})):
        out = tmp_path / f"{name}.json"
        p = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", cap, "--json", str(out), "-q", *extra],
                           capture_output=True, text=True, cwd=ROOT, timeout=600,
                           env={**os.environ, "TMPDIR": str(tmp_path), **env})
        assert p.returncode in (0, 1), p.stderr
        docs[name] = out.read_text()
    assert docs["forced"] == docs["whole"] == docs["env"]
    assert not [f for f in tmp_path.iterdir() if f.name.startswith("mtaudit-part-")]
    p = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", cap, "-q"], capture_output=True, text=True,
                       cwd=ROOT, timeout=600, env={**os.environ, "MTAUDIT_CHUNK_EVENTS": "lots"})
    assert p.returncode == 2 and "MTAUDIT_CHUNK_EVENTS" in p.stderr and "Traceback" not in p.stderr


def test_small_trace_takes_todays_path(analyzed, monkeypatch):
    """Below the threshold analyze() never touches the partition driver."""
    from analyzer.analysis import analyze

    def boom(*_a, **_k):
        raise AssertionError("partitioned a small trace")
    monkeypatch.setattr(PA, "analyze_partitioned", boom)
    tr, meta = load_capture(str(FIX / SMALL))
    assert sum(tr.events().values()) < P.DEFAULT_CHUNK_EVENTS
    a = analyze(tr, meta)
    assert _doc(a) == _doc(analyzed(SMALL))


def test_partitioned_never_decodes_the_whole_trace(analyzed, monkeypatch):
    """Bounded by design: a partitioned analysis of a trace.dat neither indexes nor decodes the
    reader's tables (either would hold every record); it streams the file and reads its spill."""
    from analyzer.analysis import analyze
    from analyzer.capture import meta as cmeta
    monkeypatch.setattr(cmeta, "STREAM_BYTES", 0)      # the capture's cma_* events streamed too
    tr, meta = load_capture(str(FIX / SMALL))
    a = analyze(tr, meta, chunk_events=60_000)
    assert tr._tables is None and tr._counts is None
    assert _doc(a) == _doc(analyzed(SMALL))


def test_auto_partitions_only_readers_that_stream(monkeypatch):
    """Above the threshold a trace.dat is partitioned, a perf.data (whose reader cannot stream:
    partitions would hold the whole trace and spill it too) is analyzed whole, with a warning
    saying so; below it neither is."""
    from analyzer import load
    from analyzer.analysis import analyze
    calls: list[str] = []
    real = PA.analyze_partitioned

    def spy(trace, *a, **k):
        calls.append(trace.meta.format)
        return real(trace, *a, **k)
    monkeypatch.setattr(PA, "analyze_partitioned", spy)
    perf = load(str(FIX / "perf/host-6.18/perf.data"))
    assert perf.streams is False
    n = sum(perf.events().values())
    monkeypatch.setenv(P.CHUNK_ENV, str(max(1, n // 4)))
    a = analyze(perf)
    assert calls == [] and any("cannot stream" in w for w in a.model.warnings)
    monkeypatch.setenv(P.CHUNK_ENV, str(n * 10))
    assert not any("cannot stream" in w for w in analyze(load(str(FIX / "perf/host-6.18/perf.data"))).model.warnings)
    tr, meta = load_capture(str(FIX / SMALL))
    assert tr.streams is True
    monkeypatch.setenv(P.CHUNK_ENV, "60000")
    b = analyze(tr, meta)
    assert calls == ["trace.dat"] and not any("cannot stream" in w for w in b.model.warnings)
