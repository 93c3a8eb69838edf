"""Rich terminal summary of an Analysis.

Answers, in this order, what a kernel developer asks of a capture: which kernel
semantics were assumed, what each detector found and how bad it is, where (top
pageblocks), how far the evidence can be trusted (lost events, unknown block
types, ground-truth agreement, model warnings) and whether the reconstruction
matches the kernel's own /proc/pagetypeinfo count.
"""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..kernels import mt_name

SEV_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def render(a, console: Console | None = None, examples: int = 3) -> None:
    c = console or Console()
    s = a.summary(with_rows=False)
    cap = s["capture"]
    c.rule("[bold]mtaudit analyze")
    c.print(f"capture: {cap.get('source', '?')}  kernel: {s['kernel'].get('describe') or '?'}  "
            f"drain prints: {s['kernel'].get('drain_prints')}  pageblock order: {s['model']['pageblock_order']}")
    for note in s["kernel"].get("assumed", []) + list(cap.get("unknowns", []) or []):
        c.print(f"[yellow]assumed/unknown:[/] {note}")

    t = Table(title="Detectors", show_lines=False)
    num = ("findings", "known/inferred", "checked", "skipped")
    for h in ("id", "severity", "runs", "findings", "known/inferred", "sub-classes", "checked", "skipped"):
        t.add_column(h, justify="right" if h in num else "left")
    for d in s["detectors"]:
        sev = d["severity"]
        subs = ", ".join(f"{k}={v}" for k, v in d.get("subcounts", {}).items()) or "-"
        split = "-" if d.get("on_known") is None else f"{d['on_known']} / {d['on_inferred']}"
        t.add_row(d["id"], f"[{SEV_STYLE.get(sev, '')}]{sev}[/]",
                  "yes" if d["applies"] else "[dim]no[/]", str(d["count"]), split, subs,
                  str(d.get("checked", "")), str(d.get("skipped_unknown", "")))
    c.print(t)
    c.print("  known/inferred: findings on a block type the model knows / only infers; checked: records "
            "compared; skipped: records whose block type is unknown or only guessed (unconfirmed boot seed, "
            "backfill): never reported", style="dim")
    for d in s["detectors"]:
        c.print(f"  [bold]{d['id']}[/]: {d['meaning']} [dim](kernels: {d['kernels']})[/]", highlight=False)

    f = a.kernel_findings
    if len(f):
        c.print(f"\n[bold]Examples[/] (first {examples} per detector):")
        for det, g in f.groupby(f["detector"].astype(str), sort=True):
            for r in g.head(examples).itertuples(index=False):
                c.print(f"  [{SEV_STYLE.get(r.severity, '')}]{det}[/] seq {r.seq} pfn 0x{int(r.pfn):x}: "
                        f"{r.explanation}", highlight=False)

    if s["top_blocks"]:
        t = Table(title="Top pageblocks (by worst severity, then findings)")
        for h in ("block", "start pfn", "zone", "findings", "by detector"):
            t.add_column(h)
        for b in s["top_blocks"]:
            t.add_row(str(b["block"]), b["start_pfn"], str(b.get("zone") or "?"), str(b["findings"]),
                      ", ".join(f"{k}={v}" for k, v in b["by_detector"].items()))
        c.print(t)

    lost = s["lost_events"]
    if lost["windows"]:
        t = Table(title="Lost events")
        for h in ("cpu", "from ts", "to ts", "count"):
            t.add_column(h, justify="right")
        for w in lost["windows"][:20]:
            t.add_row(str(w["cpu"]), str(w["ts_start"]), str(w["ts_end"]),
                      str(w["count"]) if w["count"] >= 0 else "?")
        c.print(t)
    c.print(f"lost events: {lost['effect']}"
            + (f"; {lost['findings_after_first_loss']} findings after the first loss" if lost["windows"] else ""))

    cons = a.consistency
    if cons.attrs.get("available"):
        t = Table(title="Consistency: reconstructed end state vs /proc/pagetypeinfo (Number of blocks type)")
        for h in ("zone", "type", "reconstructed", "of which evidenced", "pagetypeinfo", "diff"):
            t.add_column(h, justify="left" if h in ("zone", "type") else "right")
        for r in cons.itertuples(index=False):
            diff = "" if r.diff is None or r.diff != r.diff else f"{int(r.diff):+d}"
            ref = "" if r.pagetypeinfo is None or r.pagetypeinfo != r.pagetypeinfo else str(int(r.pagetypeinfo))
            t.add_row(r.zone, r.type, str(r.reconstructed), str(r.evidenced), ref,
                      f"[red]{diff}[/]" if diff not in ("", "+0") else diff)
        c.print(t)
        verdict = "[green]PASS[/]" if cons.attrs.get("passed") else "[red]FAIL[/]"
        c.print(f"consistency: {verdict} (no evidenced count exceeds the kernel's, and the "
                f"{cons.attrs.get('unverified_blocks')} unverified blocks (boot seed never confirmed, or unknown) "
                f"exactly fill the shortfall); exact match: {cons.attrs.get('exact')}")
    else:
        c.print("consistency: no pagetypeinfo-end.txt in the capture; not checked")

    m = s["model"]
    conf = ", ".join(f"{k}={v}" for k, v in m["blocks_by_confidence"].items())
    c.print(f"model: block-history intervals by confidence: {conf or '-'}")
    if m["ground_truth"]:
        c.print(f"ground truth (kprobe) present; tracepoint-only inference agreement: {_fmt_agreement(m['agreement'])}")
    else:
        c.print("ground truth: none (no set_pfnblock_flags_mask kprobe events)")
    for w in m["warnings"]:
        c.print(f"[yellow]model warning:[/] {w}", highlight=False)
    fs = s["findings"]
    c.print(f"\n[bold]{fs['kernel']} kernel findings[/], {fs['model_warnings']} model warnings "
            f"-> exit {s['exit_status']}")


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
