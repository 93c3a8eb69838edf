"""`mtaudit analyze` / `mtaudit history` as a user runs them, on the real captures.

Exit codes: 0 no kernel findings, 1 findings, 2 bad input or usage (one line on
stderr, never a traceback), 4 internal error.  The console leads with one verdict line
and fits 80 columns when piped.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
    # the first line is the verdict: status, kernel, what was found (the JSON's counts), exit status
    lines = stdout.splitlines()
    by = js["findings"]["by_detector"]
    assert lines[0].startswith("FINDINGS on 6.1.0-") and lines[0].endswith("-> exit 1"), lines[0]
    for det in ("S1a", "S1b", "S2"):
        assert f"{det}={by[det]}" in lines[0]
    # one table row per detector, with its count; the consistency verdict once, PASS as in the JSON
    ids = {d["id"] for d in js["detectors"]}
    rows = {ln.split()[0]: ln.split() for ln in lines if len(ln.split()) >= 7 and ln.split()[0] in ids
            and ln.split()[2] in ("yes", "n/a")}
    assert set(rows) == ids and {"S1", "S2", "S3", "S4", "S5", "MW"} <= ids
    for d in js["detectors"]:
        assert rows[d["id"]][3] == str(d["count"])
    assert js["consistency"]["passed"] is True
    assert [ln for ln in lines if ln.startswith("consistency")] == [
        ln for ln in lines if ln.startswith("consistency with /proc/pagetypeinfo: PASS")]
    assert len([ln for ln in lines if ln.startswith("consistency")]) == 1
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
    assert rc == 0, err                       # the README promises 6.12 is clean
    js = json.loads(stdout)
    assert js["exit_status"] == 0 and js["findings"]["kernel"] == 0
    first = [ln for ln in err.splitlines() if ln.strip()][0]
    assert first.startswith("CLEAN on 6.12."), err          # the summary went to stderr
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
    (["history", CAP61, "--pfn", "0x1", "--limit", "-3"], "--limit"),
    (["report", CAP61, "-o", "/tmp/never-written.html", "--top", "-5"], "--top"),
    (["report", CAP61, "-o", "/tmp/never-written.html", "--top", "0"], "--top"),
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
    assert rows, "the 6.1 capture has page-level findings (S1a/S1b/S2)"
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


def test_console_fits_80_columns_and_keeps_the_legend_behind_explain():
    rc, stdout, err = mtaudit("analyze", CAP612)
    assert rc == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith("CLEAN on 6.12.") and lines[0].endswith("-> exit 0")
    assert max(len(ln.rstrip()) for ln in lines) <= 80         # piped: rich's 80 columns
    header = next(ln for ln in lines if ln.startswith("id "))
    assert header.split() == ["id", "severity", "runs", "findings", "evidence", "checked", "skipped",
                              "sub-classes"]                     # no header cut to "known/in..."
    assert "\u2026" not in stdout
    assert "S4: not applicable to this kernel" in stdout        # the README's promise
    assert "stale pcp migratetype" not in stdout                 # detector meanings: --explain only
    assert len(lines) < 35
    rc, explained, err = mtaudit("analyze", CAP612, "--explain")
    assert rc == 0, err
    assert "stale pcp migratetype" in explained and "evidence: what a finding's block type rests on" in explained
    assert "Consistency: end state vs /proc/pagetypeinfo" in explained


def test_unknown_kernel_is_reported_once(tmp_path):
    trace = tmp_path / "t.txt"
    trace.write_text("# tracer: nop\n#\n"
                     "  bash-1 [000] 1.000001: mm_page_free: page=0000000000000000 pfn=0x1000 order=0\n"
                     "  bash-1 [000] 1.000002: mm_page_pcpu_drain: page=0000000000000000 pfn=0x1000 order=0 "
                     "migratetype=1\n")
    rc, stdout, err = mtaudit("analyze", str(trace))
    assert rc == 3, err                # never clean on an assumed kernel
    assert stdout.splitlines()[0].startswith("INCONCLUSIVE on unknown kernel")
    assert "pass --kernel" in stdout.splitlines()[0]
    assert stdout.splitlines()[0].endswith(f"-> exit {rc}")
    assert stdout.lower().count("unknown kernel") + stdout.lower().count("kernel version unknown") \
        + stdout.lower().count("kernel release unknown") == 1, stdout


def test_crash_repro_pfns_at_the_64_bit_edges_exit_cleanly(tmp_path):
    """One free and two drains at pfns 2^63 and 2^63-1 segfaulted the C pairing (exit 139)."""
    trace = tmp_path / "crash.txt"
    trace.write_text(
        "# tracer: nop\n#\n"
        "  bash-1 [000] 1.000001: mm_page_free: page=0000000000000000 pfn=0x1000 order=0\n"
        "  bash-1 [000] 1.000002: mm_page_pcpu_drain: page=0000000000000000 pfn=0x8000000000000000 order=0 "
        "migratetype=1\n"
        "  bash-1 [000] 1.000003: mm_page_pcpu_drain: page=0000000000000000 pfn=0x7fffffffffffffff order=0 "
        "migratetype=1\n")
    results = []
    for env in ({}, {"MTAUDIT_NO_CEXT": "1"}):
        p = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", str(trace), "--json", "-", "-q"],
                           capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, **env})
        js = json.loads(p.stdout)                          # finished, and said so
        assert p.returncode == js["exit_status"] and js["findings"]["total"] == 0, (env, p.returncode, p.stderr)
        results.append(js["findings"])
    assert results[0] == results[1]                        # C and numpy pairing agree


def test_kernel_taken_from_the_trace_dat_uname_option():
    """A bare trace.dat records `uname -a` (trace-cmd's UNAME option): that kernel, not an assumption."""
    rc, stdout, err = mtaudit("analyze", os.path.join(ROOT, "fixtures", "text", "host-6.18-x86_64", "trace.dat"))
    first = stdout.splitlines()[0]
    assert " on 6.18.44-fc-v669:" in first and "unknown kernel" not in first, first
    rc2, stdout2, _ = mtaudit("analyze", "--kernel", "6.18.44", os.path.join(ROOT, "fixtures", "text",
                                                                            "host-6.18-x86_64", "trace-noirq.txt"))
    assert "unknown kernel" not in stdout2.splitlines()[0]
