"""Per-allocation CMA explanations: why each cma_alloc() failed, retried or was slow.

`explain(analysis)` turns the capture's cma_* / test_pages_isolated / migrate-range records
(calls.py) into one row per cma_alloc() call and per alloc_contig_range() seen without CMA,
and gives every failure or retry its reason from the trace: the busy page's story (story.py),
the area's occupancy for -ENOMEM (occupancy.py), or the record that would have shown the cause.
The result is plain JSON types: what `mtaudit cma --json`, `analyze --json` (key "cma"), the
HTML report and `history` read.
"""
from __future__ import annotations

from typing import Any

from .calls import NO_PFN, Attempt, Call, build_calls, errno_name, unswap_migrate_counts
from .occupancy import occupancy_at
from .story import PageIndex, busy_story, holders
from .timing import IsolateWrites, split

__all__ = ["CMA_EVENTS", "explain", "has_cma_events"]

CMA_EVENTS = ("cma_alloc_start", "cma_alloc_finish", "cma_alloc_busy_retry", "cma_release")
NARRATIVE_PFNS = 32      # busy pfns that get the full `history` narrative in the result
FALLBACK_NS = 1_000_000_000


def has_cma_events(model: Any) -> bool:
    ev = getattr(model, "events", None) or {}
    return any(n in ev and len(ev[n]) for n in CMA_EVENTS)


def _releases(model: Any) -> list[tuple[int, int, str, int, int]]:
    import numpy as np

    from .calls import column
    df = model.events.get("cma_release")
    if df is None or not len(df) or "pfn" not in df.columns:
        return []
    names = df["name"].astype(str).to_numpy() if "name" in df.columns else [""] * len(df)
    return list(zip(column(df, "seq", np.int64).tolist(), column(df, "ts", np.int64).tolist(), list(map(str, names)),
                    column(df, "pfn", np.uint64).astype(np.int64).tolist(), column(df, "count", np.int64).tolist()))


def _attempt_json(a: Attempt, pbo: int) -> dict:
    lo, hi = a.isolated(pbo)
    return {"pfn": a.pfn, "count": a.count, "outcome": a.outcome, "ts_start": a.start_ts, "ts_end": a.end_ts,
            "isolated": [lo, hi],
            "tests": [{"ts": t.ts, "start_pfn": t.start_pfn, "end_pfn": t.end_pfn, "fin_pfn": t.fin_pfn,
                       "ok": t.ok} for t in a.tests],
            "migrate": [{"ts": m.ts, "start": m.start, "end": m.end, "nr_migrated": m.nr_migrated,
                         "nr_reclaimed": m.nr_reclaimed, "nr_mapped": m.nr_mapped} for m in a.migrate]}


def _busy(c: Call, ix: PageIndex, tpi_traced: bool) -> list[dict]:
    out = []
    for k, a in enumerate(c.attempts):
        if a.outcome not in ("busy", "failed"):
            continue
        t = a.failed_test
        if t is None and a.outcome == "failed" and c.error not in (None, -16):
            continue                  # an error other than -EBUSY: the reason covers it, no page is named
        if t is None:
            why = ("page_isolation:test_pages_isolated is not traced, so the busy page is unknown"
                   if not tpi_traced else
                   "no test_pages_isolated for this attempt: the range was refused before the test "
                   "(start_isolate_page_range() found an unmovable page, or migration failed with an "
                   "error other than -EBUSY); no tracepoint names that page")
            out.append({"attempt": k, "pfn": None, "story": {"state": "no-record", "text": why}})
            continue
        s = busy_story(ix, t.fin_pfn, t.seq, a.start_seq)
        s["test_ts"] = t.ts
        if a.migrate:
            m = a.migrate[-1]
            s["migrate"] = {"nr_migrated": m.nr_migrated, "nr_reclaimed": m.nr_reclaimed, "nr_mapped": m.nr_mapped}
        out.append({"attempt": k, "pfn": t.fin_pfn, "story": s})
    return out


def _area_extent(meta: Any, name: str) -> tuple[int, int] | None:
    for n, base, count in getattr(meta, "cma_areas", []) or []:
        if n == name:
            return int(base), int(count)
    return None


