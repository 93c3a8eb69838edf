"""The story of one page (or pageblock) in words, from the data.

The 2012 CMA thread explained its bug as a story: "freed to pcp as CMA -> block
isolated -> drained to the CMA freelist while the block was ISOLATE -> refilled
as MOVABLE -> ...".  `history()` rebuilds that story for any pfn from the model's
event frames, block history and isolation windows, with the block type the model
held at each step, so a kernel developer can check a finding by reading it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .kernels import mt_name
from .model.query import col, fmt_pfn, match_leave, str_eq

HISTORY_COLUMNS = ["seq", "ts", "cpu", "event", "text"]
_WHO = {"cma": "cma_alloc", "contig": "alloc_contig_range", "offline": "memory offline"}


def _rows_for(model, lo: int, hi: int, block_lo: int, block_hi: int):
    """Event rows touching pfns [lo, hi) (page events) or blocks [block_lo, block_hi] (block events)."""
    pbo = int(model.pageblock_order)
    out = []
    for name, df in (getattr(model, "events", None) or {}).items():
        if df is None or len(df) == 0:
            continue
        cols = set(df.columns)
        if name in ("mm_page_alloc", "mm_page_free", "mm_page_alloc_zone_locked", "mm_page_pcpu_drain",
                    "mm_page_free_batched"):
            p = col(df, "pfn", np.uint64).astype(np.int64)
            o = col(df, "order", np.int64) if "order" in cols else np.zeros(len(df), np.int64)
            m = (p < hi) & (p + (np.int64(1) << np.minimum(o, 40)) > lo) & (p > 0)
        elif name == "mm_page_alloc_extfrag":
            p = col(df, "pfn", np.uint64).astype(np.int64)
            fo = col(df, "fallback_order", np.int64)
            m = (p < hi) & (p + (np.int64(1) << np.minimum(np.maximum(fo, 0), 40)) > lo)
            # a claim retypes the whole block (or 2^(fo - pbo) blocks) even when the buddy it
            # took does not cover the asked pfn: the retype is part of this page's story
            nblk = np.int64(1) << np.maximum(fo - pbo, 0)
            head = np.where(fo >= pbo, (p >> np.minimum(np.maximum(fo, 0), 62)) << np.minimum(np.maximum(fo, 0), 62), p) >> pbo
            claim = col(df, "change_ownership", np.int64) != 0
            m |= claim & (head <= block_hi) & (head + nblk - 1 >= block_lo)
        elif "pfn" in cols and "mask" in cols or name == "setmt":           # ground-truth kprobe
            b = col(df, "pfn", np.uint64).astype(np.int64) >> pbo
            m = (b >= block_lo) & (b <= block_hi)
            if "mask" in cols:
                m &= col(df, "mask", np.int64) == 7
        elif "start_pfn" in cols and "end_pfn" in cols:                    # test_pages_isolated
            s, e = col(df, "start_pfn", np.uint64).astype(np.int64), col(df, "end_pfn", np.uint64).astype(np.int64)
            m = (s >> pbo <= block_hi) & ((e - 1) >> pbo >= block_lo)
        elif name == "mm_alloc_contig_migrate_range_info":
            s, e = col(df, "start", np.uint64).astype(np.int64), col(df, "end", np.uint64).astype(np.int64)
            m = (s >> pbo <= block_hi) & ((e - 1) >> pbo >= block_lo)
        elif name in ("cma_alloc_finish", "cma_alloc_busy_retry", "cma_release") and "pfn" in cols:
            s = col(df, "pfn", np.uint64).astype(np.int64)
            c = col(df, "count", np.int64)
            m = (s >> pbo <= block_hi) & ((s + np.maximum(c, 1) - 1) >> pbo >= block_lo)
        else:
            continue
        idx = np.flatnonzero(m)
        if len(idx):
            out.append((name, df.iloc[idx]))
    return out


def history(model, pfn: int | None = None, block: int | None = None,
            findings: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows (seq, ts, cpu, event, text) for one page or one whole pageblock, in time order."""
    pbo = int(model.pageblock_order)
    if block is None:
        block = int(pfn) >> pbo
        lo, hi = int(pfn), int(pfn) + 1
    else:
        lo, hi = int(block) << pbo, (int(block) + 1) << pbo
    rows: list[tuple] = []
    for name, df in _rows_for(model, lo, hi, block, block):
        rows.extend(_describe(model, name, df))
    rows.extend(_block_rows(model, block))
    if findings is not None and len(findings):
        p = col(findings, "pfn", np.uint64).astype(np.int64)
        b = col(findings, "block", np.int64)
        sel = np.flatnonzero(((p >= lo) & (p < hi)) | ((b == block) & (findings["event"].astype(str) == "cma-block-lost").to_numpy()))
        for i in sel:
            r = findings.iloc[i]
            rows.append((int(r["seq"]), int(r["ts"]), int(r["cpu"]), f"finding:{r['detector']}",
                         f"!! {r['detector']} ({r['severity']}): {r['explanation']}"))
    # findings sort right after the record they are about; model rows by time
    rows.sort(key=lambda r: (r[1], r[0] if r[0] >= 0 else 1 << 62, r[3].startswith("finding")))
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


