"""One self-contained HTML report of an Analysis (or a side-by-side of two).

Why self-contained: reports get attached to bug reports and mailed around; they must
open anywhere, offline, with no JavaScript and nothing fetched.  Images are inline
base64 PNGs, the CSS is inline, every piece of text from the trace is escaped (comm
names and kernel command lines are attacker-influenced strings).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..atomic import atomic_file
from . import plots

SEVERITY_ORDER = ["critical", "high", "medium", "low", "info"]
_SEV_COLOR = {"critical": "#7a0019", "high": "#D55E00", "medium": "#E69F00", "low": "#0072B2", "info": "#666666"}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
header{background:#16324f;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;font-size:13px;opacity:.85}
nav{padding:6px 24px;background:#e8eef4;font-size:13px}
nav a{margin-right:14px;color:#16324f}
main{padding:4px 24px 40px}
section{background:#fff;border:1px solid #dde3ea;border-radius:6px;margin:16px 0;padding:10px 16px;overflow-x:auto}
h2{font-size:18px;margin:6px 0 10px;color:#16324f}
h3{font-size:15px;margin:12px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #d5dbe1;padding:3px 8px;text-align:left;vertical-align:top;overflow-wrap:break-word}
td:first-child{white-space:nowrap}
table.kv td+td{word-break:break-all}
th{background:#f0f3f6}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap;overflow-wrap:normal}
tr.na td{color:#888}
.sev{display:inline-block;white-space:nowrap;padding:0 6px;border-radius:3px;color:#fff;font-size:12px}
.ok{color:#006d43}.bad{color:#b00020}
img.plot{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:8px;font-size:12px;white-space:pre-wrap;word-break:break-all;margin:4px 0}
details{margin:4px 0 10px}
summary{cursor:pointer;font-size:13px}
.cmp{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.cmp>div{min-width:0}
.muted{color:#777;font-size:12px}
"""

e = html.escape


# ---------------------------------------------------------------------------
# small renderers
# ---------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    try:
        import pandas as pd
        if v is pd.NA or v is pd.NaT:
            return ""
    except ImportError:  # pragma: no cover
        pass
    return str(v)


def _cell(col: str, v: Any) -> str:
    text = e(_fmt(v))
    if col == "severity" and isinstance(v, str) and v in _SEV_COLOR:
        return f'<td><span class="sev" style="background:{_SEV_COLOR[v]}">{text}</span></td>'
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
        return f'<td class="num">{text}</td>'
    return f"<td>{text}</td>"


def table(rows: Iterable[Sequence[Any]], header: Sequence[str],
          row_class: Callable[[Sequence[Any]], str] | None = None, cls: str = "") -> str:
    out = [f'<table class="{cls}"><thead><tr>' if cls else "<table><thead><tr>", *(f"<th>{e(str(h))}</th>" for h in header), "</tr></thead><tbody>"]
    for r in rows:
        cls = row_class(r) if row_class else ""
        out.append(f'<tr class="{cls}">' if cls else "<tr>")
        out.extend(_cell(str(h), v) for h, v in zip(header, r))
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def frame_table(df: Any, columns: Sequence[str] | None = None, limit: int | None = None) -> str:
    """A pandas frame (or list of dicts) as an escaped HTML table."""
    if df is None:
        return '<p class="muted">not available</p>'
    if isinstance(df, list):
        import pandas as pd
        df = pd.DataFrame(df)
    if len(df) == 0:
        return '<p class="muted">none</p>'
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]
    sub = df[cols] if limit is None else df[cols].head(limit)
    rows = [tuple(r) for r in sub.astype(object).itertuples(index=False, name=None)]

    def na(r: Sequence[Any]) -> str:
        if "applies" in cols:
            v = r[cols.index("applies")]
            return "na" if v is False or v is np.False_ else ""
        return ""

    note = f'<p class="muted">first {limit} of {len(df)} rows</p>' if limit is not None and len(df) > limit else ""
    return table(rows, cols, na) + note


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="plot" alt="{e(alt)}" src="data:image/png;base64,{data}">'


