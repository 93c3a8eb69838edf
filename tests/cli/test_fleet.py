"""Fleet analysis (`mtaudit analyze CAPTURE... --out DIR`) on the committed real bundles.

The parallel runs must say exactly what serial single-capture runs say: the same
`--json` document per capture, whichever backend (a 2-worker local dask cluster, a
local process pool) ran it, and a capture that cannot be analyzed is a row saying why.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from analyzer.fleet import (
    analyze_capture,
    fleet_exit,
    run_fleet,
    run_serial,
    write_dataset,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLES = sorted(os.path.join(ROOT, "fixtures", "bundles", d)
                 for d in os.listdir(os.path.join(ROOT, "fixtures", "bundles"))
                 if os.path.isdir(os.path.join(ROOT, "fixtures", "bundles", d)))


@pytest.fixture(scope="module")
def serial():
    return {r.capture: r for r in run_serial(BUNDLES)}


@pytest.fixture
def not_a_trace(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("this is not a trace\n")
    return str(p)


def test_bundles_are_there_and_analyze(serial):
    assert len(BUNDLES) >= 4
    for p, r in serial.items():
        assert r.status in ("clean", "findings", "inconclusive"), (p, r.error)
        assert r.summary is not None and r.summary["exit_status"] == r.exit_status
    # the committed bundles include ones with kernel findings and ones without
    assert {r.exit_status for r in serial.values()} >= {0, 1}


def test_two_worker_dask_cluster_equals_serial(serial, not_a_trace, tmp_path):
    if os.environ.get("MTAUDIT_REQUIRE_TOOLS") == "1":   # scripts/setup --test installs it: missing is a failure
        import distributed  # noqa: F401
    else:
        pytest.importorskip("distributed", reason="dask.distributed not installed (pip install 'mtaudit[dist]')")
    got = run_fleet([*BUNDLES, not_a_trace], backend="dask", jobs=2)
    assert [r.capture for r in got] == [*BUNDLES, not_a_trace]
    for r in got[:-1]:
        assert r.summary == serial[r.capture].summary, r.capture
        assert r.status == serial[r.capture].status
    bad = got[-1]
    assert bad.status == "failed" and bad.exit_status == 2 and bad.summary is None
    assert "notes.txt" in bad.error and "not a trace.dat" in bad.error
    assert fleet_exit(got) == 2
    # the dataset holds the same findings and block histories, tagged by capture
    out = tmp_path / "fleet"
    write_dataset(got, str(out))
    summ = pq.read_table(out / "summary.parquet").to_pylist()
    assert [s["capture"] for s in summ] == [r.capture for r in got]
    assert summ[-1]["status"] == "failed" and "not a trace.dat" in summ[-1]["error"]
    findings = pq.read_table(out / "findings.parquet").to_pandas()
    blocks = pq.read_table(out / "blocks.parquet").to_pandas()
    for s in summ[:-1]:
        ref = serial[s["capture"]].summary
        mine = findings[findings["capture"] == s["capture"]]
        assert len(mine) == ref["findings"]["total"] == s["findings"]
        assert mine["detector"].value_counts().to_dict() == ref["findings"]["by_detector"]
        assert list(mine["seq"]) == [row["seq"] for row in ref["finding_rows"]]
        assert (blocks["capture"] == s["capture"]).sum() == len(ref["block_history"])


def test_process_pool_equals_serial(serial, not_a_trace):
    two = BUNDLES[-2:]
    got = run_fleet([*two, not_a_trace], backend="pool", jobs=2)
    for r in got[:2]:
        assert r.summary == serial[r.capture].summary
    assert got[2].status == "failed" and got[2].exit_status == 2


def test_one_capture_function_matches_single_cli_json(serial, tmp_path):
    """The fleet's per-capture document is what `mtaudit analyze CAPTURE --json` writes."""
    b = BUNDLES[-1]
    out = tmp_path / "a.json"
    p = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", b, "--json", str(out), "-q"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert p.returncode in (0, 1, 3), p.stderr
    assert json.loads(out.read_text()) == serial[b].summary == analyze_capture(b).summary


def test_cli_fleet_needs_out_and_writes_dataset(not_a_trace, tmp_path):
    cmd = [sys.executable, "-m", "analyzer.cli", "analyze", BUNDLES[-1], not_a_trace]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert p.returncode == 2 and "--out DIR" in p.stderr and "Traceback" not in p.stderr
    out = tmp_path / "ds"
    p = subprocess.run([*cmd, "--out", str(out), "--jobs", "1"], capture_output=True, text=True,
                       cwd=ROOT, timeout=600, check=False)
    assert p.returncode == 2, p.stderr   # one capture failed
    assert "2 captures: " in p.stdout and "1 failed" in p.stdout
    assert sorted(os.listdir(out)) == ["blocks.parquet", "findings.parquet", "summary.parquet", "summary.txt"]
    assert (out / "summary.txt").read_text() in p.stdout


def _dies_once(path: str, overrides=None):
    """A worker that dies (the process exits, like an OOM kill) the first time it sees a capture."""
    from analyzer import fleet
    flag = os.environ["MTAUDIT_TEST_DIE_ONCE"]
    if not os.path.exists(flag):
        open(flag, "w").close()
        os._exit(9)
    return fleet.CaptureResult(capture=path, status="clean", exit_status=0, summary={"ok": path})


def test_pool_worker_lost_costs_a_retry_not_the_capture(tmp_path, monkeypatch):
    from analyzer import fleet
    monkeypatch.setenv("MTAUDIT_TEST_DIE_ONCE", str(tmp_path / "died"))
    monkeypatch.setattr(fleet, "analyze_capture", _dies_once)   # forked pool workers inherit it
    got = fleet.run_pool(["a", "b"], jobs=1)
    assert (tmp_path / "died").exists()
    assert [r.summary for r in got] == [{"ok": "a"}, {"ok": "b"}]
    assert max(r.attempts for r in got) == 2
