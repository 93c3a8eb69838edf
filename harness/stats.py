"""Per-run tables -> per-detector statistics and verdicts for `mtaudit regress`.

Pure functions over plain dicts, so every verdict branch is testable without QEMU.  The rules
follow what kernel CI readers already trust: the run is the unit (0-day's `fail:runs` table),
nonzero counts are compared by 0-day's range rule (candidate min above the baseline median and
candidate median above the baseline max), and a p-value from an exact permutation test is shown
next to it with the smallest p the design can reach (3 vs 3 runs: 0.1, so never below 0.05).
"""
from __future__ import annotations

import math
import warnings
from statistics import median
from typing import Any

VERDICTS = ("fixed", "improved", "unchanged", "regressed", "new", "inconclusive")
FAILING_VERDICTS = ("regressed", "new")
RANGE_RATIO = 1.05        # medians must differ by > 5% (0-day's floor for non-perf stats)
MIN_RUNS_NONZERO = 3      # 0-day compares a numeric stat only with >= 3 runs on a side
MIN_JUDGED_SHARE = 0.1    # a side with no findings must have judged >= 10% of the other side's events
# inconclusive for these reasons means "nothing to compare here" (a SKIP), not "evidence missing"
SKIP_KINDS = ("not_applicable", "not_checked")


# ---------------------------------------------------------------------------------------------
# one run's analysis JSON -> the row the statistics read

def run_record(label: str, side: str, problems: list[str], analysis: dict | None,
               console: list[dict] | None = None, lost: int | None = None) -> dict:
    """What the statistics need from one run; detector ids come from the data, never a list."""
    dets: dict[str, dict] = {}
    behaviour: dict[str, Any] = {}
    consistency = None
    if analysis:
        for d in analysis.get("detectors") or []:
            if isinstance(d, dict) and "id" in d:
                dets[str(d["id"])] = {
                    "count": int(d.get("count") or 0),
                    "checked": d.get("checked"),
                    "applies": d.get("applies", True),
                    "status": d.get("status"),
                    "severity": d.get("severity"),
                    "meaning": d.get("meaning", ""),
                    "subcounts": dict(d.get("subcounts") or {}),
                }
        c = analysis.get("consistency") or {}
        consistency = c.get("passed") if c.get("available", True) else None
        behaviour = observed_behaviour(analysis)
        if lost is None:
            lost = int((analysis.get("lost_events") or {}).get("total") or 0)
    bad_console = [p for p in (console or []) if p.get("kind") in ("panic", "BUG", "WARNING", "Oops")]
    return {"label": label, "side": side, "ok": not problems, "problems": list(problems),
            "analyzed": analysis is not None, "detectors": dets,
            "console": len(bad_console), "console_kinds": sorted({p["kind"] for p in bad_console}),
            "lost": int(lost or 0), "consistency": consistency, "behaviour": behaviour}


def observed_behaviour(analysis: dict) -> dict[str, Any]:
    """Flat `key: value` view of what the analysis measured about the kernel's behaviour.

    Reads the `behaviour` section generically (nested dicts flattened with dots, scalars only)
    and falls back to `kernel.drain_prints` when an older analysis has no such section."""
    out: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, (str, bool)) or v is None:   # what it does, not how often it did it
            out[prefix] = v

    beh = analysis.get("behaviour")
    if isinstance(beh, dict):
        walk("", beh)
    elif isinstance(beh, list):
        for i, item in enumerate(beh):
            if isinstance(item, dict):
                key = str(item.get("what") or item.get("id") or item.get("name") or i)
                walk(key, {k: v for k, v in item.items() if k not in ("what", "id", "name")})
    kern = analysis.get("kernel") or {}
    if "drain_prints" in kern and not out:
        out["kernel.drain_prints"] = kern["drain_prints"]
    return out


# ---------------------------------------------------------------------------------------------
# statistics