# Steps that change what a page's migratetype means; routine free/alloc cycles between
# them are summarised so the story stays readable for pages reused thousands of times.
_TURNING = ("finding:", "isolation", "mm_page_alloc_extfrag", "setmt", "kprobe:", "cma_", "test_pages")


def narrative(model, pfn: int, findings: pd.DataFrame | None = None, context: int = 3) -> list[str]:
    """The page's story as short steps (join them with ' -> ' to print one line).

    Batched-free records repeat the preceding free and are left out.  When the
    story has turning points (findings, retypes, isolation, fallbacks), only
    `context` steps around each are kept and each gap becomes "(N routine steps)".
    """
    h = history(model, pfn=pfn, findings=findings)
    steps = [(e, f"!! {e.split(':', 1)[1]}" if e.startswith("finding:") else t)
             for e, t in zip(h["event"], h["text"])
             if not e.startswith("model:") and e != "mm_page_free_batched"]
    turning = [i for i, (e, t) in enumerate(steps)
               if e.startswith(_TURNING) or t.startswith("kprobe:") or " while block " in t
               and not _same_type_clause(t)]
    if not turning or context < 0:
        return [t for _, t in steps]
    keep = np.zeros(len(steps), bool)
    for i in turning:
        keep[max(0, i - context):i + context + 1] = True
    out, gap = [], 0
    for i, (_, t) in enumerate(steps):
        if keep[i]:
            if gap:
                out.append(f"({gap} routine steps)")
                gap = 0
            out.append(t)
        else:
            gap += 1
    if gap:
        out.append(f"({gap} routine steps)")
    return out


def _same_type_clause(text: str) -> bool:
    """'drained ... to the Movable freelist while block Movable' is routine, not a turning point."""
    head, _, tail = text.partition(" while block ")
    return bool(tail) and f"the {tail} freelist" in head


def _block_rows(model, block: int):
    rows = []
    bl = getattr(model, "blocks", None)
    if bl is not None and len(bl):
        b = col(bl, "block", np.int64)
        sel = np.flatnonzero(b == block)
        st = col(bl, "start_ts", np.int64)[sel]
        mt = col(bl, "migratetype", np.int16, -1)[sel]
        src = bl["source"].astype(str).to_numpy()[sel]
        conf = bl["confidence"].astype(str).to_numpy()[sel]
        live_ts = getattr(model, "kprobe_live_ts", None)
        for k in np.argsort(st, kind="stable"):
            g = (live_ts is not None and getattr(model, "ground_truth", False) and st[k] < live_ts
                 and conf[k] != "known")
            rows.append((-1, int(st[k]), -1, "model:block-type",
                         f"model: pageblock {block} is {mt_name(mt[k])} ({src[k]}, {conf[k]}"
                         + ("; a guess: before the kprobe was live)" if g else ")")))
    iso = getattr(model, "isolation", None)
    if iso is not None and len(iso):
        pbo = int(model.pageblock_order)
        s_b = (col(iso, "start_pfn", np.uint64) >> np.uint64(pbo)).astype(np.int64)
        e_b = ((col(iso, "end_pfn", np.uint64) - np.uint64(1)) >> np.uint64(pbo)).astype(np.int64)
        kind = iso["kind"].astype(str).to_numpy()
        name = iso["name"].astype(str).to_numpy() if "name" in iso.columns else np.array([""] * len(iso))
        rmt = col(iso, "restore_mt", np.int16, -1)
        s_ts, e_ts = col(iso, "start_ts", np.int64), col(iso, "end_ts", np.int64)
        s_sq = col(iso, "start_seq", np.int64, -1) if "start_seq" in iso.columns else np.full(len(iso), -1)
        e_sq = col(iso, "end_seq", np.int64, -1) if "end_seq" in iso.columns else np.full(len(iso), -1)
        for i in np.flatnonzero((s_b <= block) & (e_b >= block)):
            who = _WHO.get(kind[i], kind[i]) + (f"({name[i]})" if name[i] else "")
            rows.append((int(s_sq[i]), int(s_ts[i]), -1, "isolation", f"block isolated by {who}"))
            rows.append((int(e_sq[i]), int(e_ts[i]), -1, "isolation",
                         f"isolation by {who} ends: block restored to {mt_name(rmt[i])}"))
    return rows


