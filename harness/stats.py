"""Per-run tables -> per-detector statistics and verdicts for `mtaudit regress`.

Pure functions over plain dicts, so every verdict branch is testable without QEMU.  The run is
the unit (0-day's `fail:runs` table).  What may fail CI is controlled as one family: every
gating detector and every console problem kind of a comparison gives a one-sided p for "more on
the candidate", the family is adjusted with Benjamini-Hochberg (harness/pvalues.py),
and only an adjusted p <= alpha gives "regressed" or "new".  For identical kernels that keeps
the chance of exit 1 at or below alpha (measured: `mtaudit bench verdicts`).

- fixed: fired in every baseline run and in no candidate run, with the one-sided exact p of that
  split (1 / C(nb+nc, nc)) <= alpha: 3+3 runs give 0.05, so a real fix shows at 3+3.  The fix
  does not fail CI; with `--expect-fix` it is the single hypothesis declared in advance.
- new: a finding the baseline never showed, adjusted p <= alpha.  When it fired in every
  candidate run but the runs cannot reach that (3+3 with several testable rows), the row says
  "inconclusive, need N runs" (exit 3) instead of guessing either way.
- regressed/improved: both sides fired; adjusted p <= alpha, and where every run fired also
  0-day's range rule (candidate min above the baseline median, candidate median above the
  baseline max) so one outlier run cannot carry it.
- A zero only counts as evidence when the other side's rate predicts findings there: >= 3 per
  run for "fixed", >= 3 over all runs otherwise.  A candidate that cannot judge what the
  baseline found (not applicable, unsupported, judged nothing) is "blinded": exit 3, not pass.
- Failed runs stay in every table but are left out of the statistics; a row needs >= 2 clean
  runs per side.  With fewer than 2 runs on a side the comparison cannot gate (exit 3) and
  verdicts are descriptive only.
"""
from __future__ import annotations

import math
from statistics import median
from typing import Any

from . import pvalues as pv