def _mt_name(v: Any) -> str:
    try:
        code = int(v)
    except (TypeError, ValueError):
        return ""
    return f"{code} {plots.mt_names().get(code, '?')}"


def _size(n: int) -> str:
    for unit, sh in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << sh:
            return f"{n / (1 << sh):g} {unit}"
    return f"{n} B"


def _lost_text(analysis: Any) -> str:
    ls = getattr(analysis, "lost_summary", None)
    if ls is not None:
        d = ls()
        total = int(d.get("total", 0) or 0)
        wins = d.get("windows") or []
        manifest = {k: v for k, v in (d.get("manifest") or {}).items() if v}
        if not wins and not manifest:
            return "none"
        parts = [f"{total} events lost in {len(wins)} gap(s)" if wins else ""]
        if manifest:
            parts.append("manifest: " + ", ".join(f"{k}: {v}" for k, v in manifest.items()))
        if d.get("findings_after_first_loss"):
            parts.append(f"{d['findings_after_first_loss']} findings after the first loss")
        return "; ".join(p for p in parts if p)
    lost = getattr(analysis.meta, "lost_events", None)
    if lost is None:
        return "not recorded"
    total = sum(int(v) for v in lost.values() if v is not None and int(v) > 0)
    return "none" if total == 0 else f"{total} (" + ", ".join(f"{k}: {v}" for k, v in lost.items()) + ")"


def _agreement_text(model: Any) -> str:
    agreement = getattr(model, "agreement", None)
    gt = getattr(model, "ground_truth", None)
    if agreement is None:
        return "no ground truth (no kprobe events)" if not gt else "not computed"
    if isinstance(agreement, dict):
        parts = []
        for k, v in agreement.items():
            if isinstance(v, (list, tuple, set, np.ndarray)):
                parts.append(f"{k}: {len(v)}")
            elif isinstance(v, (int, np.integer)) and str(k).endswith("_ts"):
                parts.append(f"{k}: {int(v) / 1e9:.3f} s")
            elif isinstance(v, (float, np.floating)) and 0 <= v <= 1 and ("rate" in str(k) or "coverage" in str(k)):
                parts.append(f"{k}: {v:.2%}")
            else:
                parts.append(f"{k}: {_fmt(v)}")
        return ", ".join(parts)
    if isinstance(agreement, float):
        return f"{agreement:.1%}"
    return _fmt(agreement)


# ---------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------
def section_metadata(analysis: Any, p: str = "") -> str:
    meta = analysis.meta
    model = getattr(analysis, "model", None)
    kernel = getattr(analysis, "kernel", None)
    order = getattr(meta, "pageblock_order", None)
    gt = getattr(model, "ground_truth", None)
    rows = [
        ("kernel release", getattr(meta, "kernel_release", None) or "unknown"),
        ("uname", getattr(meta, "uname", None) or "not recorded"),
        ("kernel (version table)", kernel.describe() if hasattr(kernel, "describe") else "unknown"),
        ("architecture", getattr(meta, "arch", None) or "unknown"),
        ("kernel command line", getattr(meta, "cmdline", None) or "not recorded"),
        ("source", getattr(meta, "source", None) or ""),
        ("pageblock order", "unknown" if order is None else f"{order} ({1 << int(order)} pages per block)"),
        ("pageblock intervals", str(len(analysis.blocks))),
        ("findings", str(len(analysis.findings)) if getattr(analysis, "findings", None) is not None else "0"),
        ("lost events", _lost_text(analysis)),
        ("ground truth (kprobe)", "yes" if gt else ("no" if gt is not None else "unknown")),
        ("ground-truth agreement", _agreement_text(model)),
    ]
    table_k = getattr(analysis, "table_kernel", None)
    if table_k is not None and kernel is not None and table_k is not kernel:
        rows.append(("judged by", f"drains: {kernel.drain_prints}, zone_locked: {kernel.zone_locked_prints} "
                                  f"(observed in the trace; the version table says {table_k.drain_prints} / "
                                  f"{table_k.zone_locked_prints})"))
    assumed = list(getattr(kernel, "assumed", None) or [])
    if assumed:
        rows.append(("assumptions", "; ".join(map(str, assumed))))
    out = [f'<section id="{p}metadata"><h2>Capture</h2>', table(rows, ["what", "value"], cls="kv")]
    zones = getattr(meta, "zones", None) or []
    out.append("<h3>Zones</h3>")
    out.append(table([(z[0], f"{int(z[1]):#x}", f"{int(z[2]):#x}", (int(z[2]) - int(z[1])) >> int(order or 0))
                      for z in zones], ["zone", "start pfn", "end pfn", "pageblocks"])
               if zones else '<p class="muted">not known</p>')
    cma = getattr(meta, "cma_areas", None) or []
    out.append("<h3>CMA areas</h3>")
    page = int(getattr(meta, "page_size", None) or 4096)
    out.append(table([(c[0], f"{int(c[1]):#x}", int(c[2]), _size(int(c[2]) * page))
                      for c in cma], ["name", "base pfn", "pages", "size"])
               if cma else '<p class="muted">none found</p>')
    unknowns = getattr(meta, "unknowns", None) or []
    warnings = list(getattr(model, "warnings", None) or [])
    if unknowns or warnings:
        out.append("<h3>What could not be known</h3><ul>")
        out.extend(f"<li>{e(str(u))}</li>" for u in [*unknowns, *warnings])
        out.append("</ul>")
    out.append("</section>")
    return "".join(out)


