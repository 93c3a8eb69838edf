"""A CMA area's occupancy at one moment, rebuilt from cma_alloc_finish and cma_release records.

cma_alloc() fails with -ENOMEM when its bitmap has no free range of `count` pages starting at an
aligned offset.  The trace has every successful allocation (finish with a pfn) and every release,
so the held ranges at any moment can be replayed: which call holds which range, since when, for
which task, and the largest free range (any start, and aligned as the failed request needed).
Granularity is the page; the area's bitmap may count in larger units (order_per_bit), which can
only make the free space smaller.  Releases of ranges no traced allocation holds are counted:
hugetlb frees demoted or buddy-allocated pages that lie inside the area through cma_release().
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .calls import Call


@dataclass
class Held:
    lo: int
    hi: int
    call: int          # index of the Call that holds it
    pid: int
    comm: str
    ts: int


@dataclass
class Occupancy:
    area: str
    base: int | None
    count: int | None
    held: list[Held] = field(default_factory=list)
    untracked_releases: int = 0
    untracked: list[tuple[int, int, int]] = field(default_factory=list)   # (seq, pfn, count), first 256

    def free_ranges(self) -> list[tuple[int, int]]:
        if self.base is None or self.count is None:
            return []
        out, pos = [], self.base
        for h in sorted(self.held, key=lambda x: x.lo):
            if h.lo > pos:
                out.append((pos, min(h.lo, self.base + self.count)))
            pos = max(pos, h.hi)
        if pos < self.base + self.count:
            out.append((pos, self.base + self.count))
        return [(a, b) for a, b in out if b > a]

    def largest_aligned(self, align_order: int) -> int:
        """Pages in the largest free range that starts at a pfn aligned to 2^align_order."""
        step = 1 << max(0, align_order)
        best = 0
        for a, b in self.free_ranges():
            s = (a + step - 1) // step * step
            best = max(best, b - s)
        return best

    def summary(self, request: int, align: int, calls: list[Call]) -> dict:
        free = self.free_ranges()
        held_pages = sum(h.hi - h.lo for h in self.held)
        owners: dict[str, dict] = {}
        for h in self.held:
            k = f"{h.comm}[{h.pid}]"
            o = owners.setdefault(k, {"owner": k, "ranges": 0, "pages": 0, "first_ts": h.ts, "last_ts": h.ts})
            o["ranges"] += 1
            o["pages"] += h.hi - h.lo
            o["first_ts"], o["last_ts"] = min(o["first_ts"], h.ts), max(o["last_ts"], h.ts)
        return {"area": self.area, "base_pfn": self.base, "count": self.count, "held_pages": held_pages,
                "held_ranges": len(self.held),
                "free_pages": sum(b - a for a, b in free) if self.count is not None else None,
                "largest_free": max((b - a for a, b in free), default=0) if self.count is not None else None,
                "largest_free_aligned": self.largest_aligned(align) if self.count is not None else None,
                "request": request, "align_order": align,
                "owners": sorted(owners.values(), key=lambda o: -o["pages"]),
                "ranges": [{"lo": h.lo, "hi": h.hi, "call": h.call, "owner": f"{h.comm}[{h.pid}]", "ts": h.ts}
                           for h in sorted(self.held, key=lambda x: x.lo)][:64],
                "untracked_releases": self.untracked_releases}


def occupancy_at(calls: list[Call], releases: list[tuple[int, int, str, int, int]], area: str,
                 extent: tuple[int, int] | None, seq: int) -> Occupancy:
    """Held ranges of `area` just before record `seq`.  `releases`: (seq, ts, name, pfn, count)."""
    occ = Occupancy(area, extent[0] if extent else None, extent[1] if extent else None)
    evs: list[tuple[int, str, int]] = []
    for i, c in enumerate(calls):
        if c.kind == "cma" and c.area == area and c.ok and c.end_seq < seq and c.pfn >= 0:
            evs.append((c.end_seq, "a", i))
    for j, (rs, _ts, name, _pfn, _cnt) in enumerate(releases):
        if name == area and rs < seq:
            evs.append((rs, "r", j))
    evs.sort()
    held: list[Held] = []
    for _s, kind, i in evs:
        if kind == "a":
            c = calls[i]
            held.append(Held(c.pfn, c.pfn + c.count, i, c.pid, c.comm, c.end_ts))
            continue
        _rs, _ts, _n, pfn, cnt = releases[i]
        lo, hi = pfn, pfn + cnt
        nxt: list[Held] = []
        hit = False
        for h in held:
            if h.hi <= lo or hi <= h.lo:
                nxt.append(h)
                continue
            hit = True
            if h.lo < lo:
                nxt.append(Held(h.lo, lo, h.call, h.pid, h.comm, h.ts))
            if hi < h.hi:
                nxt.append(Held(hi, h.hi, h.call, h.pid, h.comm, h.ts))
        if not hit:
            occ.untracked_releases += 1
            if len(occ.untracked) < 256:
                occ.untracked.append((_rs, pfn, cnt))
        held = nxt
    occ.held = held
    return occ