VERDICTS = ("fixed", "improved", "unchanged", "regressed", "new", "inconclusive")
FAILING_VERDICTS = ("regressed", "new")
RANGE_RATIO = 1.05          # medians must differ by > 5% (0-day's floor for non-perf stats)
MIN_RUNS = 2                # runs per side below which nothing is tested and nothing gates
MIN_EXPECTED_PER_RUN = 3.0  # "fixed": the baseline rate must predict >= 3 findings per candidate run
MIN_EXPECTED_TOTAL = 3.0    # other zero-vs-nonzero claims: >= 3 over the zero side's runs (P(0) <= 5%)
WELCH_MIN_COUNT = 5         # Welch on log rates only when every run counted at least this many
CONSOLE_KINDS = ("panic", "Oops", "BUG", "WARNING")   # most severe first
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
    bad_console = [p for p in (console or []) if p.get("kind") in CONSOLE_KINDS]
    kinds: dict[str, int] = {}
    for p in bad_console:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    # Run.problems() words console problems "console KIND: line": they are judged by the console
    # check; the run's counts stay usable.  Any other problem (guest failed, lost events, no
    # analysis) leaves the run out of the statistics (`data_ok`), visible in every table.
    data_problems = [p for p in problems if not p.startswith("console ")]
    return {"label": label, "side": side, "ok": not problems, "data_ok": not data_problems,
            "problems": list(problems),
            "analyzed": analysis is not None, "detectors": dets,
            "console": len(bad_console), "console_kinds": sorted(kinds), "console_counts": kinds,
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
    """Two-sided permutation p (difference of means), Mann-Whitney U by the same permutation
    (tie-safe: all-zero samples give p = 1), Fisher's exact test on runs-with-findings."""
    out: dict[str, float | None] = {"p_permutation": None, "p_mannwhitney": None, "p_fisher": None}
    if len(b) >= 2 and len(c) >= 2:
        out["p_permutation"] = pv.permutation(b, c).p_two
        out["p_mannwhitney"] = pv.mannwhitney(b, c)
    if b and c:
        out["p_fisher"] = pv.fisher(sum(1 for v in b if v > 0), len(b), sum(1 for v in c if v > 0), len(c))
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


def row_tests(bc: list[int], cc: list[int], bv: list[float], cv: list[float],
              secondary: bool = True) -> dict[str, Any]:
    """The p-values of one row from its clean runs: counts (bc, cc) and compared values (bv, cv).

    p_up/p_down are one-sided (candidate higher / lower) and feed the verdict; pmin_* is the
    smallest p these pooled runs could give (Tarone's rule).  p_permutation (two-sided),
    Mann-Whitney and Fisher are shown beside them (`secondary=False` skips the last two)."""
    out: dict[str, Any] = {"test": None, "p_up": None, "p_down": None, "pmin_up": None,
                           "pmin_down": None, "p_permutation": None, "p_mannwhitney": None,
                           "p_fisher": None, "resampled": False}
    if len(bv) >= MIN_RUNS and len(cv) >= MIN_RUNS:
        perm = pv.permutation(bv, cv)
        out["p_permutation"], out["resampled"] = perm.p_two, not perm.exact
        if min(bc + cc) >= WELCH_MIN_COUNT and min(bv + cv) > 0:
            up, down, _ = pv.welch_log(bv, cv, [float(x) for x in bc], [float(x) for x in cc])
            out.update(test="welch_log", p_up=up, p_down=down, pmin_up=0.0, pmin_down=0.0)
        else:
            out.update(test="permutation", p_up=perm.p_up, p_down=perm.p_down,
                       pmin_up=perm.pmin_up, pmin_down=perm.pmin_down)
        if secondary:
            out["p_mannwhitney"] = pv.mannwhitney(bv, cv)
    if secondary and bc and cc:
        out["p_fisher"] = pv.fisher(sum(1 for v in bc if v > 0), len(bc), sum(1 for v in cc if v > 0), len(cc))
    return out


# ---------------------------------------------------------------------------------------------
# verdicts

def _blind(ds: list[dict], has_denominator: bool = True) -> tuple[str, str] | None:
    """(kind, why) when a side's runs could not judge this detector at all.

    `checked` 0 with no findings means "judged nothing" only for a detector that has a
    denominator; one that finds things while `checked` stays 0 (MW) has none."""
    if any(d.get("applies") is False for d in ds):
        return "not_applicable", "not applicable"
    st = [str(d.get("status")) for d in ds if d.get("status") and str(d.get("status")) not in ("ok", "checked")]
    if st:
        return "not_checked", st[0]
    chk = [d.get("checked") for d in ds]
    if (has_denominator and chk and all(isinstance(x, (int, float)) and x == 0 for x in chk)
            and all(d["count"] == 0 for d in ds)):
        return "not_checked", "checked nothing"
    return None


def _inconclusive(det: str, base: list[dict], cand: list[dict], min_events: int,
                  need: int) -> tuple[str, str] | None:
    """(kind, reason) why this detector cannot be judged on these clean runs, or None."""
    for side, runs in (("baseline", base), ("candidate", cand)):
        if len(runs) < need:
            return "too_few_runs", (f"{len(runs)} clean {side} run{'s' if len(runs) != 1 else ''}; "
                                    f"a verdict needs >= {need} per side")
        missing = [r["label"] for r in runs if det not in r["detectors"]]
        if missing:
            return "missing", f"not in the {side} analysis ({', '.join(missing)})"
    ds = {"baseline": [r["detectors"][det] for r in base], "candidate": [r["detectors"][det] for r in cand]}
    denom = not any(d["count"] > 0 and d.get("checked") == 0 for v in ds.values() for d in v)
    blind = {s: _blind(v, denom) for s, v in ds.items()}
    fired = {s: any(d["count"] > 0 for d in v) for s, v in ds.items()}
    if blind["baseline"] and blind["candidate"]:
        kind, why = blind["candidate"]
        return kind, f"{why} on either kernel"
    for side, other in (("candidate", "baseline"), ("baseline", "candidate")):
        b = blind[side]
        if b is None:
            continue
        if fired[other]:
            # the other kernel found something this one can no longer see: never a pass
            return "blinded", (f"{b[1]} on the {side} kernel, which fired on the {other} "
                               f"({fail_runs([d['count'] for d in ds[other]])}): cannot be compared")
        return b[0], f"{b[1]} on the {side} kernel"
    for side in ("baseline", "candidate"):
        chk = [d.get("checked") for d in ds[side]]
        if all(isinstance(x, (int, float)) for x in chk) and any(x > 0 for x in chk) and min(chk) < min_events:
            return "too_few_events", f"only {int(min(chk))} relevant events in a {side} run (< {min_events})"
    return None


def _range_rule(b: list[float], c: list[float]) -> str | None:
    """'up' / 'down' when the ranges separate through the medians (0-day), else None."""
    bmin, bmed, bmax = min(b), float(median(b)), max(b)
    cmin, cmed, cmax = min(c), float(median(c)), max(c)
    if cmin > bmed and cmed > bmax and (bmed == 0 or cmed / bmed > RANGE_RATIO):
        return "up"
    if cmax < bmed and cmed < bmin and (cmed == 0 or bmed / cmed > RANGE_RATIO):
        return "down"
    return None


def descriptive_verdict(bc: list[int], cc: list[int]) -> tuple[str, str]:
    """What fewer than MIN_RUNS runs on a side show: a description, never a gate."""
    fb, fc = fail_runs(bc), fail_runs(cc)
    tail = f" ({len(bc)}+{len(cc)} runs: descriptive only, cannot gate)"
    if not any(bc) and not any(cc):
        return "unchanged", "no findings on either side" + tail
    if not any(cc):
        if all(v > 0 for v in bc):
            return "fixed", f"baseline fired in every run ({fb}), candidate in none ({fc})" + tail
        return "improved", f"baseline fired in {fb} runs, candidate in none ({fc})" + tail
    if not any(bc):
        return "new", f"candidate fired in {fc} runs, baseline in none ({fb})" + tail
    return "inconclusive", f"both sides fired; comparing rates needs >= {MIN_RUNS} runs per side" + tail


def _p(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def verdict(bc: list[int], cc: list[int], bv: list[float], cv: list[float], t: dict,
            alpha: float, k_up: int, k_down: int) -> tuple[str, str, str | None]:
    """(verdict, reason, inconclusive kind) from clean runs' counts (bc, cc), compared values
    (bv, cv) and the row's tests `t` with its family-adjusted p (p_up_bh, p_down_bh)."""
    fb, fc = fail_runs(bc), fail_runs(cc)
    nb, nc = len(bc), len(cc)
    up, down = t.get("p_up_bh"), t.get("p_down_bh")
    a2 = alpha / 2   # each direction at alpha/2: two-sided alpha over the family
    fam_up = f"BH over {k_up} gating row{'s' if k_up != 1 else ''}"
    if not any(bc) and not any(cc):
        return "unchanged", "no findings on either side", None
    if all(v > 0 for v in bc) and not any(cc):
        p = t["p_down"]
        if p is not None and p <= alpha:
            return "fixed", (f"fired in every baseline run ({fb}), in no candidate run ({fc}); "
                             f"one-sided exact p = {p:.3g} <= {alpha}"), None
        n = pv.runs_for_pattern(alpha, 1)
        return "inconclusive", (f"fired in every baseline run ({fb}), in no candidate run ({fc}), but "
                                f"{nb}+{nc} runs cannot show a fix (one-sided p = {_p(p)} > {alpha}); "
                                f"inconclusive, need {n} runs per side"), "too_few_runs"
    if all(v > 0 for v in cc) and not any(bc):
        if up is not None and up <= a2:
            return "new", (f"fired in every candidate run ({fc}), never on the baseline ({fb}); "
                           f"p = {_p(t['p_up'])}, {fam_up}: {up:.3g} <= {a2:g}"), None
        # rows that fired anywhere may all become testable with more runs: count them all
        n = pv.runs_for_pattern(a2, max(k_up, int(t.get("_m_fired") or 1)))
        return "inconclusive", (f"fired in every candidate run ({fc}), never on the baseline ({fb}), but "
                                f"{nb}+{nc} runs cannot reach p <= {a2:g} ({fam_up}; one-sided p = "
                                f"{_p(t['p_up'])}); inconclusive, need {n if n else 'more than 50'} "
                                "runs per side"), "too_few_runs"
    if not any(cc):
        if down is not None and down <= a2:
            return "improved", f"baseline fired in {fb} runs, candidate in none ({fc}); adjusted p {down:.3g}", None
        return "unchanged", f"no difference proven (flaky {fb} → {fc}; one-sided p {_p(t['p_down'])})", None
    if not any(bc):
        if up is not None and up <= a2:
            return "new", (f"candidate fired in {fc} runs, baseline in none ({fb}); p = {_p(t['p_up'])}, "
                           f"{fam_up}: {up:.3g} <= {a2:g}"), None
        return "unchanged", f"no difference proven (flaky {fb} → {fc}; one-sided p {_p(t['p_up'])})", None
    rng = _range_rule(bv, cv)
    med_b, med_c = float(median(bv)), float(median(cv))
    how = "Welch t on log rates" if t["test"] == "welch_log" else "permutation"
    # guard: the medians move the same way by > 5 %, so one outlier run cannot carry the mean
    if up is not None and up <= a2 and med_c > RANGE_RATIO * med_b:
        return "regressed", (f"higher on the candidate: {how} p = {_p(t['p_up'])}, {fam_up}: "
                             f"{up:.3g} <= {a2:g}" + ("; ranges separate through the medians" if rng else "")), None
    if down is not None and down <= a2 and med_b > RANGE_RATIO * med_c:
        return "improved", (f"lower on the candidate: {how} p = {_p(t['p_down'])}, adjusted "
                            f"{down:.3g} <= {a2:g}" + ("; ranges separate through the medians" if rng else "")), None
    note = f"; ranges separate {rng} (0-day's rule) but the p-value does not hold" if rng else ""
    return "unchanged", (f"no difference proven ({how}: one-sided p up {_p(t['p_up'])}, down "
                         f"{_p(t['p_down'])}){note}"), None


def _expected_guard(v: str, bc: list[int], cc: list[int], bchk: list[Any], cchk: list[Any]) -> str | None:
    """Why a zero side's zero is no evidence for verdict v, or None (it is, or cannot be told)."""
    if v not in ("fixed", "improved", "new"):
        return None
    zero, zchk, other, ochk, zside, oside = ((cc, cchk, bc, bchk, "candidate", "baseline") if v != "new"
                                             else (bc, bchk, cc, cchk, "baseline", "candidate"))
    if not all(isinstance(x, (int, float)) for x in zchk + ochk) or sum(ochk) <= 0 or any(zero):
        return None
    r = sum(other) / float(sum(ochk))
    if v == "fixed":
        per_run = r * float(median(zchk))
        if per_run < MIN_EXPECTED_PER_RUN:
            return (f"the {zside} judged {median(zchk):.0f} events per run (median): at the {oside} "
                    f"rate that predicts {per_run:.2g} findings per run (< {MIN_EXPECTED_PER_RUN:g}), "
                    f"so its zeros are no evidence of a fix; judge >= "
                    f"{MIN_EXPECTED_PER_RUN / r:.3g} events per run")
        return None
    total = r * float(sum(zchk))
    if total < MIN_EXPECTED_TOTAL:
        return (f"the {zside} judged {sum(zchk):.0f} events over its runs: at the {oside} rate that "
                f"predicts {total:.2g} findings (< {MIN_EXPECTED_TOTAL:g}), so its zeros are no evidence")
    return None


def _clean(r: dict) -> bool:
    """Whether a run's counts enter the statistics (see run_record: console problems do not
    spoil the counts)."""
    return bool(r.get("data_ok", r["ok"]))


def detector_row(det: str, base: list[dict], cand: list[dict], min_events: int = 1,
                 gate: bool = True, secondary: bool = True) -> dict:
    """One row before its verdict: per-run counts/rates of both sides, spread and p-values.

    Failed runs stay in `runs` (marked ok: false) but only clean runs enter the statistics."""
    info: dict[str, Any] = next((r["detectors"][det] for r in base + cand if det in r["detectors"]), {})
    row: dict[str, Any] = {"id": det, "kind": "detector", "meaning": info.get("meaning", ""),
                           "severity": info.get("severity"),
                           "gating": str(info.get("severity") or "") != "info"}
    sides: dict[str, dict] = {}
    priv: dict[str, Any] = {}
    for side, runs in (("baseline", base), ("candidate", cand)):
        per = []
        for r in runs:
            d = r["detectors"].get(det)
            per.append({"run": r["label"], "ok": r["ok"], "clean": _clean(r),
                        "count": d["count"] if d else None,
                        "checked": d.get("checked") if d else None,
                        "rate_per_1e6": rate(d["count"], d.get("checked")) if d else None,
                        "applies": d.get("applies") if d else None,
                        "subcounts": d.get("subcounts", {}) if d else {}})
        clean = [x for x in per if x["clean"] and x["count"] is not None]
        counts = [x["count"] for x in clean]
        rates = [x["rate_per_1e6"] for x in clean]
        sides[side] = {"runs": per, "clean_runs": len(clean), "count": spread(counts),
                       "rate_per_1e6": spread([v for v in rates if v is not None]),
                       "fail_runs": fail_runs(counts),
                       "excluded_runs": [x["run"] for x in per if not x["clean"]]}
        priv[side] = (counts, rates if clean and all(v is not None for v in rates) else None,
                      [x["checked"] for x in clean])
    (bc, br, bchk), (cc, cr, cchk) = priv["baseline"], priv["candidate"]
    use_rates = br is not None and cr is not None
    bv, cv = (br, cr) if use_rates else ([float(x) for x in bc], [float(x) for x in cc])
    row.update(sides)
    row["compared"] = "rate_per_1e6" if use_rates else "count"
    row["reproduction_pct"] = reproduction(bc, cc)
    row.update(row_tests(bc, cc, bv, cv, secondary))
    row["min_attainable_p"] = min_attainable_p(len(bv), len(cv))
    clean_b = [r for r in base if _clean(r)]
    clean_c = [r for r in cand if _clean(r)]
    why = _inconclusive(det, clean_b, clean_c, min_events, MIN_RUNS if gate else 1)
    if why:
        row["p_up"] = row["p_down"] = None   # not part of the family
    mb, mc = row["baseline"]["count"]["mean"], row["candidate"]["count"]["mean"]
    row["change_pct"] = (100.0 * (mc - mb) / mb) if mb and mc is not None else None
    row["_priv"] = (bc, cc, bv, cv, bchk, cchk, why, gate, base, cand)
    return row


def _excluded_note(base: list[dict], cand: list[dict]) -> str:
    parts = []
    for side, runs in (("baseline", base), ("candidate", cand)):
        bad = [r for r in runs if not _clean(r)]
        if bad:
            first = bad[0]["problems"][0] if bad[0]["problems"] else "?"
            parts.append(f"{len(runs) - len(bad)} of {len(runs)} {side} runs "
                         f"({', '.join(r['label'] for r in bad)} failed: {first})")
    return ("; judged on " + " and ".join(parts)) if parts else ""


def finish_row(row: dict, alpha: float, k_up: int, k_down: int) -> dict:
    """Give a row from detector_row (with p_up_bh / p_down_bh set) its verdict and reason."""
    bc, cc, bv, cv, bchk, cchk, why, gate, base, cand = row.pop("_priv")
    row.setdefault("p_up_bh", None)
    row.setdefault("p_down_bh", None)
    if why:
        row["verdict"], row["reason"], row["inconclusive_kind"] = "inconclusive", why[1], why[0]
        if why[0] == "too_few_runs":
            row["reason"] += _excluded_note(base, cand)
        return row
    if gate:
        v, reason, kind = verdict(bc, cc, bv, cv, row, alpha, k_up, k_down)
    else:
        v, reason = descriptive_verdict(bc, cc)
        kind = "too_few_runs" if v == "inconclusive" else None
    g = _expected_guard(v, bc, cc, bchk, cchk)
    if g:
        v, reason, kind = "inconclusive", g, "too_few_events"
    row["verdict"], row["reason"], row["inconclusive_kind"] = v, reason + _excluded_note(base, cand), kind
    return row


def compare_detector(det: str, base: list[dict], cand: list[dict], alpha: float = 0.05,
                     min_events: int = 1) -> dict:
    """One verdict row judged on its own (a family of one row)."""
    gate = len(base) >= MIN_RUNS and len(cand) >= MIN_RUNS
    row = detector_row(det, base, cand, min_events, gate)
    _adjust([row], alpha)
    k_up, k_down = row.pop("_k_up"), row.pop("_k_down")
    return finish_row(row, alpha, k_up, k_down)


def _adjust(rows: list[dict], alpha: float) -> tuple[int, int]:
    """Benjamini-Hochberg over `rows` (each with p_up/pmin_up/p_down/pmin_down), both directions."""
    up, k_up = pv.adjust([r["p_up"] for r in rows], [r["pmin_up"] for r in rows], alpha / 2)
    down, k_down = pv.adjust([r["p_down"] for r in rows], [r["pmin_down"] for r in rows], alpha / 2)
    for r, u, d in zip(rows, up, down):
        r["p_up_bh"], r["p_down_bh"], r["_k_up"], r["_k_down"] = u, d, k_up, k_down
    return k_up, k_down


# ---------------------------------------------------------------------------------------------
# checks beside the detectors: console, lost events, consistency, observed behaviour

def _per_run(runs: list[dict], key: str) -> list[dict]:
    return [{"run": r["label"], "ok": r["ok"], "value": r.get(key)} for r in runs]


def _console_runs(runs: list[dict]) -> list[dict]:
    return [{"run": r["label"], "ok": r["ok"], "value": r["console"],
             "kinds": dict(r.get("console_counts") or {})} for r in runs]


def console_kind_rows(base: list[dict], cand: list[dict], gate: bool, secondary: bool = True) -> list[dict]:
    """One family member per console problem kind: per-run counts of that kind, every run
    (a console problem is what makes a run fail, so failed runs are the evidence here)."""
    out = []
    for kind in CONSOLE_KINDS:
        bk = [int((r.get("console_counts") or {}).get(kind, 0)) for r in base]
        ck = [int((r.get("console_counts") or {}).get(kind, 0)) for r in cand]
        if not any(bk) and not any(ck):
            continue
        t = row_tests(bk, ck, [float(x) for x in bk], [float(x) for x in ck], secondary)
        out.append({"id": f"console:{kind}", "kind": kind, "baseline": bk, "candidate": ck,
                    "fail_runs": f"{fail_runs(bk)} → {fail_runs(ck)}", "gate": gate, **t})
    return out


def console_row(base: list[dict], cand: list[dict], kinds: list[dict], alpha: float,
                k_up: int, k_down: int) -> dict:
    """The console check: each kind judged like a detector; the row takes the worst verdict."""
    order = ("new", "regressed", "inconclusive", "fixed", "improved", "unchanged")
    parts, worst = [], "unchanged"
    for k in kinds:
        if k["gate"]:
            v, why, _ = verdict(k["baseline"], k["candidate"], [float(x) for x in k["baseline"]],
                                [float(x) for x in k["candidate"]], k, alpha, k_up, k_down)
        else:
            v, why = descriptive_verdict(k["baseline"], k["candidate"])
        k["verdict"], k["reason"] = v, why
        parts.append(f"{k['kind']} {k['fail_runs']} ({sum(k['baseline'])} → {sum(k['candidate'])} lines): {v}")
        if order.index(v) < order.index(worst):
            worst = v
    lead = next((k for k in kinds if k["verdict"] == worst), None)
    reason = "; ".join(parts) if parts else "no console problems on either side"
    if lead is not None and worst != "unchanged":
        reason += f". {lead['kind']}: {lead['reason']}"
    bc, cc = [r["console"] for r in base], [r["console"] for r in cand]
    return {"id": "console", "kind": "check", "gating": True,
            "meaning": "kernel panic / Oops / BUG / WARNING on the console or in the final dmesg, "
                       "compared per kind and count",
            "baseline": {"runs": _console_runs(base), "fail_runs": fail_runs(bc)},
            "candidate": {"runs": _console_runs(cand), "fail_runs": fail_runs(cc)},
            "kinds": kinds, "verdict": worst, "reason": reason,
            "inconclusive_kind": "too_few_runs" if worst == "inconclusive" else None}


def compare_checks(base: list[dict], cand: list[dict], alpha: float = 0.05,
                   console_kinds: list[dict] | None = None, k_up: int = 0, k_down: int = 0) -> list[dict]:
    gate = len(base) >= MIN_RUNS and len(cand) >= MIN_RUNS
    if console_kinds is None:   # judged on its own (a family of the console kinds alone)
        console_kinds = console_kind_rows(base, cand, gate)
        if gate:
            k_up, k_down = _adjust(console_kinds, alpha)
        for k in console_kinds:
            k.pop("_k_up", None)
            k.pop("_k_down", None)
    rows = [console_row(base, cand, console_kinds, alpha, k_up, k_down)]
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

STATS_TEST = ("gate: one-sided p for 'higher on the candidate' per gating detector and console "
              "kind (exact permutation test of per-run values, all splits up to "
              f"{pv.CAP_SPLITS} and {pv.RESAMPLES} seeded random splits beyond; Welch t on log "
              f"rates when every run counted >= {WELCH_MIN_COUNT}), Benjamini-Hochberg "
              "(scipy.stats.false_discovery_control) over the rows that can reach alpha "
              "(Tarone); fixed = fired in every baseline run and no candidate run with one-sided "
              "exact p <= alpha; two-sided permutation, Mann-Whitney U and Fisher p shown beside")


def compare(base: list[dict], cand: list[dict], expect_fix: list[str] | None = None,
            alpha: float = 0.05, min_events: int = 1, secondary: bool = True) -> dict:
    """Every detector found in any run (first-seen order), the checks, behaviour, expectations
    and the exit status: 1 regression or unmet expectation, 3 inconclusive, 0 pass."""
    ids: list[str] = []
    for r in base + cand:
        for d in r["detectors"]:
            if d not in ids:
                ids.append(d)
    gate = len(base) >= MIN_RUNS and len(cand) >= MIN_RUNS
    rows = [detector_row(d, base, cand, min_events, gate, secondary) for d in ids]
    kinds = console_kind_rows(base, cand, gate, secondary)
    family = [r for r in rows if r["gating"]] + kinds
    k_up, k_down = _adjust(family, alpha) if gate else (0, 0)
    fired = sum(1 for r in family if r.get("p_up") is not None and (r.get("pmin_up") or 0) < 1)
    for r in family:
        r["_m_fired"] = fired
    for r in rows:
        if not r["gating"]:
            _adjust([r], alpha)   # information only: judged on its own
    for r in rows:
        finish_row(r, alpha, k_up if r["gating"] else r.get("_k_up", 0),
                   k_down if r["gating"] else r.get("_k_down", 0))
    checks = compare_checks(base, cand, alpha, kinds, k_up, k_down)
    for r in rows + kinds:
        for k in ("_k_up", "_k_down", "_m_fired"):
            r.pop(k, None)
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
    undecided = [r["id"] for r in rows + checks if r["gating"] and r["verdict"] == "inconclusive"
                 and r.get("inconclusive_kind") not in SKIP_KINDS]
    undecided += [x["id"] for x in expectations if x["verdict"] == "inconclusive"]
    conclusive = [r for r in rows if r["gating"] and r["verdict"] != "inconclusive"]
    nb, nc = len(base), len(cand)
    cb, ccl = sum(_clean(r) for r in base), sum(_clean(r) for r in cand)
    gate_note = None
    if not gate:
        gate_note = (f"{nb}+{nc} runs: a comparison needs >= {MIN_RUNS} runs per side to gate (3 to "
                     "show a fix); verdicts are descriptive only")
        failing, unmet = [], []
    if failing or unmet:
        status, exit_code = "fail", 1
    elif undecided or not conclusive or not gate:
        status, exit_code = "inconclusive", 3
    else:
        status, exit_code = "pass", 0
    bad_expect = [x["id"] for x in expectations if not x["known"]]
    return {"detectors": rows, "checks": checks, "behaviour": compare_behaviour(base, cand),
            "expectations": expectations, "failing": failing, "unmet": unmet,
            "undecided": sorted(set(undecided)), "unknown_expectations": bad_expect,
            "status": status, "exit_code": exit_code,
            "stats": {"alpha": alpha, "test": STATS_TEST, "gate": gate, "gate_note": gate_note,
                      "family": {"rows": len(family), "tested_up": k_up, "tested_down": k_down,
                                 "reachable_up": sum(1 for r in family if r.get("p_up_bh") is not None),
                                 "method": "Benjamini-Hochberg (scipy.stats.false_discovery_control)"
                                           " over gating detectors and console kinds; rows that "
                                           "cannot reach alpha are not counted (Tarone)",
                                 "false_alarm": f"identical kernels fail (exit 1) in <= {alpha:g} of "
                                                "comparisons (BH = Simes' test when nothing changed)"},
                      "runs": {"baseline": nb, "candidate": nc,
                               "baseline_clean": cb, "candidate_clean": ccl},
                      "min_attainable_p": min_attainable_p(cb, ccl),
                      "min_events": min_events}}


def failed_comparison(base: list[dict], cand: list[dict], error: str, alpha: float = 0.05,
                      min_events: int = 1) -> dict:
    """The result when the comparison itself raised: same shape, status error, exit 2, so the
    outputs (result.json, junit.xml, summary.md) are still written and say what went wrong."""
    cb, ccl = sum(_clean(r) for r in base), sum(_clean(r) for r in cand)
    return {"detectors": [], "checks": [], "behaviour": [], "expectations": [], "failing": [],
            "unmet": [], "undecided": [], "unknown_expectations": [], "status": "error",
            "exit_code": 2, "error": error,
            "stats": {"alpha": alpha, "test": STATS_TEST, "gate": False,
                      "gate_note": f"comparison failed: {error}", "family": None,
                      "runs": {"baseline": len(base), "candidate": len(cand),
                               "baseline_clean": cb, "candidate_clean": ccl},
                      "min_attainable_p": min_attainable_p(cb, ccl), "min_events": min_events}}
