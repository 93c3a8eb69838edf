"""Pixel grids from an Analysis, in numpy only (no matplotlib): the heatmap raster,
overlay masks, finding points and block counts over time.

Kept apart from the figure code so the aggregation that makes 10^5 pageblocks x 10^6
intervals drawable (bincount + difference arrays, no per-interval Python) can be tested
against brute-force oracles without rendering anything.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MtauditError

EMPTY = -2          # grid code: no pageblock covers this pixel (hole / outside view)
UNKNOWN = -1        # migratetype unknown to the reconstruction

def _col(df: Any, name: str, dtype: Any) -> np.ndarray:
    s = df[name]
    try:
        return s.to_numpy(dtype=dtype, na_value=-1 if np.issubdtype(np.dtype(dtype), np.signedinteger) else 0)
    except (TypeError, ValueError):
        return np.asarray(s, dtype=dtype)


@dataclass
class View:
    """What part of the (block, time) plane to show.  Blocks [lo, hi), time [lo, hi) ns."""

    block_lo: int
    block_hi: int
    t_lo: int
    t_hi: int
    title: str = ""
    zone: str | None = None          # set by --zone: pagetypeinfo references use that zone
    pfn_zoomed: bool = False         # a pfn window: whole-zone references do not apply
    full_t_lo: int | None = None     # the trace's time span, to place start/end references
    full_t_hi: int | None = None

    @property
    def nblocks(self) -> int:
        return self.block_hi - self.block_lo


def parse_range(text: str, *, what: str, as_float: bool = False) -> tuple[float, float] | tuple[int, int]:
    """"A-B" -> (A, B).  Integers may be hex (0x...).  Used by the zoom flags."""
    parts = text.split("-") if "-" in text.strip("-") else []
    if text.startswith("-") or len(parts) != 2:
        raise MtauditError(f"{what}: expected A-B, got {text!r}")
    try:
        if as_float:
            a, b = float(parts[0]), float(parts[1])
        else:
            a, b = int(parts[0], 0), int(parts[1], 0)
    except ValueError:
        raise MtauditError(f"{what}: cannot parse {text!r} (use e.g. "
                           f"{'1.5-3' if as_float else '0x40000-0x80000'})") from None
    if not b > a:
        raise MtauditError(f"{what}: empty range {text!r} (end must be greater than start)")
    return a, b


def make_view(analysis: Any, *, zone: str | None = None,
              pfn_range: tuple[int, int] | None = None,
              time_range: tuple[float, float] | None = None) -> View:
    """The default view is every block over the whole trace; the flags intersect it."""
    blocks = analysis.blocks
    order = int(analysis.meta.pageblock_order)
    if len(blocks) == 0:
        raise MtauditError("analysis has no pageblock history to plot")
    b = _col(blocks, "block", np.int64)
    st = _col(blocks, "start_ts", np.int64)
    en = _col(blocks, "end_ts", np.int64)
    lo, hi = int(b.min()), int(b.max()) + 1
    t_lo, t_hi = int(st.min()), int(en.max())
    titles = []
    if zone is not None:
        zones = {str(z[0]): (int(z[1]), int(z[2])) for z in (analysis.meta.zones or [])}
        if zone not in zones:
            raise MtauditError(f"--zone {zone}: no such zone (have: {', '.join(zones) or 'none'})")
        zs, ze = zones[zone]
        lo, hi = max(lo, zs >> order), min(hi, -(-ze >> order))
        titles.append(f"zone {zone}")
    if pfn_range is not None:
        lo, hi = max(lo, pfn_range[0] >> order), min(hi, -(-pfn_range[1] >> order))
        titles.append(f"pfn {pfn_range[0]:#x}-{pfn_range[1]:#x}")
    if time_range is not None:
        t_lo = max(t_lo, int(round(time_range[0] * 1e9)))
        t_hi = min(t_hi, int(round(time_range[1] * 1e9)))
        titles.append(f"t {time_range[0]:g}-{time_range[1]:g} s")
    if hi <= lo:
        raise MtauditError("zoom selects no pageblocks (check --zone / --pfn-range)")
    if t_hi <= t_lo:
        if time_range is not None:
            raise MtauditError("--time-range selects no time inside the trace")
        t_hi = t_lo + 1   # a trace whose events all have one timestamp
    return View(lo, hi, t_lo, t_hi, ", ".join(titles), zone=zone, pfn_zoomed=pfn_range is not None,
                full_t_lo=int(st.min()), full_t_hi=int(en.max()))


# ---------------------------------------------------------------------------
# Rasterisation
# ---------------------------------------------------------------------------
MODES = ("dominant", "rarest")


def rasterize(block: np.ndarray, start: np.ndarray, end: np.ndarray, mt: np.ndarray,
              view: View, rows: int, cols: int, mode: str = "dominant") -> np.ndarray:
    """Fold intervals into a rows x cols grid of type codes (row 0 = lowest block).

    mode "dominant": each pixel takes the type covering the most block-time inside it
    (ties: the lower type code).  mode "rarest": the pixel takes, among the types
    present in it, the one with the least block-time in the whole view (unknown
    only if nothing else is there) -- when one pixel row holds a hundred blocks, a
    single polluted block still shows.  EMPTY where nothing covers the pixel.

    Per type: the partial first and last time bins of an interval go into a direct
    bincount, the fully covered bins in between into a difference array (one +1/-1
    pair), so the cost is O(intervals) whatever the interval length.
    """
    if mode not in MODES:
        raise MtauditError(f"unknown plot mode {mode!r} (use {' or '.join(MODES)})")
    nb = view.nblocks
    span = float(view.t_hi - view.t_lo)
    block = np.asarray(block, np.int64)
    start = np.asarray(start, np.int64)
    end = np.asarray(end, np.int64)
    mt = np.asarray(mt).astype(np.int16)
    keep = (block >= view.block_lo) & (block < view.block_hi) & (end > view.t_lo) & (start < view.t_hi) & (end > start)
    block, start, end, mt = block[keep], start[keep], end[keep], mt[keep]
    r = (block - view.block_lo) * rows // nb
    us = (np.clip(start, view.t_lo, view.t_hi) - view.t_lo) * (cols / span)
    ue = (np.clip(end, view.t_lo, view.t_hi) - view.t_lo) * (cols / span)
    cs = np.minimum(np.floor(us).astype(np.int64), cols - 1)
    ce = np.minimum(np.floor(ue).astype(np.int64), cols - 1)
    same = cs == ce
    best = np.full(rows * cols, EMPTY, dtype=np.int8)
    best_w = np.zeros(rows * cols, dtype=np.float64)
    codes = np.unique(mt)
    if mode == "rarest":
        total = {int(c): float(np.sum(ue[mt == c] - us[mt == c])) for c in codes}
        # rarest first; unknown last; the grid is filled by "first type present wins"
        codes = np.array(sorted(codes, key=lambda c: (int(c) == UNKNOWN, total[int(c)], int(c))), codes.dtype)
    for code in codes:
        m = mt == code
        w = np.zeros(rows * cols)
        s1 = m & same
        w += np.bincount(r[s1] * cols + cs[s1], weights=ue[s1] - us[s1], minlength=rows * cols)
        s2 = m & ~same
        r2, cs2, ce2 = r[s2], cs[s2], ce[s2]
        w += np.bincount(r2 * cols + cs2, weights=(cs2 + 1) - us[s2], minlength=rows * cols)
        w += np.bincount(r2 * cols + ce2, weights=ue[s2] - ce2, minlength=rows * cols)
        d = np.bincount(r2 * (cols + 1) + cs2 + 1, minlength=rows * (cols + 1)).astype(np.float64)
        d -= np.bincount(r2 * (cols + 1) + ce2, minlength=rows * (cols + 1))
        w += np.cumsum(d.reshape(rows, cols + 1), axis=1)[:, :cols].ravel()
        if mode == "rarest":
            better = (best == EMPTY) & (w > 1e-12)
        else:
            better = w > best_w + 1e-12
        best[better] = min(max(int(code), UNKNOWN), 7)
        best_w[better] = w[better]
    return best.reshape(rows, cols)


def _span_cells(lo: np.ndarray, hi: np.ndarray, base: float, scale: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) in data units -> [c0, c1) pixel indices, at least one pixel wide."""
    c0 = np.floor((lo - base) * scale).astype(np.int64)
    c1 = np.ceil((hi - base) * scale).astype(np.int64)
    c0 = np.clip(c0, 0, n - 1)
    c1 = np.clip(np.maximum(c1, c0 + 1), 1, n)
    return c0, c1


