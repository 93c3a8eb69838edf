"""Rich terminal summary of an Analysis.

The first line is the verdict (kernel, what was found, exit status), because that is
what a kernel developer or a CI log reader needs first; then the detector table, then
where (examples, top pageblocks) and how far the evidence can be trusted (lost events,
consistency with /proc/pagetypeinfo, model confidence).  What the columns and detectors
mean is static text: it is printed only with `explain=True` (`analyze --explain`).
Tables keep every header whole at 80 columns (a piped run), wrapping cells instead.
"""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from ..kernels import mt_name

SEV_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}
EXIT_WORD = {0: "clean", 1: "findings", 2: "bad input", 3: "inconclusive", 4: "internal error"}
KERNEL_UNKNOWN_PREFIXES = ("kernel version unknown", "kernel release unknown")


def _table(title: str | None = None) -> Table:
    """A compact table: a rule under the header, one space of padding, no outer box."""
    return Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False,
                 title_justify="left")


def _col(t: Table, header: str, right: bool = False, wrap: bool = False) -> None:
    # min_width = the header: rich then wraps cells instead of cutting headers to "known/in..."
    t.add_column(header, justify="right" if right else "left", min_width=len(header),
                 no_wrap=not wrap, overflow="fold")


def _found_text(s: dict) -> str:
    fs = s["findings"]
    by = fs.get("by_detector", {})
    if not fs["kernel"]:
        found = "no kernel findings"
    else:
        found = " ".join(f"{k}={v}" for k, v in sorted(by.items()) if k != "MW")
    if fs["model_warnings"]:
        found += f"; {fs['model_warnings']} model warnings"
    if s.get("not_checked"):
        found += f"; not checked: {', '.join(s['not_checked'])}"
    return found


def verdict_line(a, s: dict | None = None) -> str:
    """One line: status, kernel, what was found, exit status (plain text, for CI logs too)."""
    s = s or a.summary(with_rows=False)
    code = int(s["exit_status"])
    if getattr(a.kernel, "version", 0) is None:
        # the trace does not say which kernel made it (no uname in trace.dat, a text trace):
        # a clean verdict would rest on an assumption, so it is never given
        return (f"{EXIT_WORD.get(code, '?').upper()} on unknown kernel: {_found_text(s)}; the trace does not "
                f"record its kernel: pass --kernel RELEASE (or the full `uname -a` line) -> exit {code}")
    kernel = s["kernel"].get("release") or "?"
    return f"{EXIT_WORD.get(code, '?').upper()} on {kernel}: {_found_text(s)} -> exit {code}"


def render(a, console: Console | None = None, examples: int | None = None, explain: bool = False) -> None:
    c = console or Console()
    s = a.summary(with_rows=False)
    cap = s["capture"]
    code = int(s["exit_status"])
    kernel_unknown = getattr(a.kernel, "version", 0) is None
    style = {0: "bold green", 1: "bold red"}.get(code, "bold yellow")
    # soft_wrap: the verdict stays ONE line even when it is wider than the terminal
    c.print(f"[{style}]{verdict_line(a, s)}[/]", highlight=False, soft_wrap=True)
    k = a.kernel
    kdesc = "kernel: pass --kernel REL; " if kernel_unknown else (f"upstream {'.'.join(map(str, k.version))}"
                                       f"{' (' + k.distro + ')' if getattr(k, 'distro', None) else ''}; ")
    c.print(f"capture: {cap.get('source', '?')}; {kdesc}pageblock order {s['model']['pageblock_order']}; "
            f"drains print the {s['kernel'].get('drain_prints')} type", highlight=False, style="dim")
    # each assumption once: the kernel-unknown note is already in the verdict line
    notes = s["kernel"].get("assumed", []) + list(cap.get("unknowns", []) or [])
    said = set(notes)
    for note in notes:
        if kernel_unknown and note.startswith(KERNEL_UNKNOWN_PREFIXES):
            continue
        c.print(f"[yellow]assumed:[/] {note}", highlight=False)

    _behaviour(c, s)
    _detectors(c, s, explain)
    _examples(c, a, examples if examples is not None else (3 if explain else 1))
    _top_blocks(c, s, 10 if explain else 5)
    _lost(c, s)
    _consistency(c, a, explain)

    m = s["model"]
    conf = ", ".join(f"{k}={v}" for k, v in m["blocks_by_confidence"].items())
    c.print(f"model: block-history intervals by confidence: {conf or '-'}", highlight=False)
    if m["ground_truth"]:
        c.print(f"ground truth (kprobe): tracepoint-only inference agrees {_fmt_agreement(m['agreement'])}",
                highlight=False)
    else:
        c.print("ground truth: none (no pb/setmt kprobe events; the probes per kernel: analyzer/probes.py)")
    for w in m["warnings"]:
        if w in said:
            continue
        c.print(f"[yellow]model warning:[/] {w}", highlight=False)
    if not explain:
        c.print("(--explain: what the columns and detectors mean, more examples)", style="dim")