def _describe(model, name: str, df: pd.DataFrame):
    seq = col(df, "seq", np.int64)
    ts = col(df, "ts", np.int64)
    cpu = col(df, "cpu", np.int64)
    pfn = col(df, "pfn", np.uint64) if "pfn" in df.columns else np.zeros(len(df), np.uint64)
    st = model.block_type_at(pfn, seq) if "pfn" in df.columns else None
    bt = np.asarray(st.mt) if st is not None else None
    order = col(df, "order", np.int64) if "order" in df.columns else np.zeros(len(df), np.int64)
    mt = col(df, "migratetype", np.int16, -1) if "migratetype" in df.columns else None
    guess = _guessed(model, st, seq) if st is not None else np.zeros(len(df), bool)
    if st is not None and hasattr(st, "guess"):   # before the probe: name the type the model guesses
        bt = np.where(guess, np.asarray(st.guess), bt)
    out = []
    if name == "mm_page_free":
        enter = _enter_rows(model, seq, "free")
        for i in range(len(df)):
            if enter[i] is not None:
                c = enter[i]["cached_mt"]
                t = f"freed to pcp cpu{cpu[i]} as {mt_name(c)}" + (
                    f" (block {_bt(bt[i], guess[i])})" if bt[i] != c else "")
            else:
                t = (f"freed (order {order[i]}) on cpu{cpu[i]} to the buddy allocator, block "
                     f"{_bt(bt[i], guess[i])}")
            out.append((seq[i], ts[i], cpu[i], name, t))
    elif name == "mm_page_free_batched":
        out += [(seq[i], ts[i], cpu[i], name, f"batch-freed on cpu{cpu[i]}") for i in range(len(df))]
    elif name == "mm_page_alloc_zone_locked":
        enter = _enter_rows(model, seq, "refill")
        for i in range(len(df)):
            what = (f"refilled into pcp cpu{cpu[i]} as {mt_name(mt[i])}" if enter[i] is not None
                    else f"taken by cpu{cpu[i]} from the {mt_name(mt[i])} freelist (order {order[i]})")
            if bt[i] != mt[i]:
                what += f" while block {_bt(bt[i], guess[i])}"
            out.append((seq[i], ts[i], cpu[i], name, what))
    elif name == "mm_page_alloc":
        leave, _ = match_leave(model, "alloc", seq)
        for i in range(len(df)):
            t = f"allocated on cpu{cpu[i]} for a {mt_name(mt[i])} request (order {order[i]})"
            if leave[i] >= 0:
                t += " from the pcp list"
            if st is not None and bool(np.asarray(st.isolated)[i]):
                t += " while the block was isolated"
            out.append((seq[i], ts[i], cpu[i], name, t))
    elif name == "mm_page_pcpu_drain":
        # drain_all_pages() empties other CPUs' lists from the calling CPU: the list is the
        # CPU the page entered it on (its pcp stay), the record's cpu is who drained it
        leave, res = match_leave(model, "drain", seq)
        owner = cpu.copy()
        if res is not None and (leave >= 0).any():
            owner[leave >= 0] = col(res.iloc[leave[leave >= 0]], "cpu", np.int64, -1)
        for i in range(len(df)):
            who = (f"pcp cpu{owner[i]}" if owner[i] == cpu[i]
                   else f"pcp cpu{owner[i]} (remote drain by cpu{cpu[i]})")
            out.append((seq[i], ts[i], cpu[i], name,
                        f"drained from {who} to the {mt_name(mt[i])} freelist while block "
                        f"{_bt(bt[i], guess[i])}"))
    elif name == "mm_page_alloc_extfrag":
        am, fm = col(df, "alloc_migratetype", np.int16, -1), col(df, "fallback_migratetype", np.int16, -1)
        co = col(df, "change_ownership", np.int64)
        for i in range(len(df)):
            t = (f"fallback on cpu{cpu[i]}: a {mt_name(am[i])} request took {fmt_pfn(pfn[i])} from the "
                 f"{mt_name(fm[i])} freelist" + (f", claiming the block for {mt_name(am[i])}" if co[i] else ""))
            out.append((seq[i], ts[i], cpu[i], name, t))
    elif name in ("cma_alloc_finish", "cma_alloc_busy_retry", "cma_release"):
        nm = df["name"].astype(str).to_numpy() if "name" in df.columns else [""] * len(df)
        cnt = col(df, "count", np.int64)
        err = col(df, "errorno", np.int64) if "errorno" in df.columns else np.zeros(len(df), np.int64)
        for i in range(len(df)):
            what = {"cma_alloc_finish": f"cma_alloc({nm[i]}) done at {fmt_pfn(pfn[i])} (+{cnt[i]} pages)"
                    + (f", error {err[i]}" if err[i] else ""),
                    "cma_alloc_busy_retry": f"cma_alloc({nm[i]}) found {fmt_pfn(pfn[i])} busy, retrying",
                    "cma_release": f"cma_release({nm[i]}) of {cnt[i]} pages at {fmt_pfn(pfn[i])}"}[name]
            out.append((seq[i], ts[i], cpu[i], name, what))
    elif name == "mm_alloc_contig_migrate_range_info":
        s0, e0 = col(df, "start", np.uint64), col(df, "end", np.uint64)
        mig, rec = col(df, "nr_migrated", np.int64), col(df, "nr_reclaimed", np.int64)
        for i in range(len(df)):
            out.append((seq[i], ts[i], cpu[i], name,
                        f"alloc_contig_range migrated {mig[i]} and reclaimed {rec[i]} pages in "
                        f"[{fmt_pfn(s0[i])}, {fmt_pfn(e0[i])})"))
    elif name == "test_pages_isolated":
        s0, e0 = col(df, "start_pfn", np.uint64), col(df, "end_pfn", np.uint64)
        fin = col(df, "fin_pfn", np.uint64)
        for i in range(len(df)):
            ok = "success" if e0[i] <= fin[i] else f"fail at {fmt_pfn(fin[i])}"
            out.append((seq[i], ts[i], cpu[i], name,
                        f"test_pages_isolated [{fmt_pfn(s0[i])}, {fmt_pfn(e0[i])}): {ok}"))
    elif "flags" in df.columns and "mask" in df.columns:
        fl = col(df, "flags", np.int64)
        out += [(seq[i], ts[i], cpu[i], name, f"kprobe: block set to {mt_name(fl[i])}") for i in range(len(df))]
    else:
        for i, r in enumerate(df.drop(columns=["seq", "ts", "cpu", "pid", "comm"], errors="ignore")
                              .itertuples(index=False)):
            fields = " ".join(f"{k}={_fmt(k, v)}" for k, v in zip(df.columns.drop(
                ["seq", "ts", "cpu", "pid", "comm"], errors="ignore"), r))
            out.append((seq[i], ts[i], cpu[i], name, f"{name} {fields}"))
    return [(int(a), int(b), int(c), d, e) for a, b, c, d, e in out]