_DET_COLS = ["id", "meaning", "kernels", "applies", "status", "count", "severity", "subcounts", "evidence", "checked",
             "skipped_unknown", "notes"]
_DET_COLS_COMPACT = ["id", "kernels", "applies", "status", "count", "severity", "subcounts", "evidence"]


def section_behaviour(analysis: Any, p: str = "") -> str:
    """The detectors table (status, counts, evidence) and the measured kernel behaviour."""
    det = getattr(analysis, "detectors", None)
    body = ["<h2>Detectors and kernel behaviour</h2>"]
    if det is not None and len(det):
        det = det.copy()
        if "evidence" in det.columns:    # "probe 16, observed 63": zero tiers left out
            det["evidence"] = [", ".join(f"{k} {v}" for k, v in ev.items() if v) if isinstance(ev, dict) else ""
                               for ev in det["evidence"]]
        body.append(frame_table(det, [c for c in _DET_COLS if c in det.columns]))
        body.append('<p class="muted">Greyed rows: the detector does not apply to this kernel '
                    "(its bug is absent or its evidence cannot appear).</p>")
    body.append(behaviour_html(analysis).replace("<h2>", "<h3>").replace("</h2>", "</h3>"))
    return f'<section id="{p}behaviour">' + "".join(body) + "</section>"


def behaviour_html(analysis: Any) -> str:
    """The print semantics the table expected vs what the trace showed (drains, zone_locked)."""
    b = getattr(analysis, "behaviour", None) or {}
    if not b:
        return ""
    rows = []
    d, z = b.get("drain", {}), b.get("zone_locked", {})
    for part in ("not_isolated", "isolated"):
        c = d.get(part, {})
        rows.append((f"drain ({part.replace('_', ' ')})", c.get("expected"), c.get("verdict") or "no evidence",
                     c.get("informative", 0), c.get("printed_live", 0), c.get("printed_cached", 0),
                     c.get("printed_other", 0)))
    rows.append(("zone_locked", z.get("expected"), z.get("observed") or "no evidence",
                 z.get("ground_truth_records", 0), z.get("printed_block", 0), "", z.get("printed_other", 0)))
    agree = d.get("agree")
    verdict = ("agrees with the version table" if agree else "no kprobe-established evidence to compare"
               if agree is None else "DISAGREES with the version table")
    lines = "".join(f"<li><b>{e(x)}</b></li>" for x in b.get("summary", []))
    return ("<h2>Kernel behaviour: expected vs observed</h2>"
            f"<p>drains: expected <b>{e(str(d.get('expected')))}</b>, observed "
            f"<b>{e(str(d.get('observed') or 'undetermined'))}</b> ({verdict}).</p>"
            + (f"<ul>{lines}</ul>" if lines else "")
            + table(rows, ["records", "expected", "observed", "informative", "printed live/block",
                           "printed cached", "printed other"])
            + '<p class="muted">Only records whose block type the kprobe established count; a drain is '
              "informative when its pcp-cached type differs from that type.</p>")


