"""report.html for `mtaudit regress`: verdict table and a per-run heatmap above the analyzer's
side-by-side comparison of one representative run per kernel (render_comparison)."""
from __future__ import annotations

import html
import math
from pathlib import Path

COLOURS = {"regressed": "#f8d0d0", "new": "#f8d0d0", "fixed": "#cdeccd", "improved": "#e2f4e2",
           "inconclusive": "#fff2c0", "unchanged": "#ffffff"}


def _e(v) -> str:
    return html.escape(str(v))


def representative(runs, side: str):
    """The clean run with the median total findings (first analyzed run if none is clean)."""
    rs = [r for r in runs if r.side == side and r.analysis is not None]
    clean = [r for r in rs if r.ok] or rs
    if not clean:
        return None
    tot = sorted(clean, key=lambda r: (sum(int(d.get("count") or 0) for d in r.analysis.get("detectors", [])),
                                       r.index))
    return tot[(len(tot) - 1) // 2]


def heat(v: float | None, vmax: float) -> str:
    """Background for a per-run rate cell: white (0) to deep red (the table's maximum), log scale."""
    if v is None:
        return "#eeeeee"
    if v <= 0 or vmax <= 0:
        return "#ffffff"
    x = math.log1p(v) / math.log1p(vmax)
    g = int(255 - 180 * x)
    return f"rgb(255,{g},{g})"


def verdict_section(res: dict) -> str:
    rows = []
    for d in res["detectors"]:
        b, c = d["baseline"], d["candidate"]

        def cell(s):
            m = s["count"]
            return "-" if m["median"] is None else f"{m['median']:.0f} [{m['min']:.0f}-{m['max']:.0f}]"
        p = "-" if d["p_permutation"] is None else f"{d['p_permutation']:.3g}"
        rows.append(f'<tr style="background:{COLOURS.get(d["verdict"], "#fff")}"><td>{_e(d["id"])}</td>'
                    f"<td>{_e(d.get('severity') or '')}</td><td>{cell(b)}</td><td>{cell(c)}</td>"
                    f"<td>{_e(b['fail_runs'])} → {_e(c['fail_runs'])}</td><td>{p}</td>"
                    f"<td><b>{_e(d['verdict'])}</b></td><td>{_e(d['reason'])}</td></tr>")
    for c in res["checks"]:
        bv = " ".join(_e(x["value"]) for x in c["baseline"]["runs"])
        cv = " ".join(_e(x["value"]) for x in c["candidate"]["runs"])
        rows.append(f'<tr style="background:{COLOURS.get(c["verdict"], "#fff")}"><td>{_e(c["id"])}</td>'
                    f"<td>check</td><td>{bv}</td><td>{cv}</td><td></td><td></td>"
                    f"<td><b>{_e(c['verdict'])}</b></td><td>{_e(c['reason'])}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("detector", "severity", "baseline median [min-max]",
                                             "candidate median [min-max]", "fail:runs", "p (perm)",
                                             "verdict", "why"))
    beh = ""
    if res["behaviour"]:
        beh = ("<h3>Observed kernel behaviour</h3><table><thead><tr><th>what</th><th>baseline</th>"
               "<th>candidate</th><th></th></tr></thead><tbody>"
               + "".join(f"<tr><td>{_e(b['key'])}</td><td>{_e(', '.join(b['baseline']))}</td>"
                         f"<td>{_e(', '.join(b['candidate']))}</td><td>{'changed' if b['changed'] else 'same'}</td></tr>"
                         for b in res["behaviour"]) + "</tbody></table>")
    st = res["stats"]
    foot = (f"<p class=\"muted\">alpha={st['alpha']}; {_e(st['test'])}; smallest attainable p with "
            f"{st['runs']['baseline_clean']}+{st['runs']['candidate_clean']} clean runs: "
            f"{'-' if st['min_attainable_p'] is None else format(st['min_attainable_p'], '.3g')}</p>")
    return (f'<section id="verdicts"><h2>Verdicts: {_e(res["status"].upper())} (exit {res["exit_code"]})</h2>'
            f"<p>baseline <code>{_e(res['baseline'])}</code> vs candidate <code>{_e(res['candidate'])}</code>, "
            f"scenario <code>{_e(res['scenario'])}</code></p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{foot}{beh}"
            + heatmap_section(res) + "</section>")


def heatmap_section(res: dict) -> str:
    """Detector x run grid of findings per 10^6 judged events; failed runs marked with '!'."""
    runs = [(x["run"], x["ok"]) for x in (res["detectors"][0]["baseline"]["runs"]
                                          + res["detectors"][0]["candidate"]["runs"])] if res["detectors"] else []
    if not runs:
        return ""
    vmax = max([x["rate_per_1e6"] or 0 for d in res["detectors"] for s in ("baseline", "candidate")
                for x in d[s]["runs"]] + [0])
    head = "".join(f"<th>{_e(r)}{'' if ok else '!'}</th>" for r, ok in runs)
    body = []
    for d in res["detectors"]:
        cells = []
        for x in d["baseline"]["runs"] + d["candidate"]["runs"]:
            r = x["rate_per_1e6"]
            txt = "-" if x["count"] is None else f"{x['count']}" + ("" if r is None else f"<br><small>{r:.0f}/1e6</small>")
            cells.append(f'<td class="num" style="background:{heat(r, vmax)}">{txt}</td>')
        body.append(f"<tr><td>{_e(d['id'])}</td>{''.join(cells)}</tr>")
    return ("<h3>Per-run findings (count, rate per 10<sup>6</sup> judged events)</h3>"
            f"<table><thead><tr><th>detector</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def write_html(path: Path, res: dict, runs, quiet: bool = False) -> str | None:
    """Analyze one representative run per side in-process and write the combined page."""
    from analyzer.analysis import analyze
    from analyzer.capture import load_capture
    from analyzer.report.html import Section, render_comparison, write_text
    rb, rc = representative(runs, "baseline"), representative(runs, "candidate")
    if rb is None or rc is None:
        return None
    an = []
    for r in (rb, rc):
        trace, meta = load_capture(str(r.bundle), {})
        an.append(analyze(trace, meta))
    page = render_comparison(an[0], an[1], (f"baseline {rb.label}", f"candidate {rc.label}"),
                             lead=[Section("verdicts", "Verdicts", verdict_section(res))])
    write_text(str(path), page)
    return path.name
