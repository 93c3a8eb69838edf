"""Verdict logic of `mtaudit regress` on synthetic per-run tables: every verdict branch, ties,
zeros, failed runs, p-values and the exit status."""
from __future__ import annotations

import math

import pytest

from harness.stats import (
    compare,
    compare_detector,
    fail_runs,
    min_attainable_p,
    observed_behaviour,
    p_values,
    reproduction,
    run_record,
)


def det(did: str, count: int, checked: int = 100_000, applies: bool = True, severity: str = "high",
        status: str | None = None) -> dict:
    d = {"id": did, "count": count, "checked": checked, "applies": applies, "severity": severity,
         "meaning": f"{did} meaning", "subcounts": {did: count}}
    if status:
        d["status"] = status
    return d


def analysis(dets: list[dict], drain: str = "cached", passed: bool = True, lost: int = 0) -> dict:
    return {"detectors": dets, "kernel": {"drain_prints": drain},
            "consistency": {"available": True, "passed": passed}, "lost_events": {"total": lost}}


def side(name: str, counts: list[int], did: str = "S1", problems: list[list[str]] | None = None,
         **kw) -> list[dict]:
    probs = problems or [[] for _ in counts]
    return [run_record(f"{name[0]}{i + 1}", name, probs[i], analysis([det(did, c, **kw)]))
            for i, c in enumerate(counts)]


def row(b: list[int], c: list[int], **kw) -> dict:
    return compare_detector("S1", side("baseline", b, **kw), side("candidate", c, **kw))


@pytest.mark.parametrize("b,c,verdict", [
    ([184, 150, 201], [0, 0, 0], "fixed"),              # fired in every baseline run, never after
    ([0, 7, 0], [0, 0, 0], "unchanged"),                # flaky baseline (1:3), clean candidate: not proven
    ([0, 0, 0], [0, 0, 0], "unchanged"),                # all-zero ties on both sides
    ([0, 0, 0], [0, 3, 0], "unchanged"),                # once on the candidate: flaky 1:3, p = 0.5
    ([10, 11, 12], [50, 60, 55], "regressed"),          # Welch on log rates, p = 0.002
    ([50, 60, 55], [10, 11, 12], "improved"),
    ([10, 30, 12], [11, 29, 14], "unchanged"),          # overlapping ranges: no difference proven
    ([10, 11, 12], [12, 13, 12], "unchanged"),          # touching ranges, not separated
    ([10], [50], "inconclusive"),                       # both fire, 1 run each: too few runs
])
def test_verdict_branches(b, c, verdict):
    r = row(b, c)
    assert r["verdict"] == verdict, r["reason"]


def test_fixed_row_numbers():
    r = row([184, 150, 201], [0, 0, 0])
    assert r["baseline"]["count"] == {"median": 184.0, "min": 150.0, "max": 201.0, "mean": 535 / 3}
    assert r["baseline"]["fail_runs"] == "3:3" and r["candidate"]["fail_runs"] == ":3"
    assert r["reproduction_pct"] == -100.0
    assert r["baseline"]["rate_per_1e6"]["median"] == pytest.approx(1840.0)
    assert r["compared"] == "rate_per_1e6"
    # 3 vs 3 runs: the best a two-sided exact test can do is 2/C(6,3) = 0.1
    assert r["min_attainable_p"] == pytest.approx(0.1)
    assert r["p_permutation"] == pytest.approx(0.1) and r["p_mannwhitney"] == pytest.approx(0.1)
    assert r["p_fisher"] == pytest.approx(0.1)


def test_regression_with_power_needs_the_p_value():
    # 5 vs 5 runs can reach p < 0.05 (min 0.0079): separated ranges give p = 0.0079 -> regressed
    r = row([10, 11, 12, 10, 11], [50, 60, 55, 52, 58])
    assert r["verdict"] == "regressed" and r["p_permutation"] == pytest.approx(2 / math.comb(10, 5))
    assert "p = " in r["reason"]


def test_nonzero_rows_use_welch_on_log_rates_at_three_runs():
    # a permutation test cannot go below 0.1 at 3+3; Welch's t on log rates can
    r = row([10, 11, 12], [50, 60, 55])
    assert r["verdict"] == "regressed" and r["test"] == "welch_log"
    assert "Welch" in r["reason"] and "ranges separate" in r["reason"]
    assert r["p_up"] < 0.025 and r["p_permutation"] == pytest.approx(0.1)


def test_rates_not_counts_are_compared():
    # same counts, but the candidate judged 10x fewer events: the rate went up 10x
    b = side("baseline", [10, 11, 12], checked=1_000_000)
    c = side("candidate", [10, 11, 12], checked=100_000)
    r = compare_detector("S1", b, c)
    assert r["verdict"] == "regressed"
    assert r["candidate"]["rate_per_1e6"]["median"] == pytest.approx(110.0)