def evidence_html(analysis: Any) -> str:
    ev = analysis.evidence() if callable(getattr(analysis, "evidence", None)) else {}
    if not ev or not sum(ev.values()):
        return ""
    return ("<p>What the kernel findings rest on: " + ", ".join(f"<b>{e(k)}</b> {v}" for k, v in ev.items())
            + ' <span class="muted">(probe: the kprobe recorded the block type; observed: the kernel printed '
              "it live; traced: a tracepoint fact; inferred: the model's best guess)</span></p>")


def section_summary(analysis: Any, p: str = "", compact: bool = False, detectors_here: bool = True) -> str:
    f = getattr(analysis, "findings", None)
    n = 0 if f is None else len(f)
    out = [f'<section id="{p}summary"><h2>Summary</h2>']
    if n:
        counts = f["severity"].astype(str).value_counts()
        sev = [(s_, int(counts.get(s_, 0))) for s_ in SEVERITY_ORDER if counts.get(s_, 0)]
        out.append("<p>" + " ".join(
            f'<span class="sev" style="background:{_SEV_COLOR[s_]}">{e(s_)}: {c}</span>' for s_, c in sev)
            + f" &nbsp; {n} findings in total.</p>")
    else:
        out.append('<p class="ok">No findings.</p>')
    out.append(evidence_html(analysis))
    nc = analysis.not_checked() if callable(getattr(analysis, "not_checked", None)) else []
    if nc:
        out.append(f'<p class="bad">Not checked (the events they need are missing): {e(", ".join(nc))} - '
                   "the result is inconclusive.</p>")
    for line in (getattr(analysis, "behaviour", None) or {}).get("summary", []):
        out.append(f'<p class="bad"><b>{e(line)}</b> (records are judged by what was observed)</p>')
    if not detectors_here:
        out.append('<p class="muted">Per-detector counts, what was checked and the kernel behaviour the '
                   'records were judged by: <a href="#' + p + 'behaviour">Detectors and kernel behaviour</a>.</p>')
        out.append("</section>")
        return "".join(out)
    out.append("<h3>Detectors</h3>")
    det = getattr(analysis, "detectors", None)
    want = _DET_COLS_COMPACT if compact else _DET_COLS
    cols = None
    if det is not None and len(det):
        cols = [c for c in want if c in det.columns] or None
        det = det.copy()
        if "evidence" in det.columns:    # "probe 16, observed 63": zero tiers left out
            det["evidence"] = [", ".join(f"{k} {v}" for k, v in ev.items() if v) if isinstance(ev, dict) else ""
                               for ev in det["evidence"]]
    out.append(frame_table(det, cols))
    out.append('<p class="muted">Greyed rows: the detector does not apply to this kernel '
               "(its bug is absent or its evidence cannot appear).</p></section>")
    return "".join(out)


def _top_findings(findings: Any, top: int) -> Any:
    rank = {s: i for i, s in enumerate(SEVERITY_ORDER)}
    f = findings.copy()
    f["_rank"] = f["severity"].astype(str).map(rank).fillna(len(rank)).astype(int)
    f = f.sort_values(["_rank", "seq"], kind="stable")
    # one finding per block first, so the top list is not one block repeated
    f = f.drop_duplicates(subset=["detector", "block"], keep="first")
    return f.head(top)


NARRATIVE_LINES = 80


