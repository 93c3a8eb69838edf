"""Console and Markdown renderings of the CMA explanations (analyzer/cma/__init__.py).

Everything that comes from the trace (comm names, CMA area names) is untrusted: the console
output goes through rich Text objects (never parsed as markup), the Markdown output through
`md_escape` (HTML-escaped and with Markdown's punctuation backslash-escaped), so a comm like
`<script>` or `[x](javascript:...)` stays inert text.
"""
from __future__ import annotations

import html
import re
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

TOP = 20
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def md_escape(s: Any) -> str:
    """Text safe inside a Markdown table cell or paragraph."""
    t = html.escape(str(s), quote=True)           # < > & " ' become entities: no raw HTML
    t = _MD_SPECIAL.sub(r"\\\1", t).replace("\n", " ").replace("\r", " ")
    return "\\" + t if t[:1] in ("-", "=") else t   # a leading - would start a list


def outcome(r: dict) -> str:
    if r["ok"] is True:
        return "ok"
    if r["ok"] is False:
        name = r.get("error_name") or "?"
        return f"-{name}" + ("" if r.get("error_traced") else " (inferred)") if name != "?" else "failed"
    return "unfinished" if not r.get("complete", True) and r["kind"] == "cma" else "unknown"


def ms(ns: int | None) -> str:
    return "" if ns is None else f"{ns / 1e6:.3f}"


def isolated(r: dict) -> str:
    a = [x for x in r["attempts"]]
    if not a:
        return ""
    lo, hi = a[-1]["isolated"]
    return f"[0x{lo:x},0x{hi:x})"


def test_result(r: dict) -> str:
    tests = [t for a in r["attempts"] for t in a["tests"]]
    if not tests:
        return "not traced" if r["kind"] == "cma" and r["attempts"] else ""
    bad = [t for t in tests if not t["ok"]]
    if bad:
        return f"{len(bad)} fail, busy 0x{bad[0]['fin_pfn']:x}"
    return f"{len(tests)} ok"


def migrate(r: dict) -> str:
    m = [x for a in r["attempts"] for x in a["migrate"]]
    if not m:
        return ""
    return f"{sum(x['nr_migrated'] for x in m)}/{sum(x['nr_reclaimed'] for x in m)}"


def rows_for_table(cma: dict, show_all: bool) -> list[dict]:
    rows = cma["allocations"]
    interesting = [r for r in rows if r["ok"] is False or r["retries"]]
    if show_all:
        return rows
    slow = [r for r in rows if r not in interesting][:max(0, TOP - len(interesting))]
    return interesting + slow


COLUMNS = ("#", "kind", "area", "task", "count", "align", "outcome", "latency ms", "retries", "isolated",
           "isolation test", "migr/recl")


def cells(r: dict) -> list[str]:
    return [str(r["id"]), r["kind"], r["area"] or "-", f"{r['comm']}[{r['pid']}]", str(r["count"]),
            str(r["align"]) if r["align"] >= 0 else "", outcome(r), ms(r["latency_ns"]), str(r["retries"]),
            isolated(r), test_result(r), migrate(r)]


_TIMES = re.compile(r"\d+\.\d+(?: s| ms)|\(\d+%\)")


def same_as(rows: list[dict]) -> dict[int, int]:
    """id -> the id of an earlier shown row with the same reason apart from timestamps: repeated
    failures (a pool filling up) are told once."""
    seen: dict[str, int] = {}
    out: dict[int, int] = {}
    for r in rows:
        if not r["reason"]:
            continue
        key = r["kind"] + r["area"] + _TIMES.sub("", r["reason"].split("; then the same task ran")[0])
        if key in seen:
            out[r["id"]] = seen[key]
        else:
            seen[key] = r["id"]
    return out


def summary_line(cma: dict) -> str:
    s = cma["summary"]
    return (f"{s['calls']} cma_alloc call(s): {s['failed']} failed, {s['retried']} retried "
            f"({s['busy_retries']} busy retries, {s['failed_tests']} failed isolation tests); "
            f"{s['contig_calls']} alloc_contig_range call(s) without CMA")


def notes(cma: dict) -> list[str]:
    """What the reader should know about the records themselves."""
    out = []
    if cma.get("migrate_counts_reordered"):
        out.append("mm_alloc_contig_migrate_range_info: this kernel passes the caller's migratetype where the "
                   "format names nr_migrated (4 on every cma_alloc record); the counters are shown in the order "
                   "the kernel passes them")
    return out


def render_console(cma: dict, console: Console, show_all: bool = False) -> None:
    console.print(Text(summary_line(cma)))
    for n in notes(cma):
        console.print(Text("note: " + n))
    t = Table(show_lines=False)
    for c in COLUMNS:
        t.add_column(c, overflow="fold")
    rows = rows_for_table(cma, show_all)
    for r in rows:
        t.add_row(*[Text(x) for x in cells(r)])
    console.print(t)
    if len(rows) < len(cma["allocations"]):
        console.print(Text(f"{len(cma['allocations']) - len(rows)} more (--all shows every row)"))
    dup = same_as(rows)
    for r in rows:
        if not r["reason"] and not _slow(r):
            continue
        console.print(Text(f"#{r['id']} {r['kind']} {r['area'] or '-'} {r['count']} pages by "
                           f"{r['comm']}[{r['pid']}] at {r['ts_start'] / 1e9:.6f} s: {outcome(r)}", style="bold"))
        if r["id"] in dup:
            console.print(Text(f"  same reason as #{dup[r['id']]}"))
            continue
        if r["reason"]:
            console.print(Text("  " + r["reason"]))
        if _slow(r):
            console.print(Text("  time: " + split_text(r)))
        for b in r["busy"]:
            if b.get("history"):
                console.print(Text(f"  story of 0x{b['pfn']:x}: {b['history']}"))


def _slow(r: dict) -> bool:
    return bool(r["latency_ns"]) and r["latency_ns"] >= 10_000_000 and bool(r["time_split"])


def split_text(r: dict) -> str:
    tot = max(1, r["latency_ns"] or sum(x["ns"] for x in r["time_split"]))
    return ", ".join(f"{x['phase']} {x['ns'] / 1e6:.1f} ms ({100 * x['ns'] / tot:.0f}%)" for x in r["time_split"])


def render_markdown(cma: dict, out: TextIO, source: str = "", show_all: bool = False) -> None:
    out.write(f"# CMA allocations{(' in ' + md_escape(source)) if source else ''}\n\n")
    out.write(md_escape(summary_line(cma)) + "\n\n")
    out.writelines("Note: " + md_escape(n) + "\n\n" for n in notes(cma))
    out.write("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n")
    rows = rows_for_table(cma, show_all)
    out.writelines("| " + " | ".join(md_escape(x) for x in cells(r)) + " |\n" for r in rows)
    out.write("\n")
    dup = same_as(rows)
    for r in rows:
        if not r["reason"] and not _slow(r):
            continue
        out.write(f"## \\#{r['id']} {md_escape(r['area'] or r['kind'])}: {md_escape(outcome(r))}\n\n")
        if r["id"] in dup:
            out.write(f"Same reason as \\#{dup[r['id']]}.\n\n")
            continue
        if r["reason"]:
            out.write(md_escape(r["reason"]) + "\n\n")
        if _slow(r):
            out.write("Time: " + md_escape(split_text(r)) + "\n\n")
        for b in r["busy"]:
            if b.get("steps"):
                out.write(f"Story of pfn 0x{b['pfn']:x} ({md_escape(b['history'])}):\n\n")
                out.writelines(f"- {md_escape(s)}\n" for s in b["steps"])
                out.write("\n")
