"""False-alarm control of `mtaudit regress` verdicts: each case a review of the old rules found
(a single finding failing CI, range rule alone at 3+3, no multiple-comparison control, a crash
on 3+1 clean runs, exact enumeration blowing up at 10+10, a blinded candidate passing, console
problems compared as "any vs none", a ratio-only judged guard, one failed run making everything
inconclusive, 1+1 runs gating), plus the family-wise p-value machinery itself."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from harness import pvalues as pv
from harness.stats import compare, compare_detector, run_record

ROOT = Path(__file__).resolve().parent.parent


def det(did: str, count: int, checked: int = 100_000, **kw) -> dict:
    return {"id": did, "count": count, "checked": checked, "applies": kw.get("applies", True),
            "severity": kw.get("severity", "high"), "meaning": did, **({"status": kw["status"]} if "status" in kw else {})}


def runs(side: str, table: dict[str, list[int]], problems: dict[int, list[str]] | None = None,
         console: dict[int, list[dict]] | None = None, checked: dict[str, int] | None = None,
         **kw) -> list[dict]:
    n = len(next(iter(table.values())))
    out = []
    for i in range(n):
        dets = [det(d, c[i], (checked or {}).get(d, 100_000), **kw) for d, c in table.items()]
        out.append(run_record(f"{side[0]}{i + 1}", side, (problems or {}).get(i, []),
                              {"detectors": dets, "consistency": {"available": True, "passed": True}},
                              (console or {}).get(i, []), 0))
    return out


def verdicts(res: dict) -> dict[str, str]:
    return {r["id"]: r["verdict"] for r in res["detectors"] + res["checks"]}


# ---------------------------------------------------------------------------------------------
# a single finding, flaky rows, zero-vs-nonzero

def test_single_finding_does_not_fail_ci():
    res = compare(runs("baseline", {"S1": [0, 0, 0]}), runs("candidate", {"S1": [1, 0, 0]}))
    s1 = res["detectors"][0]
    assert s1["verdict"] == "unchanged" and "flaky :3 → 1:3" in s1["reason"]
    assert s1["p_up"] == pytest.approx(0.5) and res["exit_code"] == 0


def test_flaky_one_in_five_is_no_difference_proven():
    res = compare(runs("baseline", {"S1": [0] * 5}), runs("candidate", {"S1": [0, 0, 2, 0, 0]}))
    assert verdicts(res)["S1"] == "unchanged" and "no difference proven (flaky :5 → 1:5" in res["detectors"][0]["reason"]
    assert res["exit_code"] == 0


def test_new_in_every_run_at_five_runs_fails_ci():
    res = compare(runs("baseline", {"S1": [0] * 5}), runs("candidate", {"S1": [3, 5, 2, 4, 6]}))
    s1 = res["detectors"][0]
    assert s1["verdict"] == "new" and s1["p_up"] == pytest.approx(1 / math.comb(10, 5))
    assert res["exit_code"] == 1 and res["failing"] == ["S1"]


def test_new_in_every_run_at_three_runs_says_how_many_runs():
    # one-sided p = 1/20 cannot pass 0.025: not a pass, not a guess
    res = compare(runs("baseline", {"S1": [0, 0, 0]}), runs("candidate", {"S1": [3, 5, 2]}))
    s1 = res["detectors"][0]
    assert s1["verdict"] == "inconclusive" and "inconclusive, need 4 runs per side" in s1["reason"]
    assert res["exit_code"] == 3 and res["undecided"] == ["S1"]


def test_real_fix_is_fixed_at_three_runs():
    res = compare(runs("baseline", {"S1": [184, 150, 201]}), runs("candidate", {"S1": [0, 0, 0]}),
                  expect_fix=["S1"])
    s1 = res["detectors"][0]
    assert s1["verdict"] == "fixed" and s1["p_down"] == pytest.approx(0.05)
    assert res["exit_code"] == 0 and res["expectations"][0]["met"]


def test_fix_at_two_runs_needs_three():
    r = compare_detector("S1", runs("baseline", {"S1": [184, 150]}), runs("candidate", {"S1": [0, 0]}))
    assert r["verdict"] == "inconclusive" and "need 3 runs per side" in r["reason"]


# ---------------------------------------------------------------------------------------------
# both sides fire: no range rule alone; the family is adjusted

def test_separated_ranges_alone_are_not_a_regression():
    # plausible for one Poisson(46) kernel: 0-day's range rule says "up", the t-test does not
    r = compare_detector("S1", runs("baseline", {"S1": [40, 42, 44]}), runs("candidate", {"S1": [47, 50, 52]}))
    assert r["verdict"] == "unchanged" and r["test"] == "welch_log"
    assert "ranges separate up (0-day's rule) but the p-value does not hold" in r["reason"]


def test_multiple_comparison_control_across_detectors():
    b, c = [40, 42, 44], [60, 66, 70]
    alone = compare_detector("S1", runs("baseline", {"S1": b}), runs("candidate", {"S1": c}))
    assert alone["verdict"] == "regressed" and alone["p_up"] <= 0.025
    # the same row among 7 other noisy detectors of identical kernels: BH over the family
    g = np.random.default_rng(3)
    bt = {"S1": b, **{f"N{i}": list(g.poisson(50, 3)) for i in range(7)}}
    ct = {"S1": c, **{f"N{i}": list(g.poisson(50, 3)) for i in range(7)}}
    res = compare(runs("baseline", bt), runs("candidate", ct))
    s1 = res["detectors"][0]
    assert s1["p_up"] == pytest.approx(alone["p_up"])
    ps = [r["p_up"] for r in res["detectors"]]
    assert s1["p_up_bh"] == pytest.approx(float(false_discovery_control(ps)[0]))
    assert s1["p_up_bh"] > 0.025 and s1["verdict"] == "unchanged" and res["exit_code"] == 0
    assert res["stats"]["family"]["tested_up"] == 8 and "Benjamini-Hochberg" in res["stats"]["family"]["method"]


def test_rows_that_cannot_reach_alpha_do_not_dilute_the_family():
    # all-zero rows and a row firing once cannot give p <= 0.025: Tarone leaves them out
    bt = {"S1": [0] * 5, "S2": [0] * 5, "S3": [0] * 5, "S4": [0, 0, 1, 0, 0]}
    ct = {"S1": [4, 3, 5, 6, 2], "S2": [0] * 5, "S3": [0] * 5, "S4": [0] * 5}
    res = compare(runs("baseline", bt), runs("candidate", ct))
    assert res["stats"]["family"]["tested_up"] == 1 and verdicts(res)["S1"] == "new"


def test_adjust_and_tarone():
    assert pv.tarone_k([0.0, 0.0, 0.5, 0.5], 0.05) == 2
    assert pv.tarone_k([0.05, 0.05, 0.05], 0.025) == 1
    assert pv.tarone_k([], 0.05) == 0
    adj, k = pv.adjust([0.01, 0.02, 0.9, None], [0.0, 0.0, 0.0, 0.0], 0.05)
    assert k == 3 and adj[3] is None
    assert adj[:3] == pytest.approx(list(false_discovery_control([0.01, 0.02, 0.9])))
    adj, k = pv.adjust([0.004, 0.5], [0.004, 0.5], 0.025)   # the second row cannot reach alpha
    assert k == 1 and adj == [pytest.approx(0.004), None]


# ---------------------------------------------------------------------------------------------
# the crash and the outputs

def test_three_clean_baseline_runs_against_one_clean_candidate_run_does_not_crash():
    b = runs("baseline", {"S1": [10, 11, 12]})
    c = runs("candidate", {"S1": [13, 14, 15]}, problems={1: ["guest failed: timeout"], 2: ["90 trace events lost"]})
    res = compare(b, c)
    s1 = res["detectors"][0]
    assert s1["verdict"] == "inconclusive" and s1["inconclusive_kind"] == "too_few_runs"
    assert res["exit_code"] == 3 and res["stats"]["min_attainable_p"] is None
    # fewer than 2 runs on a side: descriptive, cannot gate, no crash either
    res = compare(b, runs("candidate", {"S1": [13]}))
    assert res["exit_code"] == 3 and res["stats"]["gate"] is False


def test_summary_and_junit_render_for_every_row_shape():
    from harness.report import junit_xml, summary_md
    b = runs("baseline", {"S1": [10, 11, 12], "S2": [5, 0, 0]})
    c = runs("candidate", {"S1": [13, 14, 15], "S2": [0, 0, 0]}, problems={2: ["guest failed: x"]},
             console={2: [{"kind": "panic", "line": "Kernel panic"}]})
    for cmp in (compare(b, c), compare(b[:1], c[:1])):
        res = {**cmp, "scenario": "s", "baseline": "a", "candidate": "b", "jobs": 1, "notes": [],
               "runs": [{"run": r["label"], "status": "ok" if r["ok"] else "failed", "problems": r["problems"]}
                        for r in b + c], "timing": {"wall_s": 1.0}}
        md = summary_md(res)
        assert "| S1 |" in md and "alpha=0.05" in md
        assert "<testcase" in junit_xml(res)


# ---------------------------------------------------------------------------------------------
# resampling beyond a size: deterministic, bounded

def test_resampling_is_capped_and_seeded():
    assert pv.splits(8, 8).exact and pv.splits(8, 8).mask.shape[0] == math.comb(16, 8)
    sp = pv.splits(20, 20)
    assert not sp.exact and sp.mask.shape == (pv.RESAMPLES, 40)
    assert (sp.mask.sum(axis=1) == 20).all()
    g = np.random.default_rng(7)
    b, c = list(g.poisson(30, 20).astype(float)), list(g.poisson(36, 20).astype(float))
    one, two = pv.permutation(b, c), pv.permutation(b, c)
    assert one == two and not one.exact
    assert 1 / (pv.RESAMPLES + 1) <= one.p_up <= 1
    # close to the exact answer where both exist: 9+9 resampled vs exact enumeration of 48,620
    b9, c9 = b[:9], c[:9]
    est = pv.permutation(b9, c9)
    sums = np.array([sum((b9 + c9)[i] for i in idx) for idx in
                     __import__("itertools").combinations(range(18), 9)])
    exact = float(np.mean(sums >= sum(c9) - 1e-9))
    assert est.p_up == pytest.approx(exact, abs=0.01)


def test_twenty_runs_per_side_compare():
    g = np.random.default_rng(1)
    bt = {f"S{i}": list(g.poisson(50, 20)) for i in range(8)}
    ct = {f"S{i}": list(g.poisson(50, 20)) for i in range(8)}
    ct["S0"] = list(g.poisson(100, 20))
    res = compare(runs("baseline", bt), runs("candidate", ct))
    assert verdicts(res)["S0"] == "regressed" and res["failing"] == ["S0"]


# ---------------------------------------------------------------------------------------------
# blinded candidate

@pytest.mark.parametrize("blind", [{"checked": 0}, {"applies": False}, {"status": "unsupported"}])
def test_blinded_candidate_is_exit_3(blind):
    b = runs("baseline", {"S1": [5, 6, 7]})
    kw = {k: v for k, v in blind.items() if k != "checked"}
    c = runs("candidate", {"S1": [0, 0, 0]}, checked={"S1": blind.get("checked", 100_000)}, **kw)
    res = compare(b, c)
    s1 = res["detectors"][0]
    assert s1["verdict"] == "inconclusive" and s1["inconclusive_kind"] == "blinded", s1["reason"]
    assert "fired on the baseline (3:3)" in s1["reason"]
    assert res["exit_code"] == 3 and res["status"] == "inconclusive" and res["undecided"] == ["S1"]


def test_not_applicable_where_the_baseline_found_nothing_is_a_skip():
    b = runs("baseline", {"S1": [5, 6, 7], "S4": [0, 0, 0]})
    c = [run_record(f"c{i}", "candidate", [], {"detectors": [det("S1", 0), det("S4", 0, applies=False)]})
         for i in range(3)]
    res = compare(b, c)
    s4 = next(r for r in res["detectors"] if r["id"] == "S4")
    assert s4["inconclusive_kind"] == "not_applicable" and res["exit_code"] == 0


# ---------------------------------------------------------------------------------------------
# console problems by kind and count

WARN = {"kind": "WARNING", "line": "WARNING: at mm/page_alloc.c"}
PANIC = {"kind": "panic", "line": "Kernel panic - not syncing"}


def test_console_kinds_and_counts_are_compared():
    # baseline: a WARNING in 1 run; candidate: a panic in 3 of 3 runs. Not "unchanged".
    b = runs("baseline", {"S1": [0, 0, 0]}, console={0: [WARN]}, problems={0: ["console WARNING: x"]})
    c = runs("candidate", {"S1": [0, 0, 0]}, console={i: [PANIC] for i in range(3)},
             problems={i: ["console panic: x"] for i in range(3)})
    res = compare(b, c)
    con = next(r for r in res["checks"] if r["id"] == "console")
    assert con["verdict"] == "inconclusive" and res["exit_code"] == 3
    assert "panic :3 → 3:3 (0 → 3 lines)" in con["reason"] and "WARNING 1:3 → :3" in con["reason"]
    assert "need 5 runs per side" in con["reason"]   # both kinds counted: may need 5 (it does not ask too few)
    # the same at 5+5 runs fails CI
    b = runs("baseline", {"S1": [0] * 5}, console={0: [WARN]}, problems={0: ["console WARNING: x"]})
    c = runs("candidate", {"S1": [0] * 5}, console={i: [PANIC] for i in range(5)},
             problems={i: ["console panic: x"] for i in range(5)})
    res = compare(b, c)
    assert verdicts(res)["console"] == "new" and res["failing"] == ["console"] and res["exit_code"] == 1


def test_console_counts_not_just_presence():
    # a WARNING once per run on both kernels, then twenty per run on the candidate: regressed
    b = runs("baseline", {"S1": [0] * 5}, console={i: [WARN] for i in range(5)})
    c = runs("candidate", {"S1": [0] * 5}, console={i: [WARN] * 20 for i in range(5)})
    assert verdicts(compare(b, c))["console"] == "regressed"
    same = runs("candidate", {"S1": [0] * 5}, console={i: [WARN] for i in range(5)})
    assert verdicts(compare(b, same))["console"] == "unchanged"


def test_console_warning_does_not_spoil_a_runs_counts():
    # the console check judges the WARNING; the run's detector counts still count
    b = runs("baseline", {"S1": [184, 150, 201]})
    c = runs("candidate", {"S1": [0, 0, 0]}, console={1: [WARN]}, problems={1: ["console WARNING: x"]})
    res = compare(b, c, expect_fix=["S1"])
    assert verdicts(res)["S1"] == "fixed" and res["exit_code"] == 0


# ---------------------------------------------------------------------------------------------
# judged-share guard on the expected count

def test_zero_that_the_baseline_rate_does_not_predict_is_no_fix():
    # 1 per 10^6 judged on the baseline; the candidate judged 1.5 x 10^5: all zeros is expected
    # 64 % of the time with no change
    b = runs("baseline", {"S1": [1, 1, 1]}, checked={"S1": 1_000_000})
    c = runs("candidate", {"S1": [0, 0, 0]}, checked={"S1": 150_000})
    res = compare(b, c, expect_fix=["S1"])
    s1 = res["detectors"][0]
    assert s1["verdict"] == "inconclusive" and s1["inconclusive_kind"] == "too_few_events"
    assert "predicts 0.15 findings per run" in s1["reason"]
    assert res["exit_code"] == 3 and res["undecided"] == ["S1"]


# ---------------------------------------------------------------------------------------------
# failed runs: visible, left out, verdict on the clean ones

def test_failed_run_left_out_when_enough_remain():
    b = runs("baseline", {"S1": [184, 150, 201, 170]}, problems={1: ["guest failed: timeout"]})
    c = runs("candidate", {"S1": [0, 0, 0, 0]})
    res = compare(b, c, expect_fix=["S1"])
    s1 = res["detectors"][0]
    assert s1["verdict"] == "fixed" and s1["p_down"] == pytest.approx(1 / math.comb(7, 3))
    assert "judged on 3 of 4 baseline runs (b2 failed: guest failed: timeout)" in s1["reason"]
    assert [x["ok"] for x in s1["baseline"]["runs"]] == [True, False, True, True]
    assert res["exit_code"] == 0


def test_regression_still_found_with_a_failed_run():
    b = runs("baseline", {"S1": [20, 22, 19, 21, 20]})
    c = runs("candidate", {"S1": [60, 58, 63, 61, 59]}, problems={4: ["3 trace events lost"]})
    res = compare(b, c)
    assert verdicts(res)["S1"] == "regressed" and res["exit_code"] == 1


# ---------------------------------------------------------------------------------------------
# fewer than two runs per side

def test_one_run_per_side_cannot_gate():
    res = compare(runs("baseline", {"S1": [0]}), runs("candidate", {"S1": [40]}))
    assert verdicts(res)["S1"] == "new" and "descriptive only" in res["detectors"][0]["reason"]
    assert res["failing"] == [] and res["exit_code"] == 3 and res["stats"]["gate"] is False
    assert "needs >= 2 runs per side to gate" in res["stats"]["gate_note"]


# ---------------------------------------------------------------------------------------------
# the benchmark

def test_bench_verdicts_json():
    p = subprocess.run([sys.executable, "-m", "analyzer.cli", "bench", "verdicts", "--sims", "40",
                        "--runs", "3", "--cost", "--json", "-"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, check=False)
    assert p.returncode in (0, 1), p.stderr
    res = json.loads(p.stdout)
    assert res["runs"] == ["3+3"]
    assert {"runs", "false_alarm_rate", "power_fix", "power_2x"} <= set(res)
    assert set(res["false_alarm_rate"]["3+3"]) == {"poisson", "overdispersed", "rare", "mix8", "max"}
    assert res["power_fix"]["3+3"] == 1.0
    # the previous rule, measured in the same run, fails identical kernels far more often
    assert res["previous_rule"]["3+3"]["false_alarm_rate"]["mix8"] > res["false_alarm_rate"]["3+3"]["mix8"]


def test_detector_without_a_denominator_is_not_blinded_by_its_zero():
    # MW finds things while `checked` stays 0: its candidate zero is a count, not "judged nothing"
    b = runs("baseline", {"MW": [14, 14, 14]}, checked={"MW": 0}, severity="info")
    c = runs("candidate", {"MW": [0, 0, 0]}, checked={"MW": 0}, severity="info")
    mw = compare(b, c)["detectors"][0]
    assert mw["verdict"] == "fixed" and mw["compared"] == "count" and not mw["gating"]
    # a detector with a denominator that judged nothing on the candidate is blinded
    b = runs("baseline", {"S1": [14, 14, 14]})
    c = runs("candidate", {"S1": [0, 0, 0]}, checked={"S1": 0})
    assert compare(b, c)["detectors"][0]["inconclusive_kind"] == "blinded"
