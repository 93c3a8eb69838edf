"""The CMA section of the HTML report: the allocation table, reasons, stories and a latency plot.

Every string from the trace (comm, area names, story text) is escaped with html.escape; the
plot is an inline PNG (the report stays self-contained).
"""
from __future__ import annotations

import base64
import html
from typing import Any

from .text import (
    COLUMNS,
    cells,
    notes,
    outcome,
    rows_for_table,
    same_as,
    split_text,
    summary_line,
)

e = html.escape
_COLOR = {"ok": "#0072B2", "retried": "#E69F00", "failed": "#D55E00", "contig": "#999999"}


def latency_png(cma: dict) -> bytes | None:
    """Latency per allocation over time: ok blue, retried orange, failed red (log scale)."""
    rows = [r for r in cma["allocations"] if r["latency_ns"] is not None]
    if not rows:
        return None
    from matplotlib.figure import Figure

    from ..report.plots import figure_png
    fig = Figure(figsize=(9, 3.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for label in ("ok", "retried", "failed"):
        sel = [r for r in rows if _cls(r) == label]
        if sel:
            ax.scatter([r["ts_start"] / 1e9 for r in sel], [max(r["latency_ns"], 1000) / 1e6 for r in sel],
                       s=[12 + 4 * min(r["retries"], 10) for r in sel], c=_COLOR[label], label=f"{label} ({len(sel)})",
                       edgecolors="none")
    ax.set_yscale("log")
    ax.set_xlabel("time of cma_alloc_start (s)")
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return figure_png(fig)


def _cls(r: dict) -> str:
    if r["ok"] is False:
        return "failed"
    return "retried" if r["retries"] else "ok"


def section(analysis: Any, cma: dict | None = None, p: str = "") -> str:
    """`<section id="cma">`, or "" when the capture has no CMA events."""
    if cma is None:
        from . import explain, has_cma_events
        if not has_cma_events(getattr(analysis, "model", None)):
            return ""
        cma = explain(analysis)
    if not cma["available"]:
        return ""
    out = [f'<section id="{p}cma"><h2>CMA allocations</h2><p>{e(summary_line(cma))}</p>']
    out += [f'<p class="muted">note: {e(n)}</p>' for n in notes(cma)]
    png = latency_png(cma)
    if png:
        out.append('<img class="plot" alt="latency per CMA allocation" src="data:image/png;base64,'
                   + base64.b64encode(png).decode("ascii") + '">')
    rows = rows_for_table(cma, show_all=False)
    out.append("<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>")
    for r in rows:
        cls = ' class="bad"' if r["ok"] is False else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{e(x)}</td>" for x in cells(r)) + "</tr>")
    out.append("</tbody></table>")
    if len(rows) < len(cma["allocations"]):
        out.append(f'<p class="muted">{len(cma["allocations"]) - len(rows)} more successful allocations '
                   "(`mtaudit cma --all` lists them)</p>")
    dup = same_as(rows)
    for r in rows:
        slow = bool(r["latency_ns"]) and r["latency_ns"] >= 10_000_000 and r["time_split"]
        if not r["reason"] and not slow:
            continue
        out.append(f"<h3>#{r['id']} {e(r['area'] or r['kind'])} {r['count']} pages by "
                   f"{e(r['comm'])}[{r['pid']}]: {e(outcome(r))}</h3>")
        if r["id"] in dup:
            out.append(f'<p class="muted">same reason as #{dup[r["id"]]}</p>')
            continue
        if r["reason"]:
            out.append(f"<p>{e(r['reason'])}</p>")
        if slow:
            out.append(f'<p class="muted">time: {e(split_text(r))}</p>')
        for b in r["busy"]:
            if b.get("steps"):
                out.append(f"<details><summary>story of pfn 0x{b['pfn']:x} "
                           f"(<code>{e(b['history'])}</code>)</summary><pre>"
                           + e("\n".join(b["steps"])) + "</pre></details>")
    out.append("</section>")
    return "".join(out)