def _detectors(c: Console, s: dict, explain: bool) -> None:
    t = _table("Detectors")
    _col(t, "id")
    _col(t, "severity")
    _col(t, "runs")
    _col(t, "findings", right=True)
    _col(t, "evidence", wrap=True)
    _col(t, "checked", right=True)
    _col(t, "skipped", right=True)
    _col(t, "sub-classes", wrap=True)
    not_applicable = []
    for d in s["detectors"]:
        sev = d["severity"]
        subs = ", ".join(f"{k}={v}" for k, v in d.get("subcounts", {}).items()) or "-"
        ev = d.get("evidence") or {}
        split = " ".join(f"{k[0]}{v}" for k, v in ev.items() if v) or "-"
        if not d["applies"]:
            not_applicable.append(d)
        status = d.get("status", "checked")
        runs = {"checked": "yes", "not applicable": "[dim]n/a[/]", "not checked": "[bold yellow]NO[/]",
                "no snapshots": "[dim]none[/]"}.get(status, status)
        t.add_row(d["id"], f"[{SEV_STYLE.get(sev, '')}]{sev}[/]", runs, str(d["count"]), split,
                  str(d.get("checked", "")), str(d.get("skipped_unknown", "")), subs)
    c.print(t)
    for d in not_applicable:
        c.print(f"{d['id']}: not applicable to this kernel (applies to: {d['kernels']})", highlight=False)
    for d in s["detectors"]:
        miss = (d.get("notes") or {}).get("missing_events")
        if d.get("status") == "not checked":
            c.print(f"[yellow]{d['id']}: not checked[/] (the trace has no {', '.join(miss or ['?'])}): "
                    "inconclusive, not clean", highlight=False)
    ev = s.get("evidence") or {}
    if any(ev.values()):
        c.print("kernel findings rest on: " + ", ".join(f"{k} {v}" for k, v in ev.items()), highlight=False)
    if explain:
        c.print("evidence: what a finding's block type rests on: p(robe) the kprobe recorded it, o(bserved) "
                "the kernel printed it live, t(raced) a tracepoint fact, i(nferred) the model's guess; "
                "runs NO: the events it needs are missing (exit 3); checked: records "
                "compared; skipped: records whose block type is unknown or only guessed (unconfirmed "
                "boot seed, backfill): never reported; runs n/a: the kernel cannot have this bug",
                style="dim", highlight=False)
        for d in s["detectors"]:
            c.print(f"  [bold]{d['id']}[/]: {d['meaning']} [dim](kernels: {d['kernels']})[/]", highlight=False)


def _behaviour(c: Console, s: dict) -> None:
    """Measured vs expected print semantics; a disagreement is one bold line each."""
    b = s.get("behaviour") or {}
    for line in b.get("summary", []):
        c.print(f"[bold red]{line}[/] (records judged by what was observed)", highlight=False)
    d = b.get("drain") or {}
    if d and not b.get("summary"):
        if d.get("agree") is None:
            c.print(f"drain behaviour: expected {d.get('expected')}, not measurable here (no kprobe-typed "
                    "drain whose cached type differs from its block)", style="dim", highlight=False)
        else:
            c.print(f"drain behaviour: expected {d.get('expected')}, observed {d.get('observed')} "
                    f"(from {', '.join(x.replace('_', ' ') for x in d.get('determined_by', []))} drains)",
                    style="dim", highlight=False)


def _examples(c: Console, a, n: int) -> None:
    f = a.kernel_findings
    if not len(f) or n <= 0:
        return
    c.print(f"\n[bold]Examples[/] (first {n} per detector):")
    for det, g in f.groupby(f["detector"].astype(str), sort=True):
        for r in g.head(n).itertuples(index=False):
            c.print(f"  [{SEV_STYLE.get(r.severity, '')}]{det}[/] seq {r.seq} pfn 0x{int(r.pfn):x}: "
                    f"{r.explanation}", highlight=False)