def test_ties_all_zero_p_is_one():
    p = p_values([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    assert p["p_permutation"] == 1.0 and p["p_mannwhitney"] == 1.0 and p["p_fisher"] == 1.0


def test_min_attainable_p():
    assert min_attainable_p(3, 3) == pytest.approx(0.1)
    assert min_attainable_p(4, 4) == pytest.approx(2 / 70)
    assert min_attainable_p(5, 5) == pytest.approx(0.00794, abs=1e-5)
    assert min_attainable_p(1, 3) is None


def test_fail_runs_and_reproduction():
    assert fail_runs([0, 0, 0]) == ":3" and fail_runs([1, 0, 5]) == "2:3"
    assert reproduction([0, 0, 0], [1, 1, 0]) == pytest.approx(200 / 3)


def test_failed_run_is_kept_but_left_out_of_the_statistics():
    b = side("baseline", [184, 150, 201])
    c = side("candidate", [0, 0, 3], problems=[[], [], ["1200 trace events lost"]])
    r = compare_detector("S1", b, c)
    # judged on 3+2 clean runs: a fix would need p = 1/C(5,2) = 0.1 <= 0.05: not shown, need 3 runs
    assert r["verdict"] == "inconclusive" and r["inconclusive_kind"] == "too_few_runs"
    assert "need 3 runs per side" in r["reason"]
    assert "judged on 2 of 3 candidate runs (c3 failed: 1200 trace events lost)" in r["reason"]
    assert r["candidate"]["excluded_runs"] == ["c3"]
    # the failed run stays in the table with its count
    assert [x["count"] for x in r["candidate"]["runs"]] == [0, 0, 3]
    assert [x["ok"] for x in r["candidate"]["runs"]] == [True, True, False]
    assert r["candidate"]["clean_runs"] == 2


def test_not_applicable_and_checked_nothing_and_too_few_events():
    r = compare_detector("S1", side("baseline", [0, 0], applies=False), side("candidate", [0, 0]))
    assert (r["verdict"], r["inconclusive_kind"]) == ("inconclusive", "not_applicable")
    r = compare_detector("S1", side("baseline", [0, 0], checked=0), side("candidate", [0, 0], checked=0))
    assert (r["verdict"], r["inconclusive_kind"]) == ("inconclusive", "not_checked")
    r = compare_detector("S1", side("baseline", [3, 4], checked=500), side("candidate", [0, 0], checked=500),
                         min_events=1000)
    assert (r["verdict"], r["inconclusive_kind"]) == ("inconclusive", "too_few_events")
    # a candidate zero where the baseline rate predicts 1.75 findings per run is no evidence of a fix
    r = compare_detector("S1", side("baseline", [30, 40, 35], checked=100_000),
                         side("candidate", [0, 0, 0], checked=5_000))
    assert (r["verdict"], r["inconclusive_kind"]) == ("inconclusive", "too_few_events")
    r = compare_detector("S1", side("baseline", [30, 40, 35], checked=100_000),
                         side("candidate", [0, 0, 0], checked=40_000))
    assert r["verdict"] == "fixed"
    r = compare_detector("S1", side("baseline", [3, 4], status="not checked"), side("candidate", [0, 0]))
    assert (r["verdict"], r["inconclusive_kind"]) == ("inconclusive", "not_checked")


def test_detector_missing_on_one_side():
    b = side("baseline", [5, 5], did="S6")
    c = side("candidate", [0, 0], did="S1")
    res = compare(b, c)
    s6 = next(r for r in res["detectors"] if r["id"] == "S6")
    assert s6["verdict"] == "inconclusive" and s6["inconclusive_kind"] == "missing"


def test_detector_ids_come_from_the_data():
    b = [run_record(f"b{i}", "baseline", [], analysis([det("S1", 5), det("S9", 200, severity="critical")]))
         for i in range(3)]
    c = [run_record(f"c{i}", "candidate", [], analysis([det("S1", 0), det("S9", 0, severity="critical")]))
         for i in range(3)]
    res = compare(b, c, expect_fix=["S9"])
    assert [r["id"] for r in res["detectors"]] == ["S1", "S9"]
    assert res["expectations"][0]["met"] and res["exit_code"] == 0


def test_exit_codes():
    # regression -> 1
    assert compare(side("baseline", [10, 11, 12]), side("candidate", [50, 60, 55]))["exit_code"] == 1
    # one finding in one candidate run is no regression
    assert compare(side("baseline", [0, 0, 0]), side("candidate", [0, 4, 0]))["exit_code"] == 0
    # fixed and expected -> 0
    res = compare(side("baseline", [5, 6, 7]), side("candidate", [0, 0, 0]), expect_fix=["S1"])
    assert res["exit_code"] == 0 and res["status"] == "pass"
    # expected a fix that did not happen -> 1
    res = compare(side("baseline", [5, 6, 7]), side("candidate", [5, 6, 7]), expect_fix=["S1"])
    assert res["exit_code"] == 1 and res["unmet"] == ["S1"]
    # failed run -> inconclusive -> 3, also for the expectation
    res = compare(side("baseline", [5, 6, 7]), side("candidate", [0, 0, 0], problems=[[], [], ["guest failed: timeout"]]),
                  expect_fix=["S1"])
    assert res["exit_code"] == 3 and res["undecided"] == ["S1"]
    # unknown expectation is flagged for the CLI (exit 2 there)
    res = compare(side("baseline", [5]), side("candidate", [0]), expect_fix=["S7"])
    assert res["unknown_expectations"] == ["S7"]
    # a detector not applicable on either kernel is a skip, not an inconclusive comparison
    b = [run_record(f"b{i}", "baseline", [], analysis([det("S1", 5), det("S4", 0, applies=False)])) for i in range(3)]
    c = [run_record(f"c{i}", "candidate", [], analysis([det("S1", 0), det("S4", 0, applies=False)])) for i in range(3)]
    assert compare(b, c)["exit_code"] == 0


def test_info_detectors_do_not_gate():
    b = [run_record(f"b{i}", "baseline", [], analysis([det("S1", 0), det("MW", 0, severity="info")])) for i in range(5)]
    c = [run_record(f"c{i}", "candidate", [], analysis([det("S1", 0), det("MW", 9, severity="info")])) for i in range(5)]
    res = compare(b, c)
    mw = next(r for r in res["detectors"] if r["id"] == "MW")
    assert mw["verdict"] == "new" and not mw["gating"] and res["exit_code"] == 0


def test_console_problem_new_on_candidate_gates():
    # a BUG in every one of 5 candidate runs, never on the baseline: p = 1/252, exit 1
    b = [run_record(f"b{i}", "baseline", [], analysis([det("S1", 0)]), console=[]) for i in range(5)]
    c = [run_record(f"c{i}", "candidate", ["console BUG: x"], analysis([det("S1", 0)]),
                    console=[{"kind": "BUG", "line": "BUG: Bad page state"}, {"kind": "OOM", "line": "x"}])
         for i in range(5)]
    res = compare(b, c)
    con = next(r for r in res["checks"] if r["id"] == "console")
    assert con["verdict"] == "new" and "BUG :5 → 5:5" in con["reason"] and res["exit_code"] == 1
    assert [k["kind"] for k in con["kinds"]] == ["BUG"]   # OOM is not a console problem kind


def test_consistency_and_lost_checks():
    b = [run_record("b1", "baseline", [], analysis([det("S1", 0)], passed=True))]
    c = [run_record("c1", "candidate", ["5 trace events lost"], analysis([det("S1", 0)], passed=False, lost=5))]
    checks = {r["id"]: r for r in compare(b, c)["checks"]}
    assert checks["consistency"]["verdict"] == "regressed" and not checks["consistency"]["gating"]
    assert checks["lost_events"]["verdict"] == "inconclusive"
    assert [x["value"] for x in checks["lost_events"]["candidate"]["runs"]] == [5]


def test_behaviour_read_generically():
    a = {"behaviour": {"drains": {"expected": "cached", "observed": "cached"},
                       "zone_locked": {"expected": "live", "observed": "live-while-isolated"}},
         "kernel": {"drain_prints": "cached"}}
    beh = observed_behaviour(a)
    assert beh["drains.observed"] == "cached" and beh["zone_locked.observed"] == "live-while-isolated"
    assert "kernel.drain_prints" not in beh
    # counts inside the behaviour section are measurements, not behaviour: not compared
    assert observed_behaviour({"behaviour": {"drain": {"observed": "live", "ground_truth_drains": 5}}}) \
        == {"drain.observed": "live"}
    # older analyses: fall back to kernel.drain_prints
    assert observed_behaviour({"kernel": {"drain_prints": "live"}}) == {"kernel.drain_prints": "live"}
    b = [run_record("b1", "baseline", [], analysis([det("S1", 1)], drain="cached"))]
    c = [run_record("c1", "candidate", [], analysis([det("S1", 0)], drain="live"))]
    beh_rows = compare(b, c)["behaviour"]
    assert beh_rows == [{"key": "kernel.drain_prints", "baseline": ["cached"], "candidate": ["live"],
                         "changed": True, "stable": True}]
