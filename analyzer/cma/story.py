"""Why test_pages_isolated() found a page busy: the page's story up to the test, from the trace.

test_pages_isolated() walks the range and stops at the first page that is neither a free buddy
page nor (offline only) poisoned/offline: fin_pfn.  Such a page is busy for one of few reasons the
trace can show: it is allocated (its last mm_page_alloc has no free after it), it sits on a
per-cpu list (pcp pages are not PageBuddy), or its pageblock was not isolated at all (then
fin_pfn is the block's first pfn).  For an allocated page the story says who allocated it, when,
for what, whether that happened after its range was isolated (S5), and whether the page got onto
the freelist it was allocated from by a migratetype mismatch (S6 / S1 / S2 findings on it).
Where the trace has no record that explains the page, the story says which record is missing.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..kernels import ISOLATE, mt_name
from .calls import column

MISMATCH = ("S6", "S1", "S1a", "S1b", "S2", "S3")
_FREES = ("mm_page_free", "mm_page_free_batched")


class PageIndex:
    """The page events as numpy columns, read once for every busy pfn of a capture."""

    KINDS = (("alloc", "mm_page_alloc"), ("free", "mm_page_free"), ("free", "mm_page_free_batched"),
             ("taken", "mm_page_alloc_zone_locked"), ("drain", "mm_page_pcpu_drain"))

    def __init__(self, model: Any, findings: pd.DataFrame | None):
        ev = model.events
        self.model = model
        self.pbo = int(model.pageblock_order)
        parts = []
        self.comm: list[np.ndarray] = []
        for k, (_kind, name) in enumerate(self.KINDS):
            df = ev.get(name)
            c = _cols(df, ("seq", "ts", "cpu", "pid", "pfn", "order", "gfp_flags", "migratetype"))
            c["kind"] = np.full(len(c["seq"]), k, np.int64)
            parts.append(c)
            self.comm.append(df["comm"].astype(str).to_numpy() if df is not None and len(df) and "comm" in df.columns
                             else np.array([""] * len(c["seq"]), dtype=object))
        self.off = np.cumsum([0] + [len(p["seq"]) for p in parts])
        self.ev = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        self.has_alloc_event = bool(len(parts[0]["seq"]))
        self.res = getattr(model, "residency", None)
        self.findings = findings if findings is not None else pd.DataFrame()

    def covering(self, pfn: int) -> np.ndarray:
        p, o = self.ev["pfn"], np.minimum(np.maximum(self.ev["order"], 0), 40)
        return (p >= 0) & (p <= pfn) & (pfn < p + (np.int64(1) << o))

    def allocated_at(self, pfn: int, before_seq: int) -> dict | None:
        """The last mm_page_alloc whose head is `pfn` before `before_seq`."""
        e = self.ev
        idx = np.flatnonzero((e["kind"] == 0) & (e["pfn"] == pfn) & (e["seq"] < before_seq))
        return self.record(int(idx[np.argmax(e["seq"][idx])])) if len(idx) else None

    def record(self, i: int) -> dict:
        k = int(self.ev["kind"][i])
        j = i - int(self.off[k])
        e = self.ev
        return {"kind": self.KINDS[k][0], "event": self.KINDS[k][1], "seq": int(e["seq"][i]), "ts": int(e["ts"][i]),
                "cpu": int(e["cpu"][i]), "pid": int(e["pid"][i]), "comm": str(self.comm[k][j]),
                "pfn": int(e["pfn"][i]), "order": int(e["order"][i]),
                "gfp_flags": hex(int(e["gfp_flags"][i]) & 0xFFFFFFFFFFFFFFFF) if k == 0 else None,
                "migratetype": mt_name(int(e["migratetype"][i])) if k in (0, 3, 4) else None}


def _cols(df: pd.DataFrame | None, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    n = 0 if df is None else len(df)
    out = {}
    for name in names:
        if df is not None and name in df.columns:
            if name in ("pfn", "gfp_flags"):
                out[name] = column(df, name, np.uint64, 0).view(np.int64)
            else:
                out[name] = column(df, name, np.int64, 0)
        else:
            out[name] = np.zeros(n, np.int64)
    return out


def busy_story(ix: PageIndex, pfn: int, test_seq: int, window_seq: int) -> dict:
    """The story of busy page `pfn` at the test with seq `test_seq`; `window_seq` is the record
    after which its range was isolated (the attempt's start)."""
    story: dict[str, Any] = {"pfn": pfn, "block": pfn >> ix.pbo, "state": "unknown", "findings": []}
    st = ix.model.block_type_at(np.array([pfn], np.uint64), np.array([test_seq], np.int64))
    block_mt, conf = int(st.mt[0]), int(st.confidence[0])
    story["block_type_at_test"] = mt_name(block_mt) if block_mt >= 0 else None
    if block_mt >= 0 and conf == 2 and block_mt != ISOLATE and pfn == (pfn >> ix.pbo) << ix.pbo:
        story["state"] = "block-not-isolated"
        story["text"] = (f"pageblock {pfn >> ix.pbo} was {mt_name(block_mt)}, not Isolate, at the test: "
                         "test_pages_isolated stops at the first block that is not isolated")
        return story
    cov = np.flatnonzero(ix.covering(pfn) & (ix.ev["seq"] < test_seq))
    if len(cov):
        order = cov[np.argsort(ix.ev["seq"][cov], kind="stable")]
        last = ix.record(int(order[-1]))
        story["last_record"] = last
        story["after_isolation"] = bool(last["seq"] > window_seq)
        kinds = ix.ev["kind"][order]
        frees = order[((kinds == 1) | (kinds == 2)) & (ix.ev["seq"][order] < last["seq"])]
        since = int(ix.ev["seq"][frees[-1]]) if len(frees) else -1
        story["findings"] = _findings(ix, last["pfn"], last["order"], since, test_seq)
        allocs = order[kinds == 0]
        if len(allocs):
            story["allocation"] = ix.record(int(allocs[-1]))
    stay = _pcp_stay(ix, pfn, test_seq)
    if stay is not None:
        story["pcp"] = stay
    story["state"], story["text"] = _verdict(story, ix)
    nxt = np.flatnonzero(ix.covering(pfn) & (ix.ev["seq"] > test_seq) & ((ix.ev["kind"] == 1) | (ix.ev["kind"] == 2)))
    if story["state"] == "allocated" and len(nxt):
        f = ix.record(int(nxt[np.argmin(ix.ev["seq"][nxt])]))
        story["freed_after_test"] = f
        story["text"] += f"; it was freed only at {f['ts'] / 1e9:.6f} s, by {_who(f)}"
    return story


def _pcp_stay(ix: PageIndex, pfn: int, at_seq: int) -> dict | None:
    """The pcp stay holding the page at the test, if the model has one."""
    r = ix.res
    if r is None or not len(r):
        return None
    p, o = column(r, "pfn", np.int64, -1), np.minimum(column(r, "order", np.int64, 0), 40)
    es, ls = column(r, "enter_seq", np.int64, -1), column(r, "leave_seq", np.int64, -1)
    m = (p <= pfn) & (pfn < p + (np.int64(1) << o)) & (es < at_seq) & ((ls < 0) | (ls > at_seq))
    idx = np.flatnonzero(m)
    if not len(idx):
        return None
    i = int(idx[-1])
    return {"cpu": int(column(r, "cpu", np.int64, -1)[i]), "enter_seq": int(es[i]),
            "block_mt_enter": mt_name(int(column(r, "block_mt_enter", np.int64, -1)[i])),
            "enter_ts": int(column(r, "enter_ts", np.int64, 0)[i]), "enter_kind": str(r["enter_kind"].iloc[i]),
            "cached_mt": mt_name(int(column(r, "cached_mt", np.int64, -1)[i]))}


def _findings(ix: PageIndex, head: int, order: int, since_seq: int, test_seq: int) -> list[dict]:
    """Findings on the page from its previous free to the test (S5 at the allocation,
    S6/S1/S2 on the drain or refill that put it on the freelist it came from)."""
    f = ix.findings
    if f is None or not len(f):
        return []
    n = 1 << max(0, min(int(order), 40))
    fp = column(f, "pfn", np.uint64, 0).astype(np.int64)
    fs = column(f, "seq", np.int64, -1)
    m = (fp >= head) & (fp < head + n) & (fs >= since_seq) & (fs <= test_seq)
    out = []
    for i in np.flatnonzero(m):
        out.append({"detector": str(f["detector"].iloc[i]), "seq": int(fs[i]), "ts": int(f["ts"].iloc[i]),
                    "event": str(f["event"].iloc[i]), "explanation": str(f["explanation"].iloc[i])})
    return out


def _first_ts(story: dict, ids: list[str]) -> str:
    ts = [x["ts"] for x in story["findings"] if x["detector"] in ids]
    return f"at {min(ts) / 1e9:.6f} s" if ts else ""


def _who(a: dict) -> str:
    return f"{a['comm']}[{a['pid']}]" if a.get("comm") else f"pid {a['pid']}"


def _verdict(story: dict, ix: PageIndex) -> tuple[str, str]:
    pfn = story["pfn"]
    last = story.get("last_record")
    stay = story.get("pcp")
    det = sorted({x["detector"] for x in story["findings"]})
    mism = [d for d in det if d in MISMATCH]
    how = (f"; it had reached that freelist by a migratetype mismatch ({', '.join(mism)} {_first_ts(story, mism)})"
           if mism else "")
    if last is None:
        if not ix.has_alloc_event:
            return "no-record", (f"no kmem:mm_page_alloc in the trace: the owner of pfn 0x{pfn:x} cannot be told "
                                 "(enable kmem:mm_page_alloc and kmem:mm_page_free)")
        return "no-record", (f"no traced record of pfn 0x{pfn:x} before the test: it was allocated before tracing "
                             "began, by cma_alloc()/alloc_contig_range() (which take pages off the freelists "
                             "without mm_page_alloc) or at boot; trace from boot (trace_event= on the kernel "
                             "command line) to see its owner")
    at = f"{last['ts'] / 1e9:.6f} s"
    who = f"{_who(last)} on cpu{last['cpu']}"
    iso = " after its range was isolated" if story["after_isolation"] else " before its range was isolated"
    head = f", head pfn 0x{last['pfn']:x}" if last["pfn"] != pfn else ""
    if last["kind"] == "alloc":
        s5 = " (S5)" if "S5" in det else ""
        tail = ("" if story["after_isolation"]
                else "; migration did not move it (still referenced, pinned or not migratable)")
        return "allocated", (f"in use: allocated at {at} by {who} (order {last['order']}{head}, "
                             f"{last['migratetype']} request, gfp {last['gfp_flags']}){iso}{s5}, not freed before "
                             f"the test{how.replace('that freelist', 'the freelist it was allocated from')}{tail}")
    if last["kind"] == "taken":
        if stay is not None and stay["enter_seq"] == last["seq"]:
            blk = " while its block was isolated" if stay["block_mt_enter"] == "Isolate" else ""
            return "pcp", (f"on the pcp list of cpu{stay['cpu']} at the test: taken from the {last['migratetype']} "
                           f"freelist into that pcp list (a refill) at {at} by {who}{blk or iso}{how}; pcp pages "
                           "are not free buddy pages, so the range is busy")
        return "taken", (f"taken from the {last['migratetype']} freelist at {at} by {who} (order {last['order']})"
                         f"{iso}{how}; its mm_page_alloc had not been recorded by the test: being allocated")
    if last["kind"] == "free":
        if stay is not None and stay["enter_seq"] == last["seq"]:
            return "pcp", (f"on the pcp list of cpu{stay['cpu']} at the test: freed into it at {at} by {who} "
                           f"as {stay['cached_mt']}{iso}; pcp pages are not free buddy pages, so the range is busy")
        return "freed", (f"freed at {at} by {who}{iso} and, per the trace, free in the buddy allocator at the "
                         "test: what held it is not traced (a pcp stay the model could not pair, or an "
                         "allocation without kmem:mm_page_alloc)")
    return "freed", (f"drained to the {last['migratetype']} freelist at {at} by {who}{iso} and, per the trace, "
                     "free at the test: what held it is not traced (an allocation without kmem:mm_page_alloc, "
                     "e.g. by alloc_contig_range() itself)")


def holders(ix: PageIndex, lo: int, hi: int, before_seq: int) -> list[dict]:
    """Allocations live in [lo, hi) just before `before_seq`, grouped by owner, order and gfp
    (largest order first): the pages alloc_contig_range() had to migrate out of the range."""
    e = ix.ev
    sel = np.flatnonzero((e["pfn"] >= lo) & (e["pfn"] < hi) & (e["seq"] < before_seq)
                         & ((e["kind"] == 0) | (e["kind"] == 1)))
    if not len(sel):
        return []
    sel = sel[np.lexsort((e["seq"][sel], e["pfn"][sel]))]
    last_of = np.r_[e["pfn"][sel][1:] != e["pfn"][sel][:-1], True]   # the last record per head pfn
    live = sel[last_of & (e["kind"][sel] == 0)]
    groups: dict[tuple, dict] = {}
    for i in live:
        r = ix.record(int(i))
        k = (r["comm"], r["pid"], r["order"], r["gfp_flags"])
        g = groups.setdefault(k, {"owner": _who(r), "order": r["order"], "gfp_flags": r["gfp_flags"],
                                  "allocations": 0, "pages": 0, "first_ts": r["ts"], "last_ts": r["ts"]})
        g["allocations"] += 1
        g["pages"] += 1 << r["order"]
        g["first_ts"], g["last_ts"] = min(g["first_ts"], r["ts"]), max(g["last_ts"], r["ts"])
    return sorted(groups.values(), key=lambda g: (-g["order"], -g["pages"]))
