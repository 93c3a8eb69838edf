"""`mtaudit regress` outputs: result.json, summary.md, junit.xml, report.html, the terminal table.

Shaped after what kernel CI readers already know: 0-day's `fail:runs  %reproduction  fail:runs`
columns, "no difference proven" wording, KCIDB-like statuses (FAIL / PASS / SKIP / ERROR), one
JUnit test case per detector.  Every file is written atomically.
"""
from __future__ import annotations

import json
import platform
import os
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr, escape

from analyzer.atomic import atomic_file

RESULT_SCHEMA = 1
PHASES = ("boot_s", "scenario_s", "extract_s")
KCIDB = {"fixed": "PASS", "improved": "PASS", "unchanged": "PASS", "regressed": "FAIL",
         "new": "FAIL", "inconclusive": "SKIP"}


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}" if abs(v) < 1e6 else f"{v:.3g}"
    return str(v)


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.2g}"


def _p(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


# ---------------------------------------------------------------------------------------------
# timing

def phase_times(runs, phases: dict, wall: float) -> dict:
    """Per-run phase seconds plus totals; fetch/build is per kernel, once before the runs."""
    per = []
    for r in runs:
        t = r.timings
        guest = t.get("total_s")
        collect = t.get("collect_s")
        host = round(collect - guest, 2) if collect is not None and guest is not None else None
        per.append({"run": r.label, **{k: t.get(k) for k in PHASES}, "guest_total_s": guest,
                    "host_overhead_s": host, "collect_s": collect, "analyze_s": t.get("analyze_s")})
    tot = {k: round(sum(x[k] or 0 for x in per), 2) for k in
           (*PHASES, "host_overhead_s", "analyze_s")}
    return {"fetch_build_s": phases.get("fetch_s") or {}, "fetch_wall_s": phases.get("fetch_wall_s"),
            "runs_wall_s": phases.get("runs_wall_s"), "sum_over_runs": tot, "runs": per,
            "wall_s": round(wall, 2), "guest_smp": phases.get("smp"), "smp_note": phases.get("smp_note")}


# ---------------------------------------------------------------------------------------------
# result.json

def result_doc(mode: str, specs: dict, scenario: str, args, runs, cmp: dict, timing: dict,
               notes: list[str], out: Path) -> dict:
    def rel(p):
        if p is None:
            return None
        try:
            return os.path.relpath(p, out)
        except ValueError:
            return str(p)
    run_rows = []
    for r in runs:
        m = r.manifest
        run_rows.append({"run": r.label, "side": r.side, "index": r.index, "bundle": rel(r.bundle),
                         "analysis": f"analysis/{r.label}.json" if r.analysis is not None else None,
                         "kernel_release": (m.get("kernel") or {}).get("release")
                         or ((r.analysis or {}).get("capture") or {}).get("kernel_release"),
                         "status": "ok" if r.ok else "failed", "problems": r.problems(),
                         "analysis_exit": r.analysis_exit, "guest_failure": m.get("failure"),
                         "started": m.get("started"), "timings": dict(r.timings),
                         "worker": r.worker})
    return {"schema": "mtaudit-regress", "schema_version": RESULT_SCHEMA, "mode": mode,
            "baseline": specs["baseline"], "candidate": specs["candidate"], "scenario": scenario,
            "runs_requested": getattr(args, "runs", None) if mode == "specs" else None,
            "jobs": args.jobs, "scheduler": getattr(args, "scheduler", None),
            "expect_fix": list(args.expect_fix),
            "host": {"cores": os.cpu_count(), "machine": platform.machine()},
            "status": cmp["status"], "exit_code": cmp["exit_code"], "notes": notes,
            "stats": cmp["stats"], "detectors": cmp["detectors"], "checks": cmp["checks"],
            "behaviour": cmp["behaviour"], "expectations": cmp["expectations"],
            "failing": cmp["failing"], "unmet": cmp["unmet"], "undecided": cmp["undecided"],
            "runs": run_rows, "timing": timing}


def write_result(out: Path, result: dict) -> None:
    with atomic_file(str(out / "result.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
        f.write("\n")


# ---------------------------------------------------------------------------------------------
# summary.md (GitHub step summary; also readable as plain text)

def _cell(side: dict, key: str = "count") -> str:
    s = side[key]
    if s["median"] is None:
        return "-"
    nd = 0 if key == "count" else 1
    return f"{s['median']:.{nd}f} [{s['min']:.{nd}f}-{s['max']:.{nd}f}]"


def _verdict_md(v: str) -> str:
    return f"**{v.upper()}**" if v in ("regressed", "new") else v


def summary_md(res: dict) -> str:
    st = res["stats"]
    runs = st["runs"]
    head = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE", "error": "ERROR"}[res["status"]]
    L = [f"## mtaudit regress: {head}", "",
         f"scenario/runs/jobs: `{res['scenario']}` / {runs['baseline']}+{runs['candidate']} "
         f"({runs['baseline_clean']}+{runs['candidate_clean']} clean) / {res['jobs']}", "",
         f"- baseline: `{res['baseline']}`", f"- candidate: `{res['candidate']}`", "",
         "| detector | baseline median [min-max] | candidate median [min-max] | rate/1e6 base → cand "
         "| fail:runs | %repro | p (perm) | p up (BH) | verdict | why |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for d in res["detectors"]:
        b, c = d["baseline"], d["candidate"]
        rates = f"{_f(b['rate_per_1e6']['median'])} → {_f(c['rate_per_1e6']['median'])}"
        rep = "-" if d["reproduction_pct"] is None else f"{d['reproduction_pct']:+.0f}%"
        name = d["id"] + ("" if d["gating"] else " (info)")
        L.append(f"| {name} | {_cell(b)} | {_cell(c)} | {rates} | {b['fail_runs']} → {c['fail_runs']} "
                 f"| {rep} | {_p(d['p_permutation'])} | {_p(d.get('p_up'))} ({_p(d.get('p_up_bh'))}) "
                 f"| {_verdict_md(d['verdict'])} | {d['reason']} |")
    L += ["", "| check | baseline per run | candidate per run | verdict | why |", "|---|---|---|---|---|"]
    for c in res["checks"]:
        bv = " ".join(_f(x["value"]) for x in c["baseline"]["runs"])
        cv = " ".join(_f(x["value"]) for x in c["candidate"]["runs"])
        L.append(f"| {c['id']} | {bv} | {cv} | {_verdict_md(c['verdict'])} | {c['reason']} |")
    if res["behaviour"]:
        L += ["", "| observed behaviour | baseline | candidate | |", "|---|---|---|---|"]
        for b in res["behaviour"]:
            L.append(f"| {b['key']} | {', '.join(b['baseline'])} | {', '.join(b['candidate'])} | "
                     f"{'changed' if b['changed'] else 'same'} |")
    for e in res["expectations"]:
        L.append(f"\n- expect fix {e['id']}: {'met' if e['met'] else 'NOT MET'} "
                 f"(verdict {e['verdict']}; {e['reason']})")
    failed = [r for r in res["runs"] if r["status"] != "ok"]
    L += ["", f"runs: {len(res['runs']) - len(failed)} ok, {len(failed)} failed"
          + "".join(f"\n- {r['run']}: {'; '.join(r['problems'])}" for r in failed)]
    pmin = st["min_attainable_p"]
    fam = st.get("family") or {}
    L += ["", f"alpha={st['alpha']} two-sided; {st['test']}; "
              + (f"family: {fam['rows']} gating rows, {fam.get('reachable_up', 0)} of them able to "
                 f"reach p <= {st['alpha'] / 2:g} with these runs (BH over K = {fam['tested_up']}); "
                 f"{fam['false_alarm']}; " if fam else "")
              + (f"with {runs['baseline_clean']}+{runs['candidate_clean']} clean runs the smallest "
                 f"two-sided permutation p is {pmin:.3g}" if pmin is not None else
                 "fewer than 2 clean runs on a side: no test possible")
              + (f" (a permutation test cannot reach p < {st['alpha']} with these runs: a new finding "
                 "says 'inconclusive, need N runs'; a fix in every run is still shown, one-sided "
                 f"p = 1/C(n1+n2,n1))" if pmin is not None and pmin >= st["alpha"] else "") + "."]

    for n in res["notes"]:
        L.append(f"\nnote: {n}")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------
# junit.xml: one testcase per detector and check; failure = regression or unmet expectation

def junit_xml(res: dict) -> str:
    cases = []
    nfail = nskip = nerr = 0
    expect = {e["id"]: e for e in res["expectations"]}
    suite = f"mtaudit.regress.{res['scenario']}"
    for row in res["detectors"] + res["checks"]:
        name, v = row["id"], row["verdict"]
        text = (f"{name}: {v}: {row['reason']}\nbaseline fail:runs {row['baseline'].get('fail_runs', '-')}"
                f", candidate fail:runs {row['candidate'].get('fail_runs', '-')}")
        e = expect.get(name)
        body = ""
        if row.get("gating") and v in ("regressed", "new"):
            nfail += 1
            msg = f"{v}: {row['reason']}"
            body = f'<failure message={quoteattr(msg)}>{escape(text)}</failure>'
        elif e and not e["met"] and v != "inconclusive":
            nfail += 1
            msg = f"expected fixed, got {v}: {row['reason']}"
            body = f'<failure message={quoteattr(msg)}>{escape(text)}</failure>'
        elif v == "inconclusive":
            nskip += 1
            body = f"<skipped message={quoteattr(row['reason'])}/>"
        cases.append(f'  <testcase classname={quoteattr(suite)} name={quoteattr(name)} time="0">'
                     f"{body}<system-out>{escape(text)}</system-out></testcase>")
    for e in res["expectations"]:
        if not e["known"]:
            nerr += 1
            ename, ereason = "expect-fix " + e["id"], e["reason"]
            cases.append(f"  <testcase classname={quoteattr(suite)} name={quoteattr(ename)}>"
                         f"<error message={quoteattr(ereason)}/></testcase>")
    failed = [r for r in res["runs"] if r["status"] != "ok"]
    for r in failed:
        nerr += 1
        rmsg = "; ".join(r["problems"])
        cases.append(f"  <testcase classname={quoteattr(suite + '.runs')} name={quoteattr(r['run'])}>"
                     f"<error message={quoteattr(rmsg)}/></testcase>")
    t = res["timing"].get("wall_s") or 0
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n'
            f'<testsuite name={quoteattr(suite)} tests="{len(cases)}" failures="{nfail}" '
            f'errors="{nerr}" skipped="{nskip}" time="{t}">\n' + "\n".join(cases)
            + "\n</testsuite>\n</testsuites>\n")


# ---------------------------------------------------------------------------------------------
# terminal

def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
    con = Console(stderr=True)
    if not con.is_terminal:
        con = Console(stderr=True, width=140)
    st = res["stats"]["runs"]
    t = Table(title=f"mtaudit regress {res['scenario']}: {res['baseline']} (baseline) vs "
                    f"{res['candidate']} (candidate), {st['baseline']}+{st['candidate']} runs")
    for col in ("detector", "baseline counts", "candidate counts", "rate/1e6 b → c", "fail:runs",
                "p perm", "verdict"):
        t.add_column(col, no_wrap=col in ("detector", "verdict", "fail:runs", "rate/1e6 b → c"))
    colour = {"regressed": "bold red", "new": "bold red", "fixed": "bold green", "improved": "green",
              "inconclusive": "yellow", "unchanged": ""}
    for d in res["detectors"]:
        b = " ".join(_f(x["count"]) + ("" if x["ok"] else "!") for x in d["baseline"]["runs"])
        c = " ".join(_f(x["count"]) + ("" if x["ok"] else "!") for x in d["candidate"]["runs"])
        r = f"{_rate(d['baseline']['rate_per_1e6']['median'])} → {_rate(d['candidate']['rate_per_1e6']['median'])}"
        t.add_row(d["id"] + ("" if d["gating"] else " (info)"), b, c, r,
                  f"{d['baseline']['fail_runs']} → {d['candidate']['fail_runs']}",
                  _p(d["p_permutation"]), Text(d["verdict"], style=colour.get(d["verdict"], "")))
    for c in res["checks"]:
        b = " ".join(_f(x["value"]) for x in c["baseline"]["runs"])
        cc = " ".join(_f(x["value"]) for x in c["candidate"]["runs"])
        t.add_row(c["id"], b, cc, "", "", "", Text(c["verdict"], style=colour.get(c["verdict"], "")))
    con.print(t)
    for d in res["detectors"]:
        if d["gating"] and d["verdict"] != "unchanged":
            con.print(f"  {d['id']} {d['verdict']}: {d['reason']}")
    for b in res["behaviour"]:
        if b["changed"]:
            con.print(f"behaviour {b['key']}: {', '.join(b['baseline'])} → {', '.join(b['candidate'])}")
    for e in res["expectations"]:
        con.print(f"expect fix {e['id']}: {'met' if e['met'] else 'NOT MET'} ({e['verdict']})")
    tm = res["timing"]
    con.print(f"status: [bold]{res['status'].upper()}[/] (exit {res['exit_code']}); "
              f"wall {tm['wall_s']:.0f}s; outputs: summary.md junit.xml result.json"
              + ("" if not res.get("html") else " report.html"))


# ---------------------------------------------------------------------------------------------
# writing everything

def write_outputs(out: Path, res: dict, runs, html: bool = True, quiet: bool = False) -> None:
    with atomic_file(str(out / "summary.md"), "w") as f:
        f.write(summary_md(res))
    with atomic_file(str(out / "junit.xml"), "w") as f:
        f.write(junit_xml(res))
    res["html"] = None
    if html:
        from .html import write_html
        try:
            res["html"] = write_html(out / "report.html", res, runs, quiet=quiet)
        except Exception as e:  # the verdict must not depend on the HTML; say why it is missing
            res["notes"].append(f"report.html not written: {type(e).__name__}: {e}")
    write_result(out, res)