def isolation_mask(iso: Any, view: View, order: int, rows: int, cols: int) -> np.ndarray:
    """Boolean rows x cols: pixel overlaps an isolation window (2-D difference array)."""
    mask = np.zeros((rows, cols), dtype=bool)
    if iso is None or len(iso) == 0:
        return mask
    st = _col(iso, "start_ts", np.int64)
    en = _col(iso, "end_ts", np.int64)
    p0 = _col(iso, "start_pfn", np.int64)
    p1 = _col(iso, "end_pfn", np.int64)
    b0 = p0 >> order
    b1 = -(-p1 >> order)
    keep = (en >= view.t_lo) & (st < view.t_hi) & (b1 > view.block_lo) & (b0 < view.block_hi)
    if not keep.any():
        return mask
    r0, r1 = _span_cells(b0[keep], b1[keep], view.block_lo, rows / view.nblocks, rows)
    c0, c1 = _span_cells(st[keep].astype(np.float64), en[keep].astype(np.float64), view.t_lo,
                         cols / (view.t_hi - view.t_lo), cols)
    d = np.zeros((rows + 1) * (cols + 1), dtype=np.int64)
    w = cols + 1
    for rr, cc, sign in ((r0, c0, 1), (r0, c1, -1), (r1, c0, -1), (r1, c1, 1)):
        d += np.bincount(rr * w + cc, minlength=d.size) * sign
    return np.cumsum(np.cumsum(d.reshape(rows + 1, cols + 1), axis=0), axis=1)[:rows, :cols] > 0


