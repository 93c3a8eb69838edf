"""Which zone_locked records are pcp refills, decided over a whole trace in bounded memory.

`pcp.refill_mask` looks across pageblocks: a refill burst is a run of zone_locked records of
one CPU (any pfn) with no alloc/free/drain of that CPU in between.  A pageblock partition
(analyzer/partition.py) sees only its blocks' records, so the decision is taken here, while
the trace streams past once, and handed to each partition as the seqs of its refills.

Records reach `feed` in any order the reader streams them; a record is processed once
every record before it (by `seq`) has arrived (the readers' streams are merged in rounds of
contiguous seqs, so that happens after each round).  Per CPU, a decision is final once a
later alloc/free/drain of that CPU is in: nothing after it can change a burst or a
"direct allocation" before it, so the rows from each CPU's last such record on are carried
to the next round.  Memory: one round plus the carried rows.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..capture.schema import PFN_LIMIT
from .events import Table
from .pcp import refill_mask

ZL, ALLOC, FREE, DRAIN, FREE_BATCHED = 0, 1, 2, 3, 4
SHORT = {"kmem:mm_page_alloc_zone_locked": ZL, "kmem:mm_page_alloc": ALLOC, "kmem:mm_page_free": FREE,
         "kmem:mm_page_pcpu_drain": DRAIN, "kmem:mm_page_free_batched": FREE_BATCHED}
_NAMES = {ZL: "mm_page_alloc_zone_locked", ALLOC: "mm_page_alloc", FREE: "mm_page_free",
          DRAIN: "mm_page_pcpu_drain", FREE_BATCHED: "mm_page_free_batched"}
_COLS = ("kind", "seq", "cpu", "order", "pfn")


def _empty() -> dict[str, np.ndarray]:
    return {c: np.zeros(0, np.int64) for c in _COLS}


class RefillStream:
    """feed(name, batch) for every record of the trace, then finish(); `decided` yields
    (seq, pfn) arrays of the zone_locked records that are refills, as they become final."""

    def __init__(self) -> None:
        self.done = 0                          # every seq below this has arrived
        self.pending: list[np.ndarray] = []    # seqs at or above `done` that arrived
        self.buf: list[dict[str, np.ndarray]] = []
        self.carry = _empty()
        self.out_seq: list[np.ndarray] = []
        self.out_pfn: list[np.ndarray] = []
        self.peak_rows = 0                     # rows held at once (memory accounting)

    def feed(self, name: str, batch: pa.RecordBatch) -> None:
        seq = batch.column("seq").to_numpy(zero_copy_only=False).astype(np.int64)
        self.pending.append(seq)
        kind = SHORT.get(name)
        if kind is not None and batch.num_rows:
            t = Table(_NAMES[kind], pa.Table.from_batches([batch]))
            pfn = t["pfn"] if t.has("pfn") else np.full(len(t), -1, np.int64)
            ok = (pfn == -1) | ((pfn >= 0) & (pfn < PFN_LIMIT))    # model/events._plausible
            order = t["order"] if t.has("order") else np.zeros(len(t), np.int64)
            rows = {"kind": np.full(int(ok.sum()), kind, np.int64), "seq": seq[ok], "cpu": t["cpu"][ok],
                    "order": order[ok], "pfn": pfn[ok]}
            self.buf.append(rows)
        if len(seq) and int(seq.min()) == self.done:    # the first missing record arrived
            self._advance()

    def _advance(self) -> None:
        s = np.sort(np.concatenate(self.pending)) if self.pending else np.zeros(0, np.int64)
        run = np.flatnonzero(s != self.done + np.arange(len(s)))
        n = int(run[0]) if len(run) else len(s)
        if n == 0:
            self.pending = [s] if len(s) else []
            return
        self.done += n
        self.pending = [s[n:]] if n < len(s) else []
        self._process(final=False)

    def finish(self) -> None:
        self.done = np.iinfo(np.int64).max
        self._process(final=True)

    def _process(self, final: bool) -> None:
        parts = [self.carry] + self.buf
        rows = {c: np.concatenate([p[c] for p in parts]) for c in _COLS}
        ready = rows["seq"] < self.done
        keep = {c: v[~ready] for c, v in rows.items()}
        self.buf = [keep] if len(keep["seq"]) else []
        rows = {c: v[ready] for c, v in rows.items()}
        o = np.argsort(rows["seq"], kind="stable")
        rows = {c: v[o] for c, v in rows.items()}
        self.peak_rows = max(self.peak_rows, len(rows["seq"]) + len(keep["seq"]))
        if not len(rows["seq"]):
            return
        kind, cpu, seq = rows["kind"], rows["cpu"], rows["seq"]
        ev = {}
        for k, name in _NAMES.items():
            m = kind == k
            ev[name] = Table(name, pa.table({"seq": seq[m], "cpu": cpu[m], "order": rows["order"][m],
                                             "pfn": rows["pfn"][m]}))
        zl = kind == ZL
        mask = refill_mask(ev)
        if final:
            final_rows = np.ones(len(seq), bool)
        else:   # per CPU: rows before its last alloc/free/drain are final, the rest is carried
            final_rows = np.zeros(len(seq), bool)
            brk = np.flatnonzero(~zl)
            for c in np.unique(cpu):
                b = brk[cpu[brk] == c]
                if len(b):
                    final_rows |= (cpu == c) & (seq < seq[b[-1]])
        zi = np.flatnonzero(zl)
        fz = final_rows[zi]
        take = zi[fz & mask]
        self.out_seq.append(seq[take])
        self.out_pfn.append(rows["pfn"][take])
        self.carry = {c: v[~final_rows] for c, v in rows.items()}

    def decided(self) -> tuple[np.ndarray, np.ndarray]:
        """(seq, pfn) of the refills decided since the last call."""
        s = np.concatenate(self.out_seq) if self.out_seq else np.zeros(0, np.int64)
        p = np.concatenate(self.out_pfn) if self.out_pfn else np.zeros(0, np.int64)
        self.out_seq, self.out_pfn = [], []
        return s, p
