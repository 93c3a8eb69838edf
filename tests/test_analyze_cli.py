"""`mtaudit analyze` / `mtaudit history` as a user runs them, on the real captures.

Exit codes: 0 no kernel findings, 1 findings, 2 bad input or usage (one line on
stderr, never a traceback).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAP61 = os.path.join(ROOT, "fixtures", "captures", "debian-6.1-arm64-cma-churn")
CAP612 = os.path.join(ROOT, "fixtures", "captures", "debian-6.12-arm64-cma-churn")


def mtaudit(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "analyzer.cli", *args], capture_output=True, text=True,
                       cwd=cwd or ROOT, timeout=600)
    return p.returncode, p.stdout, p.stderr


def _one_line_error(err: str):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err
    return lines


@pytest.fixture(scope="module")
def json61(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli61")
    out = d / "a.json"
    pq = d / "pq"
    rc, stdout, err = mtaudit("analyze", CAP61, "--json", str(out), "--parquet", str(pq))
    return rc, stdout, err, json.loads(out.read_text()), pq


def test_analyze_6_1_has_findings_exit_1_and_exports(json61):
    rc, stdout, err, js, pq = json61
    assert rc == 1, err
    assert js["exit_status"] == 1 and js["findings"]["kernel"] > 0
    assert "Traceback" not in err
    # the console summary names every detector and the consistency verdict
    for d in ("S1", "S2", "S3", "S4", "S5", "MW"):
        assert d in stdout
    assert "consistency:" in stdout
    assert len(js["finding_rows"]) == js["findings"]["total"]
    assert {r["detector"] for r in js["finding_rows"]} <= {"S1a", "S1b", "S2", "S3", "S4", "S5", "MW"}
    assert all(r["explanation"] for r in js["finding_rows"])
    import pyarrow.parquet as pq_
    f = pq_.read_table(pq / "findings.parquet")
    assert f.num_rows == js["findings"]["total"]
    assert pq_.read_table(pq / "blocks.parquet").num_rows == len(js["block_history"])
    assert not [n for n in os.listdir(pq.parent) if n.startswith(".tmp-")]


def test_analyze_json_to_stdout_is_pure_json():
    rc, stdout, err = mtaudit("analyze", CAP612, "--json", "-")
    assert rc in (0, 1), err
    js = json.loads(stdout)
    assert js["exit_status"] == rc
    # 6.12 prints the live type on drain: no S1 kernel finding can exist there
    s1 = [r for r in js["finding_rows"] if r["detector"] in ("S1a", "S1b")]
    assert s1 == []


@pytest.mark.parametrize("args,needle", [
    (["analyze", "/nonexistent/capture"], "no such file"),
    (["analyze", os.path.join(CAP61, "uname.txt")], "uname.txt"),
    (["analyze", CAP61, "--pageblock-order", "0"], "pageblock-order"),
    (["analyze", CAP61, "--cma", "bogus"], "--cma"),
    (["history", CAP61, "--pfn", "zzz"], "not a number"),
    (["history", CAP61], "required"),
    (["analyze", CAP612, "--ground-truth", "nosuch:event"], "no such event"),
])
def test_bad_input_exit_2_one_line(args, needle):
    rc, stdout, err = mtaudit(*args)
    assert rc == 2
    lines = _one_line_error(err)
    assert needle in err
    assert len([ln for ln in lines if ln.startswith("mtaudit")]) == 1


def test_bad_trace_bytes_exit_2(tmp_path):
    bad = tmp_path / "trace.dat"
    bad.write_bytes(b"\x17\x08\x44tracing6\0" + b"\xff" * 64)
    rc, stdout, err = mtaudit("analyze", str(bad))
    assert rc == 2 and "Traceback" not in err and str(bad) in err


def test_history_of_a_page_tells_its_story(json61):
    js = json61[3]
    rows = [r for r in js["finding_rows"] if r["detector"] != "MW" and r["event"] != "cma-block-lost"]
    if not rows:
        pytest.skip("no page-level finding on this capture")
    r = rows[0]
    rc, stdout, err = mtaudit("history", CAP61, "--pfn", hex(r["pfn"]))
    assert rc == 0, err
    assert f"pfn {hex(r['pfn'])}" in stdout
    assert f"!! {r['detector']}" in stdout      # the finding sits in the story
    assert "story: " in stdout and " -> " in stdout
    rc, stdout, err = mtaudit("history", CAP61, "--block", str(r["block"]), "--limit", "5")
    assert rc == 0 and f"pageblock {r['block']}" in stdout and "more steps" in stdout


def test_analyze_accepts_a_tar_zst_bundle(tmp_path):
    import tarfile

    import zstandard
    bundle = tmp_path / "cap.tar.zst"
    with open(bundle, "wb") as f, zstandard.ZstdCompressor(level=1).stream_writer(f) as zw, \
            tarfile.open(fileobj=zw, mode="w|") as tf:
        tf.add(CAP612, arcname="debian-6.12-arm64-cma-churn")
    rc, stdout, err = mtaudit("analyze", str(bundle), "--json", "-", "-q")
    assert rc == 0, err
    js = json.loads(stdout)
    assert js["capture"]["kind"] == "archive" and js["consistency"]["passed"] is True