def finding_points(findings: Any, view: View, rows: int, cols: int,
                   max_markers: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray, int, int]]:
    """Per detector: centres (seconds, block) of grid cells holding findings.

    Deduplicated per cell so a detector firing a million times draws at most
    rows*cols markers; with `max_markers` only the cells holding the most findings
    are kept (a carpet of markers would hide the heatmap).  Returns
    (x, y, findings in view, cells with findings).
    """
    out: dict[str, tuple[np.ndarray, np.ndarray, int, int]] = {}
    if findings is None or len(findings) == 0:
        return out
    det = np.asarray(findings["detector"].astype(str))
    ts = _col(findings, "ts", np.int64)
    blk = _col(findings, "block", np.int64)
    keep = (ts >= view.t_lo) & (ts <= view.t_hi) & (blk >= view.block_lo) & (blk < view.block_hi)
    span = view.t_hi - view.t_lo
    for d in sorted(set(det[keep].tolist())):
        m = keep & (det == d)
        r = (blk[m] - view.block_lo) * rows // view.nblocks
        c = np.minimum((ts[m] - view.t_lo) * cols // span, cols - 1)
        cell, cnt = np.unique(r * cols + c, return_counts=True)
        ncells = len(cell)
        if max_markers is not None and ncells > max_markers:
            # ties (the common case: one finding per cell) broken by a fixed hash of
            # the cell, so the kept markers spread over the picture, not its bottom rows
            scatter_key = (cell.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1 << 32)
            top = np.lexsort((scatter_key, -cnt))[:max_markers]
            cell = np.sort(cell[top])
        rr, cc = cell // cols, cell % cols
        x = (view.t_lo + (cc + 0.5) * span / cols) / 1e9
        y = view.block_lo + (rr + 0.5) * view.nblocks / rows
        out[d] = (x, y, int(m.sum()), ncells)
    return out


# ---------------------------------------------------------------------------
# Block counts over time
# ---------------------------------------------------------------------------
def count_series(block: np.ndarray, start: np.ndarray, end: np.ndarray, mt: np.ndarray,
                 view: View, bins: int) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per type: (bin-edge times, count at each edge, min, max inside each bin).

    The count at time t is how many blocks of the view have that type at t — what
    /proc/pagetypeinfo's "Number of blocks type" would have printed.  min/max per bin
    keep short excursions (isolation) visible even when the bins are coarse.
    """
    block = np.asarray(block, np.int64)
    keep = (block >= view.block_lo) & (block < view.block_hi)
    start = np.asarray(start, np.int64)[keep]
    end = np.asarray(end, np.int64)[keep]
    mt = np.asarray(mt).astype(np.int16)[keep]
    edges = np.linspace(view.t_lo, view.t_hi, bins + 1)
    out = {}
    for code in np.unique(mt):
        m = mt == code
        # Pack (time, is_start) into one int64 and sort values, not indices: several
        # times faster than argsort; the order of changes at one instant does not
        # matter because only the value after the last of them is kept.
        packed = np.sort(np.concatenate([(start[m] - view.t_lo) * 2 + 1, (end[m] - view.t_lo) * 2]))
        times = (packed >> 1) + view.t_lo
        val = np.cumsum((packed & 1) * 2 - 1)
        last = np.r_[times[1:] != times[:-1], True]      # value after all changes at one instant
        tu, vu = times[last], val[last]
        # Value at each edge; at the last edge take the value just before it, because
        # every block's final interval ends exactly at the trace end.
        at = np.searchsorted(tu, edges, side="right") - 1
        at[-1] = np.searchsorted(tu, edges[-1], side="left") - 1
        at_edge = np.where(at >= 0, vu[np.maximum(at, 0)], 0)
        vmin = at_edge[:-1].copy()
        vmax = at_edge[:-1].copy()
        # Every change point belongs to the bin [edge_k, edge_k+1) it falls in; tu is
        # sorted, so bins form runs and one reduceat per statistic covers them all.
        k = np.searchsorted(edges, tu, side="right") - 1
        ok = (k >= 0) & (k < bins)
        kv, vv = k[ok], vu[ok]
        if len(kv):
            starts = np.r_[0, np.nonzero(np.diff(kv))[0] + 1]
            ids = kv[starts]
            vmin[ids] = np.minimum(vmin[ids], np.minimum.reduceat(vv, starts))
            vmax[ids] = np.maximum(vmax[ids], np.maximum.reduceat(vv, starts))
        out[int(code)] = (edges, at_edge, vmin, vmax)
    return out