def min_attainable_p(n1: int, n2: int) -> float | None:
    """Smallest two-sided p an exact rank/permutation test can give for n1 vs n2 runs."""
    if n1 < 2 or n2 < 2:
        return None
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def p_values(b: list[float], c: list[float]) -> dict[str, float | None]:
    """Exact two-sided permutation p (difference of means), Mann-Whitney U by exact permutation
    (tie-safe: all-zero samples give p = 1), and Fisher's exact test on runs-with-findings."""
    from scipy import stats
    import numpy as np
    out: dict[str, float | None] = {"p_permutation": None, "p_mannwhitney": None, "p_fisher": None}
    if len(b) >= 2 and len(c) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = stats.permutation_test((np.asarray(b, float), np.asarray(c, float)),
                                       lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                                       vectorized=True, n_resamples=np.inf, alternative="two-sided")
            out["p_permutation"] = float(min(1.0, r.pvalue))
            u = stats.mannwhitneyu(b, c, alternative="two-sided",
                                   method=stats.PermutationMethod(n_resamples=np.inf))
            out["p_mannwhitney"] = float(min(1.0, u.pvalue))
    if b and c:
        fb, fc = sum(1 for v in b if v > 0), sum(1 for v in c if v > 0)
        out["p_fisher"] = float(stats.fisher_exact([[fb, len(b) - fb], [fc, len(c) - fc]]).pvalue)
    return out


def spread(v: list[float]) -> dict[str, float | None]:
    if not v:
        return {"median": None, "min": None, "max": None, "mean": None}
    return {"median": float(median(v)), "min": float(min(v)), "max": float(max(v)),
            "mean": float(sum(v) / len(v))}


def fail_runs(counts: list[int]) -> str:
    """0-day's `F:R` cell: runs where the detector fired : runs; blank F when it never fired."""
    f = sum(1 for c in counts if c > 0)
    return f"{f if f else ''}:{len(counts)}"


def reproduction(b: list[int], c: list[int]) -> float | None:
    """0-day's %reproduction: 100 x (F_cand/R_cand - F_base/R_base)."""
    if not b or not c:
        return None
    return 100.0 * (sum(1 for v in c if v > 0) / len(c) - sum(1 for v in b if v > 0) / len(b))


def rate(count: int, checked: Any) -> float | None:
    """Findings per 10^6 events the detector judged (its `checked`); None when it judged none."""
    if not isinstance(checked, (int, float)) or checked <= 0:
        return None
    return count * 1e6 / float(checked)


# ---------------------------------------------------------------------------------------------
# verdicts

def _inconclusive(det: str, base: list[dict], cand: list[dict], min_events: int) -> tuple[str, str] | None:
    """(kind, reason) why this detector cannot be judged on these runs, or None."""
    for side, runs in (("baseline", base), ("candidate", cand)):
        ok = [r for r in runs if r["ok"]]
        failed = [r for r in runs if not r["ok"]]
        if failed:
            return "failed_runs", (f"{len(failed)} of {len(runs)} {side} runs failed "
                                   f"({failed[0]['label']}: {failed[0]['problems'][0] if failed[0]['problems'] else '?'})")
        if not ok:
            return "too_few_runs", f"no {side} runs"
        missing = [r["label"] for r in ok if det not in r["detectors"]]
        if missing:
            return "missing", f"not in the {side} analysis ({', '.join(missing)})"
    judged = {}
    for side, runs in (("baseline", base), ("candidate", cand)):
        ds = [r["detectors"][det] for r in runs]
        if any(d.get("applies") is False for d in ds):
            return "not_applicable", f"not applicable on the {side} kernel"
        st = [str(d.get("status")) for d in ds if d.get("status") and str(d.get("status")) not in ("ok", "checked")]
        if st:
            return "not_checked", f"{st[0]} on {side}"
        chk = [d.get("checked") for d in ds]
        if all(isinstance(x, (int, float)) for x in chk):
            if all(x == 0 for x in chk) and all(d["count"] == 0 for d in ds):
                return "not_checked", f"checked nothing on {side}"
            if any(x > 0 for x in chk) and min(chk) < min_events:
                return "too_few_events", (f"only {int(min(chk))} relevant events in a {side} run "
                                          f"(< {min_events})")
            if any(x > 0 for x in chk):
                judged[side] = (median(chk), all(d["count"] == 0 for d in ds))
    if len(judged) == 2:
        # a clean zero is evidence only if that side judged a comparable number of events
        for side, other in (("baseline", "candidate"), ("candidate", "baseline")):
            (mine, zero), (theirs, _) = judged[side], judged[other]
            if zero and mine < MIN_JUDGED_SHARE * theirs:
                return "too_few_events", (f"{side} judged {mine:.0f} events per run (median) vs "
                                          f"{theirs:.0f}: its zero is no evidence")
    return None