def _extent(meta: Any, c: Call, calls: list[Call], releases: list[tuple[int, int, str, int, int]]
            ) -> tuple[int, int] | None:
    """The area's (base, count): the capture's, unless 6.18+'s cma_alloc_start total_count says
    otherwise (an extent guessed from event pfns); then base = the lowest pfn the records place in
    the area and count = total_count."""
    ext = _area_extent(meta, c.area)
    if c.total is None or (ext is not None and ext[1] == c.total):
        return ext
    pfns = [d.pfn for d in calls if d.kind == "cma" and d.area == c.area and d.ok and d.pfn >= 0]
    pfns += [p for _s, _t, name, p, _n in releases if name == c.area and p > 0]
    return (min(pfns), c.total) if pfns else ext


def _area_of(meta: Any, lo: int, hi: int) -> str:
    for n, base, count in getattr(meta, "cma_areas", []) or []:
        if lo < base + count and base < hi:
            return str(n)
    return ""


def _fmt_pages(n: int | None) -> str:
    return "?" if n is None else f"{n} pages"


def _aligned_room(base: int, count: int, align: int) -> int:
    """Pages from the first 2^align-aligned pfn of the area to its end (cma_alloc() aligns absolute pfns)."""
    step = 1 << max(0, align)
    return max(0, base + count - (base + step - 1) // step * step)


def _range_enomem(c: Call) -> bool:
    """-ENOMEM from alloc_contig_range() on a tried range (not from the bitmap search): the
    finish names the range it tried last and no busy retry ended that attempt."""
    return (c.kind == "cma" and c.ok is False and c.error == -12 and bool(c.attempts)
            and c.attempts[-1].outcome == "failed")


def _range_owner(calls: list[Call], releases: list[tuple[int, int, str, int, int]], c: Call,
                 a: Attempt, ix: PageIndex) -> dict | None:
    """A live cma_alloc() allocation holding the range `c` tried, and the cma_release records
    that cleared its bitmap bits without it being released: then the bitmap search handed out a
    range that is in use."""
    occ = occupancy_at(calls, releases, c.area, None, c.end_seq)
    lo, hi = a.pfn, a.pfn + a.count
    for h in occ.held:
        if h.lo < hi and lo < h.hi:
            d = calls[h.call]
            clr = [(s, ts, p, n) for s, ts, name, p, n in releases
                   if name == c.area and d.start_seq < s < c.start_seq and p < h.hi and h.lo < p + n]
            return {"id": h.call, "pfn": d.pfn, "count": d.count, "owner": f"{d.comm}[{d.pid}]", "ts": d.end_ts,
                    "cleared_by": [{"ts": ts, "pfn": p, "count": n, "allocated_by": ix.allocated_at(p, s)}
                                   for s, ts, p, n in clr]}
    return None


def _origin(clr: list[dict]) -> str:
    """Where the released pages came from, when mm_page_alloc shows them: buddy-allocator pages."""
    src = [x["allocated_by"] for x in clr if x.get("allocated_by")]
    if not src:
        return ", pages whose allocation the trace does not show"
    who = sorted({f"{x['comm']}[{x['pid']}] order {x['order']} gfp {x['gfp_flags']}" for x in src})
    ts = [x["ts"] for x in src]
    return (f"; {len(src)} of them were allocated from the buddy allocator (mm_page_alloc: {', '.join(who[:3])}, "
            f"{min(ts) / 1e9:.3f}-{max(ts) / 1e9:.3f} s), not by cma_alloc(), yet freed through cma_release()")


def _holders_text(h: list[dict]) -> str:
    return ", ".join(f"{x['allocations']} x order {x['order']} by {x['owner']} (gfp {x['gfp_flags']}, "
                     f"{x['first_ts'] / 1e9:.3f}-{x['last_ts'] / 1e9:.3f} s)" for x in h[:4])


def _reason(c: Call, row: dict, occ: dict | None, fallback: dict | None) -> str:
    parts: list[str] = []
    err = errno_name(c.error) or (c.error_inferred and f"{c.error_inferred} (inferred: this kernel's "
                                  "cma_alloc_finish has no errorno)")
    if c.kind == "contig":
        if c.ok:
            return ""
        b = row["busy"][0] if row["busy"] else None
        return (f"alloc_contig_range() [0x{c.pfn:x}, 0x{c.pfn + c.count:x}) without CMA failed its isolation test"
                + (f": busy pfn 0x{b['pfn']:x}: {b['story']['text']}" if b and b.get("pfn") is not None else ""))
    if c.ok is False:
        if _range_enomem(c):
            a = c.attempts[-1]
            mig = a.migrate[-1] if a.migrate else None
            h = row.get("range_holders") or []
            parts.append(f"-ENOMEM from alloc_contig_range() on [0x{a.pfn:x}, 0x{a.pfn + a.count:x}), not from the "
                         "area's bitmap: "
                         + ("the migration step ran (mm_alloc_contig_migrate_range_info at "
                            f"{mig.ts / 1e9:.6f} s) and no isolation test followed, so migrating the range's pages "
                            "failed for lack of destination memory" if mig else
                            "no isolation test followed, so migrating the range's pages failed for lack of "
                            "destination memory")
                         + (f"; pages the range held (largest first): {_holders_text(h)}; a hugetlb or other "
                            "high-order page needs a free destination of the same order" if h else ""))
            own = row.get("range_owner")
            if own is not None:
                clr = own["cleared_by"]
                at = ", ".join(f"0x{x['pfn']:x}" for x in clr[:4]) + ("..." if len(clr) > 4 else "")
                parts.append(f"the range is in use by cma_alloc #{own['id']} ({own['count']} pages at "
                             f"0x{own['pfn']:x} by {own['owner']}, allocated at {own['ts'] / 1e9:.6f} s, not released), "
                             "so the area's bitmap should not have offered it"
                             + (f": {len(clr)} cma_release() record(s) of pages no cma_alloc() returned cleared "
                                f"its bits ({sum(x['count'] for x in clr)} pages at "
                                f"{at}, "
                                f"{clr[0]['ts'] / 1e9:.6f}-{clr[-1]['ts'] / 1e9:.6f} s){_origin(clr)}: the bitmap "
                                "no longer matches the area" if clr else ""))
        elif occ is not None:
            own = "; ".join(f"{o['owner']}: {o['ranges']} range(s), {o['pages']} pages, allocated "
                            f"{o['first_ts'] / 1e9:.3f}-{o['last_ts'] / 1e9:.3f} s" for o in occ["owners"][:4])
            where = (f"{c.area} ({occ['count']} pages at 0x{occ['base_pfn']:x})" if occ["base_pfn"] is not None
                     else f"{c.area} (extent unknown: no 'cma: Reserved' line or --cma)")
            code = ("-ENOMEM" if c.error == -12 or c.error_inferred == "ENOMEM" else
                    f"-{errno_name(c.error)} (no range was tried: this kernel reports an area without a free "
                    "range this way)" if c.error is not None else "failed without trying a range")
            if c.available is not None and c.available < c.count:
                parts.append(f"{code}: cma_alloc_start reported {c.available} of {c.total} pages available, fewer "
                             f"than the {c.count} requested, so no range was searched")
                code = "rebuilt from the trace"
            parts.append(f"{code}: no free range of {c.count} pages aligned to 2^{c.align} pages in {where}: "
                         f"{occ['held_ranges']} traced allocation(s) hold {occ['held_pages']} pages"
                         + (f" ({own})" if own else ""))
            if occ["free_pages"] is not None:
                cmp = "<" if occ["largest_free_aligned"] < c.count else ">="
                parts.append(f"free {occ['free_pages']} pages, largest free range {occ['largest_free']}, "
                             f"largest aligned free range {occ['largest_free_aligned']} {cmp} {c.count} requested")
                whole = _aligned_room(occ["base_pfn"], occ["count"], c.align)
                if whole < c.count:
                    parts.append(f"the area itself has no range of {c.count} pages starting at a multiple of "
                                 f"2^{c.align} pages (base 0x{occ['base_pfn']:x}, {occ['count']} pages: at most "
                                 f"{whole} aligned pages even when empty), so this request can never succeed there")
                elif occ["largest_free_aligned"] >= c.count:
                    parts.append("the rebuilt occupancy would fit the request: allocations made before tracing "
                                 "began (or whose cma_alloc_finish was not traced) must hold the rest, or the "
                                 "area's bitmap granularity (order_per_bit) is coarser than the request's pages")
            if c.available is not None and c.available >= c.count:
                parts.append(f"cma_alloc_start reported {c.available} of {c.total} pages available")
            if occ["untracked_releases"]:
                src = [{"allocated_by": x} for x in occ.pop("untracked_origin") if x]
                parts.append(f"{occ['untracked_releases']} cma_release() record(s) before it freed ranges no traced "
                             f"cma_alloc() held{_origin(src) if src else ''}: each clears bitmap bits the area may "
                             "not own")
            else:
                occ.pop("untracked_origin", None)
        elif c.error == -16 or c.error_inferred == "EBUSY":
            parts.append(f"-EBUSY: every range tried was busy ({len(c.attempts)} attempt(s))")
        elif err:
            parts.append(f"failed with {err}")
        else:
            parts.append("failed (the kernel does not trace the error)")
    elif c.ok and c.retries:
        parts.append(f"succeeded at 0x{c.pfn:x} after {c.retries} busy retr{'y' if c.retries == 1 else 'ies'}")
    for b in row["busy"]:
        if b.get("pfn") is None:
            parts.append(f"attempt {b['attempt'] + 1}: {b['story']['text']}")
        else:
            parts.append(f"attempt {b['attempt'] + 1} at 0x{c.attempts[b['attempt']].pfn:x}: busy pfn "
                         f"0x{b['pfn']:x}: {b['story']['text']}")
    if fallback is not None:
        parts.append(f"then the same task ran alloc_contig_range() [0x{fallback['pfn']:x}, "
                     f"0x{fallback['pfn'] + fallback['count']:x}) outside the area: "
                     f"{'ok' if fallback['ok'] else 'failed'}")
    return "; ".join(parts)


def explain(analysis: Any) -> dict:
    """The "cma" section of analyze --json: allocations (failures and retries first, then the
    slowest), areas and counts.  `available` is False when the capture has no CMA events."""
    model, meta = analysis.model, analysis.meta
    pbo = int(model.pageblock_order)
    calls = build_calls(model.events, pbo)
    swapped = unswap_migrate_counts(calls)
    iso = IsolateWrites(model)
    ix = PageIndex(model, analysis.findings)
    tpi_traced = bool(analysis.event_counts.get("page_isolation:test_pages_isolated")) or (
        "test_pages_isolated" in model.events and len(model.events["test_pages_isolated"]) > 0)
    releases = _releases(model)
    rows: list[dict] = []
    narratives = 0
    for i, c in enumerate(calls):
        if c.kind == "contig":
            c.area = _area_of(meta, c.pfn, c.pfn + c.count)
        row: dict[str, Any] = {
            "id": i, "kind": c.kind, "area": c.area, "pid": c.pid, "comm": c.comm, "cpu": c.cpu,
            "ts_start": c.start_ts, "ts_end": c.end_ts, "latency_ns": c.latency_ns, "complete": c.complete,
            "count": c.count, "align": c.align, "ok": c.ok, "error": c.error,
            "error_name": errno_name(c.error) or c.error_inferred, "error_traced": c.error is not None or bool(c.ok),
            "pfn": c.pfn if c.pfn != NO_PFN else None, "retries": c.retries,
            "attempts": [_attempt_json(a, pbo) for a in c.attempts],
            "available_count": c.available, "total_count": c.total,
        }
        row["busy"] = _busy(c, ix, tpi_traced)
        for b in row["busy"]:
            if b.get("pfn") is not None:
                b["history"] = f"mtaudit history {meta.source} --pfn 0x{b['pfn']:x}"
                if narratives < NARRATIVE_PFNS:
                    b["steps"] = _steps(analysis, b["pfn"], b["story"].get("test_ts"))
                    narratives += 1
        occ = None
        if _range_enomem(c):
            a = c.attempts[-1]
            row["range_holders"] = holders(ix, a.pfn, a.pfn + a.count, c.end_seq)
            row["range_owner"] = _range_owner(calls, releases, c, a, ix)
        elif c.kind == "cma" and c.ok is False and c.complete and not c.attempts:
            o = occupancy_at(calls, releases, c.area, _extent(meta, c, calls, releases), c.end_seq)
            occ = o.summary(c.count, c.align, calls)
            occ["untracked_origin"] = [ix.allocated_at(p, s) for s, p, _n in o.untracked]
        row["occupancy"] = occ
        fb = _fallback(calls, i) if c.kind == "cma" and c.ok is False else None
        row["fallback"] = None if fb is None else {"id": calls.index(fb), "pfn": fb.pfn, "count": fb.count,
                                                   "ok": fb.ok}
        row["time_split"] = split(c, iso, pbo)
        row["reason"] = _reason(c, row, occ, row["fallback"])
        rows.append(row)
    rows.sort(key=_rank)
    cma_rows = [r for r in rows if r["kind"] == "cma"]
    return {
        "available": has_cma_events(model),
        "migrate_counts_reordered": swapped,
        "areas": [{"name": n, "base_pfn": int(b), "count": int(k)} for n, b, k in getattr(meta, "cma_areas", [])],
        "summary": {"calls": len(cma_rows), "failed": sum(1 for r in cma_rows if r["ok"] is False),
                    "retried": sum(1 for r in cma_rows if r["retries"]),
                    "busy_retries": sum(r["retries"] for r in cma_rows),
                    "failed_tests": sum(1 for r in rows for a in r["attempts"] for t in a["tests"] if not t["ok"]),
                    "contig_calls": len(rows) - len(cma_rows),
                    "incomplete": sum(1 for r in cma_rows if not r["complete"])},
        "allocations": rows,
    }


def _rank(r: dict) -> tuple:
    failed = r["ok"] is False
    return (not failed, not r["retries"], -(r["latency_ns"] or -1), r["ts_start"])


def _fallback(calls: list[Call], i: int) -> Call | None:
    """The contig call the same task made right after a failed cma_alloc (hugetlb's fallback)."""
    c = calls[i]
    for d in calls[i + 1:]:
        if d.pid != c.pid:
            continue
        if d.kind == "cma" or d.start_ts - c.end_ts > FALLBACK_NS:
            return None
        return d
    return None


def _steps(analysis: Any, pfn: int, until_ts: int | None, keep: int = 12) -> list[str]:
    """The page's `history` narrative up to the test (its last `keep` steps)."""
    h = analysis.history(pfn=pfn)
    if until_ts is not None and len(h):
        h = h[h["ts"] <= until_ts]
    steps = [f"{ts / 1e9:.6f} {t}" for ts, e, t in zip(h["ts"], h["event"], h["text"])
             if not str(e).startswith("model:") and e != "mm_page_free_batched"]
    return steps[-keep:]


def blocked_by(analysis: Any, pfn: int) -> list[str]:
    """Lines for `history --pfn`: every CMA / contig allocation this page made busy, with why."""
    model = analysis.model
    calls = build_calls(model.events, int(model.pageblock_order))
    ix: PageIndex | None = None
    out = []
    for i, c in enumerate(calls):
        for a in c.attempts:
            for t in a.tests:
                if t.ok or t.fin_pfn != pfn:
                    continue
                ix = ix or PageIndex(model, analysis.findings)
                s = busy_story(ix, pfn, t.seq, a.start_seq)
                what = f"cma_alloc({c.area}) #{i} of {c.count} pages" if c.kind == "cma" else \
                    f"alloc_contig_range() #{i} [0x{a.pfn:x}, 0x{a.pfn + a.count:x})"
                out.append(f"{t.ts / 1e9:14.6f}  blocked {what}: test_pages_isolated failed at this page: "
                           f"{s['text']} (`mtaudit cma {analysis.meta.source}` explains every allocation)")
    return out