def _window(lines: Sequence[Any], n: int = NARRATIVE_LINES) -> list[str]:
    """At most n lines of a history, centred on the first finding mark ("!!")."""
    lines = [str(x) for x in lines]
    if len(lines) <= n:
        return lines
    hit = next((i for i, x in enumerate(lines) if x.lstrip().startswith("!!")), len(lines) - 1)
    lo = max(0, min(hit - (2 * n) // 3, len(lines) - n))
    hi = lo + n
    out = ([f"… {lo} earlier lines omitted"] if lo else []) + lines[lo:hi]
    if hi < len(lines):
        out.append(f"… {len(lines) - hi} later lines omitted")
    return out


def section_findings(analysis: Any, top: int = 15, narratives: int = 10, p: str = "",
                     compact: bool = False) -> str:
    f = getattr(analysis, "findings", None)
    out = [f'<section id="{p}findings"><h2>Top findings</h2>']
    if f is None or len(f) == 0:
        out.append('<p class="ok">No findings.</p></section>')
        return "".join(out)
    t = _top_findings(f, top)
    from ..detectors import finding_tiers
    model = getattr(analysis, "model", None)
    tiers = finding_tiers(model, t) if hasattr(model, "block_type_at") else [""] * len(t)
    rows: list[tuple[Any, ...]] = []
    for r, tier in zip(t.itertuples(index=False), tiers):
        if compact:
            rows.append((r.detector, r.severity, tier, f"{int(r.ts) / 1e9:.6f}", f"{int(r.pfn):#x}", r.explanation))
        else:
            rows.append((r.detector, r.severity, tier, f"{int(r.ts) / 1e9:.6f}", r.seq, r.cpu, f"{int(r.pfn):#x}",
                         r.block, r.event, _mt_name(r.printed_mt), _mt_name(r.block_mt), r.explanation))
    out.append(table(rows, ["detector", "severity", "evidence", "t [s]", "pfn", "explanation"] if compact else
                     ["detector", "severity", "evidence", "t [s]", "seq", "cpu", "pfn", "block", "event",
                      "printed type", "block type", "explanation"]))
    out.append(f'<p class="muted">{len(t)} of {len(f)} findings (highest severity first, one per detector and '
               "block).</p>")
    tb = getattr(analysis, "top_blocks", None)
    blocks = tb() if callable(tb) and not compact else []
    if blocks:
        out.append("<h3>Most affected pageblocks</h3>")
        out.append(table([(b.get("block"), b.get("start_pfn"), b.get("zone"), b.get("findings"),
                           b.get("by_detector")) for b in blocks],
                         ["block", "first pfn", "zone", "kernel findings", "by detector"]))
    out.append("<h3>Histories</h3>")
    narr = getattr(analysis, "narrative", None)
    for i, r in enumerate(t.head(narratives).itertuples(index=False)):
        pfn = int(r.pfn)
        try:
            lines = list(narr(pfn)) if narr else []
        except Exception as ex:  # one bad history must not sink the report
            lines = [f"(history unavailable: {ex})"]
        body = "\n".join(_window(lines)) or "(no history)"
        expl = str(r.explanation)
        if len(expl) > 200:
            expl = expl[:200].rsplit(" ", 1)[0] + " …"
        out.append(f"<details{' open' if i < 3 else ''}><summary>{e(str(r.detector))} "
                   f"pfn {pfn:#x} (block {int(r.block)}): {e(expl)}</summary>"
                   f"<pre>{e(body)}</pre></details>")
    out.append("</section>")
    return "".join(out)


def section_consistency(analysis: Any, p: str = "") -> str:
    c = getattr(analysis, "consistency", None)
    status = ""
    if c is not None and not c.available:
        status = '<p class="muted">No end-of-capture /proc/pagetypeinfo: nothing to compare with.</p>'
    elif c is not None:
        ok = bool(c.passed)
        status = (f'<p class="{"ok" if ok else "bad"}">{"Consistent" if ok else "Inconsistent"}'
                  f'{" (exact)" if c.exact else ""}'
                  + (f"; {int(c.unknown_blocks)} blocks of unknown type at the end"
                     if c.unknown_blocks else "")
                  + (f"; {int(c.unverified_blocks)} blocks whose end type was inferred, not observed"
                     if c.unverified_blocks else "") + ".</p>")
    return (f'<section id="{p}consistency"><h2>Consistency with /proc/pagetypeinfo</h2>'
            '<p class="muted">Reconstructed block counts at the trace end against the kernel\'s own '
            "end-of-capture pagetypeinfo.</p>" + status + frame_table(c.table if c is not None else None)
            + "</section>")


def render_plots(analysis: Any, opts: plots.PlotOptions | None = None) -> tuple[bytes, bytes] | None:
    """(timeline PNG, counts PNG), or None when there is no pageblock history to draw."""
    if len(analysis.blocks) == 0:
        return None
    view = plots.make_view(analysis)
    tl = plots.figure_png(plots.timeline_figure(analysis, view, opts))
    ct = plots.figure_png(plots.counts_figure(analysis, view, plots.PlotOptions(
        width_px=(opts.width_px if opts else 1600), height_px=600)))
    return tl, ct


def section_plots(analysis: Any, pngs: tuple[bytes, bytes] | None = None, p: str = "") -> str:
    pngs = pngs or render_plots(analysis)
    if pngs is None:
        none = '<p class="muted">No pageblock history was reconstructed: nothing to draw.</p>'
        return (f'<section id="{p}timeline"><h2>Pageblock timeline</h2>{none}</section>'
                f'<section id="{p}counts"><h2>Blocks per migratetype over time</h2>{none}</section>')
    tl, ct = pngs
    return (f'<section id="{p}timeline"><h2>Pageblock timeline</h2>'
            '<p class="muted">Rows are pageblocks (low pfn at the bottom), columns time; colour = migratetype '
            "holding most block-time in the pixel, hatching = isolation window, white markers = findings "
            "(shape per detector).</p>" + img(tl, "pageblock migratetype timeline") + "</section>"
            f'<section id="{p}counts"><h2>Blocks per migratetype over time</h2>'
            '<p class="muted">Lines: reconstructed count at each moment (shaded: min-max inside each time bin). '
            "Markers: /proc/pagetypeinfo snapshots taken at the start and end of the capture.</p>"
            + img(ct, "block counts per migratetype over time") + "</section>")


@dataclass(frozen=True)
class Section:
    """A section another layer adds to a page: its anchor, its nav link and its HTML (which must
    carry id=anchor).  Pages take a list of these instead of having their HTML spliced."""
    anchor: str
    title: str
    html: str


def _page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    links = "".join(f'<a href="#{e(a)}">{e(t)}</a>' for a, t in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{e(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{e(title)}</h1><p>{e(subtitle)}</p></header>"
            f"<nav>{links}</nav><main>{body}</main></body></html>\n")


def _generated() -> str:
    return "generated by mtaudit " + _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------
def render_report(analysis: Any, *, title: str | None = None, source: str | None = None,
                  opts: plots.PlotOptions | None = None, top: int = 15) -> str:
    kr = getattr(analysis.meta, "kernel_release", None) or "unknown kernel"
    title = title or f"mtaudit report — {kr}"
    sub = _generated() + (f" from {source}" if source else "")
    from ..cma.html import section as section_cma
    cma = section_cma(analysis)
    body = (section_summary(analysis, detectors_here=False) + section_metadata(analysis) + section_plots(analysis, render_plots(analysis, opts))
            + section_behaviour(analysis) + section_findings(analysis, top) + cma + section_consistency(analysis))
    nav = [("summary", "Summary"), ("metadata", "Capture"), ("timeline", "Timeline"), ("counts", "Block counts"),
           ("behaviour", "Detectors"), ("findings", "Findings")] + ([("cma", "CMA")] if cma else []) + [
           ("consistency", "Consistency")]
    return _page(title, sub, nav, body)


def _count_map(analysis: Any) -> dict[str, tuple[Any, Any, Any]]:
    """detector id -> (applies, count, severity), from the detectors table or the findings."""
    d = getattr(analysis, "detectors", None)
    out: dict[str, tuple[Any, Any, Any]] = {}
    if d is not None and len(d):
        idc = next((c for c in ("id", "detector", "ID") if c in d.columns), d.columns[0])
        for r in d.astype(object).to_dict("records"):
            out[str(r[idc])] = (r.get("applies"), r.get("count"), r.get("severity"))
    f = getattr(analysis, "findings", None)
    if f is not None and len(f):
        for det, n in f["detector"].astype(str).value_counts().items():
            a, c, s_ = out.get(det, (None, None, None))
            if a is None:   # a sub-id (S1a) inherits applicability/severity from its detector (S1)
                parent = next((k for k in out if det.startswith(k) and k != det), None)
                if parent:
                    a, s_ = (a if a is not None else out[parent][0]), (s_ or out[parent][2])
            out[det] = (a, int(n) if c is None else c, s_)
    return out


def comparison_ids(*count_maps: dict[str, Any]) -> list[str]:
    """The detector and finding ids of the analyses, in the registry's report order (unknown last)."""
    from ..detectors import report_order
    order = report_order()
    ids = set().union(*count_maps)
    return sorted(ids, key=lambda k: (order.index(k) if k in order else len(order), k))


def render_comparison(a: Any, b: Any, labels: Sequence[str] = ("A", "B"), *,
                      opts: plots.PlotOptions | None = None, top: int = 10,
                      lead: Sequence[Section] = ()) -> str:
    """Side-by-side report of two analyses (e.g. the same scenario on two kernels); `lead`
    sections (the harness's verdicts) come first, in the page and in its navigation."""
    la, lb = str(labels[0]), str(labels[1])
    ca, cb = _count_map(a), _count_map(b)
    ids = comparison_ids(ca, cb)
    rows = []
    for k in ids:
        aa, an, asv = ca.get(k, (None, None, None))
        ba, bn, bsv = cb.get(k, (None, None, None))
        rows.append((k, asv or bsv, _fmt(aa), an if an is not None else 0, _fmt(ba), bn if bn is not None else 0))
    opts = opts or plots.PlotOptions(width_px=1200, height_px=800)
    cols = []
    for p, lab, an in (("a-", la, a), ("b-", lb, b)):
        kr = getattr(an.meta, "kernel_release", None) or "unknown kernel"
        pngs = render_plots(an, opts)
        cols.append(f"<div><h2>{e(lab)}</h2><p>{e(kr)}</p>"
                    + section_summary(an, p, compact=True) + section_metadata(an, p) + section_plots(an, pngs, p)
                    + section_findings(an, top, narratives=3, p=p, compact=True) + section_consistency(an, p) + "</div>")
    body = ("".join(s.html for s in lead) + '<section id="comparison"><h2>Comparison</h2>'
            + table(rows, ["detector", "severity", f"applies ({la})", f"count ({la})",
                           f"applies ({lb})", f"count ({lb})"])
            + "</section>" + f'<div class="cmp">{cols[0]}{cols[1]}</div>')
    nav = [*((s.anchor, s.title) for s in lead), ("comparison", "Comparison"), ("a-summary", f"{la}: summary"), ("a-timeline", f"{la}: timeline"),
           ("b-summary", f"{lb}: summary"), ("b-timeline", f"{lb}: timeline")]
    return _page(f"mtaudit comparison — {la} vs {lb}", _generated(), nav, body)


def write_text(path: str, text: str) -> None:
    """Atomic write, then the permissions a plain open() would give (mkstemp makes 0600;
    a report is meant to be shared)."""
    with atomic_file(path, "w") as fh:
        fh.write(text)
    plots.default_mode(path)


def write_report(analysis: Any, path: str, **kw: Any) -> None:
    write_text(path, render_report(analysis, **kw))


def write_comparison(a: Any, b: Any, labels: Sequence[str], path: str, **kw: Any) -> None:
    write_text(path, render_comparison(a, b, labels, **kw))