def _range_rule(b: list[float], c: list[float]) -> str | None:
    """'up' / 'down' when the ranges separate through the medians (0-day), else None."""
    sb, sc = spread(b), spread(c)
    if sc["min"] > sb["median"] and sc["median"] > sb["max"]:
        if sb["median"] == 0 or sc["median"] / sb["median"] > RANGE_RATIO:
            return "up"
    if sc["max"] < sb["median"] and sc["median"] < sb["min"]:
        if sc["median"] == 0 or sb["median"] / sc["median"] > RANGE_RATIO:
            return "down"
    return None


def verdict(bc: list[int], cc: list[int], bv: list[float], cv: list[float],
            p: float | None, alpha: float) -> tuple[str, str]:
    """Verdict from clean runs' counts (bc, cc) and compared values (rates or counts: bv, cv)."""
    fb, fc = fail_runs(bc), fail_runs(cc)
    if not any(bc) and not any(cc):
        return "unchanged", "no findings on either side"
    if not any(cc):
        if all(v > 0 for v in bc):
            return "fixed", f"baseline fired in every run ({fb}), candidate in none ({fc})"
        return "improved", f"baseline fired in {fb} runs, candidate in none ({fc})"
    if not any(bc):
        return "new", f"candidate fired in {fc} runs, baseline in none ({fb})"
    if max(len(bv), len(cv)) < MIN_RUNS_NONZERO:
        return "inconclusive", (f"both sides fired; comparing nonzero rates needs >= {MIN_RUNS_NONZERO} "
                                f"runs on a side ({len(bv)} vs {len(cv)})")
    direction = _range_rule(bv, cv)
    pmin = min_attainable_p(len(bv), len(cv))
    powered = pmin is not None and pmin < alpha
    if direction and (not powered or (p is not None and p < alpha)):
        how = (f"p={p:.3g} < {alpha}" if powered else
               f"range rule only: {len(bv)} vs {len(cv)} runs cannot reach p < {alpha} (min p {pmin:.3g})")
        return ("regressed" if direction == "up" else "improved"), f"ranges separate through the medians; {how}"
    return "unchanged", "no difference proven" + (f" (p={p:.3g})" if p is not None else "")