def _top_blocks(c: Console, s: dict, n: int) -> None:
    if not s["top_blocks"]:
        return
    t = _table("Top pageblocks (worst severity, then most findings)")
    for h, right in (("block", True), ("start pfn", False), ("zone", False), ("findings", True),
                     ("by detector", False)):
        _col(t, h, right=right, wrap=(h == "by detector"))
    for b in s["top_blocks"][:n]:
        t.add_row(str(b["block"]), b["start_pfn"], str(b.get("zone") or "?"), str(b["findings"]),
                  ", ".join(f"{k}={v}" for k, v in b["by_detector"].items()))
    c.print(t)


def _lost(c: Console, s: dict) -> None:
    lost = s["lost_events"]
    if lost["windows"]:
        t = _table("Lost events")
        for h in ("cpu", "from ts", "to ts", "count"):
            _col(t, h, right=True)
        for w in lost["windows"][:20]:
            t.add_row(str(w["cpu"]), str(w["ts_start"]), str(w["ts_end"]),
                      str(w["count"]) if w["count"] >= 0 else "?")
        c.print(t)
    c.print(f"lost events: {lost['effect']}"
            + (f"; {lost['findings_after_first_loss']} findings after the first loss" if lost["windows"] else ""),
            highlight=False)


def _consistency(c: Console, a, explain: bool) -> None:
    cons = a.consistency
    if not cons.available:
        c.print("consistency: no pagetypeinfo-end.txt in the capture; not checked")
        return
    passed = bool(cons.passed)
    unv = cons.unverified_blocks
    exact = "yes" if cons.exact else "no"
    if cons.passed is None:
        c.print(f"consistency with /proc/pagetypeinfo: [yellow]UNKNOWN[/] (the trace starts on a running "
                f"system: the types of the {unv} blocks it never reveals were set before it and are known "
                f"only as per-type counts; no evidenced count exceeds the kernel's)", highlight=False)
        if explain:
            passed = True
    elif passed:
        c.print(f"consistency with /proc/pagetypeinfo: [green]PASS[/] (no evidenced count exceeds the "
                f"kernel's; the {unv} unverified blocks exactly fill the shortfall; exact match: {exact})",
                highlight=False)
    else:
        c.print(f"consistency with /proc/pagetypeinfo: [red]FAIL[/] (an evidenced count exceeds the "
                f"kernel's, or the {unv} unverified blocks do not exactly fill the shortfall: the "
                f"reconstruction missed retypes; see the table)", highlight=False)
    if not (explain or not passed):
        return
    t = _table("Consistency: end state vs /proc/pagetypeinfo (blocks per type)")
    for h in ("zone", "type", "rebuilt", "evidenced", "kernel", "diff"):
        _col(t, h, right=h not in ("zone", "type"))
    for r in cons.table.itertuples(index=False):
        diff = "" if r.diff is None or r.diff != r.diff else f"{int(r.diff):+d}"
        ref = "" if r.pagetypeinfo is None or r.pagetypeinfo != r.pagetypeinfo else str(int(r.pagetypeinfo))
        t.add_row(r.zone, r.type, str(r.reconstructed), str(r.evidenced), ref,
                  f"[red]{diff}[/]" if diff not in ("", "+0") else diff)
    c.print(t)


def _fmt_agreement(ag) -> str:
    """Share of block-time right where the tracepoint-only inference claimed a type."""
    if not ag:
        return "n/a"
    if not isinstance(ag, dict):
        return str(ag)
    parts = []
    for k, label in (("rate", "overall"), ("known_rate", "where it claimed known"),
                     ("inferred_rate", "where it claimed inferred"), ("coverage", "coverage")):
        v = ag.get(k)
        if isinstance(v, (int, float)):
            parts.append(f"{label} {100 * v:.3f}%")
    dis = ag.get("disagreeing_blocks")
    if isinstance(dis, list):
        parts.append(f"{len(dis)}{'+' if len(dis) >= 50 else ''} blocks disagree somewhere")
    return ", ".join(parts) if parts else str(ag)


def type_name(mt: int) -> str:
    return mt_name(mt)
