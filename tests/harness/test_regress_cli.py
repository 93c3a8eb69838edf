"""`mtaudit regress --baseline-bundles/--candidate-bundles` on the committed real bundles
(Debian 6.1 vs 6.12 arm64, cma-churn; the source-built race pair): outputs, verdicts, exit
codes, failed runs, bad input, and outputs written when the comparison itself fails."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
B61 = ROOT / "fixtures/bundles/debian-6.1-arm64-cma-churn"
B612 = ROOT / "fixtures/bundles/debian-6.12-arm64-cma-churn"
REVERT = ROOT / "fixtures/bundles/src-6.1-x86_64-cma-race-revert"
STOCK = ROOT / "fixtures/bundles/src-6.1-x86_64-cma-race-stock"


def regress(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", "regress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


def copies(src: Path, dest: Path, n: int, tag: str) -> Path:
    """n hard-linked copies of a bundle under dest (a directory of bundles, as CI artifacts are)."""
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        d = dest / f"{tag}-r{i}"
        shutil.copytree(src, d, copy_function=os.link)
    return dest


def test_fixed_on_the_real_pair(tmp_path):
    # one bundle per kernel: the verdicts are shown (S1, S2 fixed) but 1+1 runs cannot gate: exit 3
    out = tmp_path / "out"
    p = regress("--baseline-bundles", str(B61), "--candidate-bundles", str(B612), "--expect-fix", "S1",
                "--out", str(out))
    assert p.returncode == 3, p.stderr
    assert "1+1 runs: a comparison needs >= 2 runs per side to gate" in p.stderr
    assert p.stdout.strip() == str(out)
    for f in ("summary.md", "junit.xml", "result.json", "report.html", "analysis/b1.json", "analysis/c1.json"):
        assert (out / f).is_file(), f
    res = json.loads((out / "result.json").read_text())
    assert res["schema"] == "mtaudit-regress" and res["status"] == "inconclusive" and res["exit_code"] == 3
    assert res["stats"]["gate"] is False and any("1+1 runs" in n for n in res["notes"])
    rows = {d["id"]: d for d in res["detectors"]}
    # ids come from the analysis; S1 and S2 fire on 6.1 (184 and 6391 on this capture), never on 6.12
    assert rows["S1"]["verdict"] == "fixed" and rows["S2"]["verdict"] == "fixed"
    assert [x["count"] for x in rows["S1"]["baseline"]["runs"]] == [184]
    assert [x["count"] for x in rows["S1"]["candidate"]["runs"]] == [0]
    assert rows["S1"]["p_permutation"] is None and res["stats"]["min_attainable_p"] is None  # 1 vs 1 run
    assert rows["S4"]["verdict"] == "inconclusive" and rows["S4"]["inconclusive_kind"] == "not_applicable"
    assert res["expectations"] == [{"id": "S1", "expected": "fixed", "verdict": "fixed", "met": True,
                                    "known": True, "reason": rows["S1"]["reason"]}]
    beh = {b["key"]: b for b in res["behaviour"]}
    drain = next(v for k, v in beh.items() if "drain" in k)
    assert drain["changed"] and drain["baseline"] != drain["candidate"]
    assert [r["status"] for r in res["runs"]] == ["ok", "ok"]
    # junit: one testcase per detector and check, none failing
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names[:len(rows)] == list(rows) and "console" in names
    assert suite.get("failures") == "0"
    md = (out / "summary.md").read_text()
    assert "## mtaudit regress: INCONCLUSIVE" in md and "| S1 | 184 [184-184] | 0 [0-0]" in md
    assert "descriptive only" in md
    page = (out / "report.html").read_text()
    assert 'id="verdicts"' in page and 'id="comparison"' in page and "<img" in page


def test_three_runs_each(tmp_path):
    base = copies(B61, tmp_path / "b", 3, "b61")
    cand = copies(B612, tmp_path / "c", 3, "c612")
    out = tmp_path / "out"
    p = regress("--baseline-bundles", str(base), "--candidate-bundles", str(cand), "--jobs", "2",
                "--out", str(out), "--no-html", "--expect-fix", "S1")
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "result.json").read_text())
    s1 = next(d for d in res["detectors"] if d["id"] == "S1")
    assert s1["verdict"] == "fixed"
    assert (s1["baseline"]["fail_runs"], s1["candidate"]["fail_runs"]) == ("3:3", ":3")
    # 3 vs 3: the exact test's floor is 0.1 and it is reached; said so in the summary
    assert s1["p_permutation"] == pytest.approx(0.1) and res["stats"]["min_attainable_p"] == pytest.approx(0.1)
    assert "cannot reach p < 0.05" in (out / "summary.md").read_text()


def test_swapped_sides_need_more_runs(tmp_path):
    # the other way round, 6.1's S1 and S2 findings appear on the candidate in 3 of 3 runs; two
    # rows at 3+3 cannot reach p <= 0.025 after Benjamini-Hochberg: not a pass and not a guess,
    # "inconclusive, need 5 runs" (exit 3), a junit skip; the unmet fix is still reported
    base = copies(B612, tmp_path / "b", 3, "b612")
    cand = copies(B61, tmp_path / "c", 3, "c61")
    out2 = tmp_path / "out2"
    p = regress("--baseline-bundles", str(base), "--candidate-bundles", str(cand), "--out", str(out2),
                "--no-html", "--jobs", "2")
    assert p.returncode == 3, p.stderr
    res = json.loads((out2 / "result.json").read_text())
    rows = {d["id"]: d for d in res["detectors"]}
    for d in ("S1", "S2"):
        assert rows[d]["verdict"] == "inconclusive", rows[d]["reason"]
        assert "need 5 runs per side" in rows[d]["reason"]
        assert rows[d]["p_up"] == pytest.approx(0.05)
    assert res["failing"] == [] and set(res["undecided"]) >= {"S1", "S2"}
    suite = ET.parse(out2 / "junit.xml").getroot().find("testsuite")
    skipped = [c.get("name") for c in suite.findall("testcase") if c.find("skipped") is not None]
    assert "S1" in skipped and "S2" in skipped and suite.get("failures") == "0"


def test_failed_run_is_kept_and_makes_it_inconclusive(tmp_path):
    cand = copies(B612, tmp_path / "c", 2, "c612")
    m = cand / "c612-r2" / "manifest.json"
    doc = json.loads(m.read_text())
    doc.update(status="failed", failure="timeout in phase scenario after 900s")
    m.unlink()  # hard link: replace, do not write through to the fixture
    m.write_text(json.dumps(doc))
    base = copies(B61, tmp_path / "b", 2, "b61")
    out = tmp_path / "out"
    p = regress("--baseline-bundles", str(base), "--candidate-bundles", str(cand), "--out", str(out),
                "--no-html", "--expect-fix", "S1")
    assert p.returncode == 3, p.stderr
    res = json.loads((out / "result.json").read_text())
    assert res["status"] == "inconclusive"
    bad = [r for r in res["runs"] if r["status"] == "failed"]
    assert [r["run"] for r in bad] == ["c2"] and any("timeout" in x for x in bad[0]["problems"])
    s1 = next(d for d in res["detectors"] if d["id"] == "S1")
    # judged on the clean runs: 1 clean candidate run is too few for a verdict
    assert s1["verdict"] == "inconclusive" and s1["inconclusive_kind"] == "too_few_runs"
    assert "judged on 1 of 2 candidate runs (c2 failed: guest failed: timeout" in s1["reason"]
    assert len(s1["candidate"]["runs"]) == 2 and s1["candidate"]["excluded_runs"] == ["c2"]  # kept
    assert "runs: 3 ok, 1 failed" in (out / "summary.md").read_text()
    # one console WARNING in 1 of 2 candidate runs is compared by kind and count, not "any vs none":
    # no difference proven, and nothing fails CI
    doc["console_problems"] = [{"kind": "WARNING", "line": "WARNING: CPU: 1 PID: 1 at mm/page_alloc.c:1"}]
    m.write_text(json.dumps(doc))
    p = regress("--baseline-bundles", str(base), "--candidate-bundles", str(cand), "--out", str(out),
                "--no-html")
    assert p.returncode == 3, p.stderr
    res = json.loads((out / "result.json").read_text())
    console = next(c for c in res["checks"] if c["id"] == "console")
    assert console["verdict"] == "unchanged" and "WARNING :2 → 1:2" in console["reason"]
    assert res["failing"] == []


@pytest.mark.parametrize("args,needle", [
    (["--baseline-bundles", "/nonexistent/x", "--candidate-bundles", str(B612)], "/nonexistent/x: no such"),
    (["--baseline", "debian:6.1/arm64", "--candidate-bundles", str(B612)], "not both"),
    (["--baseline", "debian:6.1/arm64", "--candidate", "debian:6.12/arm64"], "--scenario is needed"),
    (["--baseline-bundles", str(ROOT / "fixtures")], "--candidate-bundles are both needed"),
    (["--baseline-bundles", str(ROOT / "docs"), "--candidate-bundles", str(B612)], "neither a bundle"),
    (["--baseline", "debian:6.1/arm64", "--candidate", "debian:6.12/arm64", "--scenario", "idle",
      "--jobs", "64"], "host cores"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    p = regress(*args, "--out", str(tmp_path / "o"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr


def test_unknown_expectation_is_bad_input(tmp_path):
    out = tmp_path / "out"
    p = regress("--baseline-bundles", str(B61), "--candidate-bundles", str(B612), "--out", str(out),
                "--no-html", "--expect-fix", "S99")
    assert p.returncode == 2 and "no detector S99" in p.stderr
    res = json.loads((out / "result.json").read_text())   # outputs still written, status error
    assert res["status"] == "error"


def test_race_fix_reported_on_the_source_built_pair(tmp_path):
    # 3 runs each (copies of the committed bundles, as the README's end-to-end run had 3+3):
    # the isolate race S6 fires in every reverted run and never on stock: fixed, expectation met
    base = copies(REVERT, tmp_path / "b", 3, "revert")
    cand = copies(STOCK, tmp_path / "c", 3, "stock")
    out = tmp_path / "out"
    p = regress("--baseline-bundles", str(base), "--candidate-bundles", str(cand), "--out", str(out),
                "--no-html", "--expect-fix", "S6", "--jobs", "2")
    assert p.returncode == 0, p.stderr
    got = json.loads((out / "result.json").read_text())
    assert got["expectations"][0]["met"] and got["status"] == "pass"
    d = next(x for x in got["detectors"] if x["id"] == "S6")
    assert d["severity"] == "critical" and d["verdict"] == "fixed", d["reason"]
    assert d["baseline"]["count"]["min"] > 0 and d["candidate"]["count"]["max"] == 0
    assert d["p_down"] == pytest.approx(0.05)


def _panicking(dest: Path, n: int) -> tuple[Path, list[Path]]:
    cand = copies(B612, dest, n, "c612")
    ms = []
    for i in range(1, n + 1):
        b = cand / f"c612-r{i}"
        (b / "trace.dat").unlink()
        m = b / "manifest.json"
        doc = json.loads(m.read_text())
        doc.update(status="failed", failure="guest kernel reported panic: Kernel panic - not syncing")
        doc["console_problems"] = [{"kind": "panic", "line": "Kernel panic - not syncing: Fatal exception"}]
        m.unlink()
        m.write_text(json.dumps(doc))
        ms.append(m)
    return cand, ms


def test_candidate_that_always_panics_is_a_regression_not_a_harness_failure(tmp_path):
    # 4 runs each: a panic in 4 of 4 candidate runs and none on the baseline reaches
    # p = 1/70 <= 0.025 (the console's panic kind is the only row that can): exit 1
    base = copies(B61, tmp_path / "b", 4, "b61")
    cand, _ = _panicking(tmp_path / "c", 4)
    out = tmp_path / "out"
    p = regress("--baseline-bundles", str(base), "--candidate-bundles", str(cand), "--out", str(out),
                "--no-html", "--jobs", "2")
    assert p.returncode == 1, p.stderr
    res = json.loads((out / "result.json").read_text())
    assert res["failing"] == ["console"] and [r["status"] for r in res["runs"][4:]] == ["failed"] * 4
    console = next(c for c in res["checks"] if c["id"] == "console")
    assert console["verdict"] == "new" and "panic :4 → 4:4" in console["reason"]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None] == ["console"]


def test_one_run_per_side_cannot_gate_and_no_analysis_is_a_harness_failure(tmp_path):
    cand, ms = _panicking(tmp_path / "c", 1)
    out = tmp_path / "out"
    # 1+1 with a panicking candidate: the kernel failed, not the harness, but 1+1 cannot gate
    p = regress("--baseline-bundles", str(B61), "--candidate-bundles", str(cand), "--out", str(out), "--no-html")
    assert p.returncode == 3, p.stderr
    res = json.loads((out / "result.json").read_text())
    assert res["stats"]["gate"] is False and res["failing"] == []
    assert next(c for c in res["checks"] if c["id"] == "console")["verdict"] == "new"   # shown, not gating
    # with no console problem, a side without any analyzable run is a harness failure (exit 2)
    doc = json.loads(ms[0].read_text())
    doc["console_problems"] = []
    doc.update(failure="timeout in phase boot after 300s")
    ms[0].write_text(json.dumps(doc))
    p = regress("--baseline-bundles", str(B61), "--candidate-bundles", str(cand), "--out", str(out), "--no-html")
    assert p.returncode == 2, p.stderr
    assert any("no candidate run could be analyzed" in n for n in json.loads((out / "result.json").read_text())["notes"])


def test_runs_below_two_are_refused(tmp_path):
    p = regress("--baseline", "debian:6.1/arm64", "--candidate", "debian:6.12/arm64", "--scenario", "idle",
                "--runs", "1", "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "--runs must be >= 2" in p.stderr and "Traceback" not in p.stderr


def test_outputs_written_when_the_comparison_fails(tmp_path, monkeypatch, capsys):
    # any bug in the statistics: result.json, junit.xml and summary.md still say what happened
    from analyzer import cli
    from harness import stats as regress_stats

    def broken(*a, **k):
        raise TypeError("unsupported format string passed to NoneType.__format__")
    monkeypatch.setattr(regress_stats, "compare", broken)
    out = tmp_path / "out"
    rc = cli.main(["regress", "--baseline-bundles", str(B61), "--candidate-bundles", str(B612),
                   "--out", str(out), "--no-html", "-q", "--jobs", "2"])
    assert rc == 2
    res = json.loads((out / "result.json").read_text())
    assert res["status"] == "error" and res["exit_code"] == 2
    assert any("the comparison failed (TypeError" in n for n in res["notes"])
    assert [r["run"] for r in res["runs"]] == ["b1", "c1"]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite.get("errors") is not None
    assert "## mtaudit regress: ERROR" in (out / "summary.md").read_text()