def compare_detector(det: str, base: list[dict], cand: list[dict], alpha: float = 0.05,
                     min_events: int = 1) -> dict:
    """One verdict row: per-run counts/rates of both sides, spread, tests, verdict and why."""
    info: dict[str, Any] = next((r["detectors"][det] for r in base + cand if det in r["detectors"]), {})
    row: dict[str, Any] = {"id": det, "kind": "detector", "meaning": info.get("meaning", ""),
                           "severity": info.get("severity"),
                           "gating": str(info.get("severity") or "") != "info"}
    sides: dict[str, dict[str, Any]] = {}
    for side, runs in (("baseline", base), ("candidate", cand)):
        per = []
        for r in runs:
            d = r["detectors"].get(det)
            per.append({"run": r["label"], "ok": r["ok"], "count": d["count"] if d else None,
                        "checked": d.get("checked") if d else None,
                        "rate_per_1e6": rate(d["count"], d.get("checked")) if d else None,
                        "applies": d.get("applies") if d else None,
                        "subcounts": d.get("subcounts", {}) if d else {}})
        clean = [x for x in per if x["ok"] and x["count"] is not None]
        counts = [x["count"] for x in clean]
        rates = [x["rate_per_1e6"] for x in clean]
        sides[side] = {"runs": per, "clean_runs": len(clean), "count": spread(counts),
                       "rate_per_1e6": spread([v for v in rates if v is not None]),
                       "fail_runs": fail_runs(counts), "_counts": counts,
                       "_rates": rates if clean and all(v is not None for v in rates) else None}
    bc, cc = sides["baseline"].pop("_counts"), sides["candidate"].pop("_counts")
    br, cr = sides["baseline"].pop("_rates"), sides["candidate"].pop("_rates")
    use_rates = br is not None and cr is not None
    bv, cv = (br, cr) if use_rates else ([float(x) for x in bc], [float(x) for x in cc])
    row.update(sides)
    row["compared"] = "rate_per_1e6" if use_rates else "count"
    row["reproduction_pct"] = reproduction(bc, cc)
    row.update(p_values(bv, cv) if bv and cv else {"p_permutation": None, "p_mannwhitney": None, "p_fisher": None})
    row["min_attainable_p"] = min_attainable_p(len(bv), len(cv))
    why = _inconclusive(det, base, cand, min_events)
    if why:
        row["verdict"], row["reason"], row["inconclusive_kind"] = "inconclusive", why[1], why[0]
    else:
        v, reason = verdict(bc, cc, bv, cv, row["p_permutation"], alpha)
        row["verdict"], row["reason"] = v, reason
        row["inconclusive_kind"] = "too_few_runs" if v == "inconclusive" else None
    mb, mc = row["baseline"]["count"]["mean"], row["candidate"]["count"]["mean"]
    row["change_pct"] = (100.0 * (mc - mb) / mb) if mb and mc is not None else None
    return row


# ---------------------------------------------------------------------------------------------
# checks beside the detectors: console, lost events, consistency, observed behaviour

def _per_run(runs: list[dict], key: str) -> list[dict]:
    return [{"run": r["label"], "ok": r["ok"], "value": r.get(key)} for r in runs]


def compare_checks(base: list[dict], cand: list[dict]) -> list[dict]:
    rows = []
    bc, cc = [r["console"] for r in base], [r["console"] for r in cand]
    if not any(cc):
        v = "fixed" if bc and all(bc) else "improved" if any(bc) else "unchanged"
    else:
        v = "new" if not any(bc) else "unchanged"
    kinds = sorted({k for r in cand for k in r["console_kinds"]})
    rows.append({"id": "console", "kind": "check", "gating": True,
                 "meaning": "kernel panic / BUG / WARNING / Oops on the console or in the final dmesg",
                 "baseline": {"runs": _per_run(base, "console"), "fail_runs": fail_runs(bc)},
                 "candidate": {"runs": _per_run(cand, "console"), "fail_runs": fail_runs(cc)},
                 "verdict": v, "reason": (f"candidate: {', '.join(kinds)}" if kinds else
                                          "no console problems on the candidate")})
    bl, cl = [r["lost"] for r in base], [r["lost"] for r in cand]
    rows.append({"id": "lost_events", "kind": "check", "gating": False,
                 "meaning": "trace events the ring buffer dropped (runs with losses are not clean)",
                 "baseline": {"runs": _per_run(base, "lost"), "fail_runs": fail_runs(bl)},
                 "candidate": {"runs": _per_run(cand, "lost"), "fail_runs": fail_runs(cl)},
                 "verdict": "inconclusive" if any(bl) or any(cl) else "unchanged",
                 "reason": "events lost: those runs are not clean" if any(bl) or any(cl) else "no events lost"})
    bk = [r["consistency"] for r in base if r["analyzed"]]
    ck = [r["consistency"] for r in cand if r["analyzed"]]
    fb, fk = sum(1 for x in bk if x is False), sum(1 for x in ck if x is False)
    if not bk or not ck or any(x is None for x in bk + ck):
        cv, why = "inconclusive", "consistency check not available in every run"
    elif fk and not fb:
        cv, why = "regressed", f"pagetypeinfo disagrees with the model in {fk}:{len(ck)} candidate runs"
    elif fb and not fk:
        cv, why = "improved", f"baseline disagreed in {fb}:{len(bk)} runs, candidate never"
    else:
        cv, why = "unchanged", f"failed in {fb}:{len(bk)} baseline and {fk}:{len(ck)} candidate runs"
    rows.append({"id": "consistency", "kind": "check", "gating": False,
                 "meaning": "reconstructed pageblock types vs the kernel's own /proc/pagetypeinfo",
                 "baseline": {"runs": _per_run(base, "consistency")},
                 "candidate": {"runs": _per_run(cand, "consistency")}, "verdict": cv, "reason": why})
    return rows