def _guessed(model, st, seq: np.ndarray) -> np.ndarray:
    """Block types at records before the kprobe was live are the model's guess, unless known."""
    live = getattr(model, "kprobe_live_seq", None)
    if not getattr(model, "ground_truth", False) or live is None:
        return np.zeros(len(seq), bool)
    return (np.asarray(seq) <= int(live)) & (np.asarray(st.confidence) < 2)


def _bt(mt: int, guess: bool) -> str:
    return f"{mt_name(mt)} (a guess: before the kprobe was live)" if guess else mt_name(mt)


def _fmt(k, v):
    if isinstance(v, (int, np.integer)) and ("pfn" in k or k in ("start", "end", "page")):
        return fmt_pfn(int(v) & 0xFFFFFFFFFFFFFFFF)
    return v


def _enter_rows(model, seq: np.ndarray, kind: str):
    """Residency row (as dict) that each record started, or None."""
    res = getattr(model, "residency", None)
    out: list[dict[str, int] | None] = [None] * len(seq)
    if res is None or len(res) == 0:
        return out
    es = col(res, "enter_seq", np.int64, -1)
    sel = np.flatnonzero(str_eq(res, "enter_kind", kind))
    order = np.argsort(es[sel], kind="stable")
    s_sorted = es[sel][order]
    pos = np.searchsorted(s_sorted, seq)
    cached = col(res, "cached_mt", np.int16, -1)
    for i in range(len(seq)):
        if pos[i] < len(s_sorted) and s_sorted[pos[i]] == seq[i]:
            out[i] = {"cached_mt": int(cached[sel[order[pos[i]]]])}
    return out