def compare_behaviour(base: list[dict], cand: list[dict]) -> list[dict]:
    """Per behaviour key: the values seen on each side and whether they differ."""
    keys = sorted({k for r in base + cand for k in r["behaviour"]})
    out = []
    for k in keys:
        bvals = sorted({str(r["behaviour"].get(k)) for r in base if r["analyzed"]})
        cvals = sorted({str(r["behaviour"].get(k)) for r in cand if r["analyzed"]})
        out.append({"key": k, "baseline": bvals, "candidate": cvals,
                    "changed": bvals != cvals,
                    "stable": len(bvals) <= 1 and len(cvals) <= 1})
    return out


# ---------------------------------------------------------------------------------------------
# whole comparison

def compare(base: list[dict], cand: list[dict], expect_fix: list[str] | None = None,
            alpha: float = 0.05, min_events: int = 1) -> dict:
    """Every detector found in any run (first-seen order), the checks, behaviour, expectations
    and the exit status: 1 regression or unmet expectation, 3 inconclusive, 0 pass."""
    ids: list[str] = []
    for r in base + cand:
        for d in r["detectors"]:
            if d not in ids:
                ids.append(d)
    rows = [compare_detector(d, base, cand, alpha, min_events) for d in ids]
    checks = compare_checks(base, cand)
    expectations = []
    for e in expect_fix or []:
        row = next((r for r in rows if r["id"] == e), None)
        if row is None:
            expectations.append({"id": e, "expected": "fixed", "verdict": None, "met": False,
                                 "known": False, "reason": f"no detector {e} in the analysis "
                                                           f"(detectors: {', '.join(ids) or 'none'})"})
            continue
        met = row["verdict"] == "fixed"
        expectations.append({"id": e, "expected": "fixed", "verdict": row["verdict"], "met": met,
                             "known": True, "reason": row["reason"]})
    failing = [r["id"] for r in rows + checks if r["gating"] and r["verdict"] in FAILING_VERDICTS]
    unmet = [x["id"] for x in expectations if x["known"] and not x["met"] and x["verdict"] != "inconclusive"]
    undecided = [r["id"] for r in rows if r["gating"] and r["verdict"] == "inconclusive"
                 and r.get("inconclusive_kind") not in SKIP_KINDS]
    undecided += [x["id"] for x in expectations if x["verdict"] == "inconclusive"]
    conclusive = [r for r in rows if r["gating"] and r["verdict"] != "inconclusive"]
    if failing or unmet:
        status, exit_code = "fail", 1
    elif undecided or not conclusive:
        status, exit_code = "inconclusive", 3
    else:
        status, exit_code = "pass", 0
    bad_expect = [x["id"] for x in expectations if not x["known"]]
    nb, nc = len(base), len(cand)
    return {"detectors": rows, "checks": checks, "behaviour": compare_behaviour(base, cand),
            "expectations": expectations, "failing": failing, "unmet": unmet,
            "undecided": sorted(set(undecided)), "unknown_expectations": bad_expect,
            "status": status, "exit_code": exit_code,
            "stats": {"alpha": alpha, "test": "exact two-sided permutation test of the difference "
                                               "of per-run means (scipy.stats.permutation_test, all "
                                               "splits); Mann-Whitney U by exact permutation and "
                                               "Fisher's exact test on fail:runs shown beside it",
                      "runs": {"baseline": nb, "candidate": nc,
                               "baseline_clean": sum(r["ok"] for r in base),
                               "candidate_clean": sum(r["ok"] for r in cand)},
                      "min_attainable_p": min_attainable_p(sum(r["ok"] for r in base),
                                                           sum(r["ok"] for r in cand)),
                      "min_events": min_events}}
