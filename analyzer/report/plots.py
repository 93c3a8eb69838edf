"""Static pictures of an Analysis: pageblock x time heatmap and per-type block counts.

Why rasterise ourselves: a real capture has 10^5 pageblocks and 10^6+ intervals.
Drawing one rectangle per interval would be millions of matplotlib artists (minutes,
gigabytes).  Instead every interval is folded into a fixed pixel grid with numpy
(bincount + difference arrays, no per-interval Python) and the grid is drawn with a
single `imshow`.  Overlays (isolation windows, findings) are bounded by the pixel
count as well, so render time depends on the image size, not on the trace size.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # never a display: reports are made on build hosts and in CI

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from ..errors import MtauditError  # noqa: E402

# ---------------------------------------------------------------------------
# Colours.  Okabe-Ito (colour-blind-safe); "unknown" is light grey so it reads as
# "no information" and never as a type; pixels with no pageblock at all are white.
# ---------------------------------------------------------------------------
EMPTY = -2          # grid code: no pageblock covers this pixel (hole / outside view)
UNKNOWN = -1        # migratetype unknown to the reconstruction

MT_COLORS: dict[int, str] = {
    0: "#D55E00",   # UNMOVABLE   vermillion
    1: "#56B4E9",   # MOVABLE     sky blue
    2: "#009E73",   # RECLAIMABLE bluish green
    3: "#F0E442",   # HIGHATOMIC  yellow
    4: "#0072B2",   # CMA         blue
    5: "#E69F00",   # ISOLATE     orange
    6: "#CC79A7",   # (other kernels' extra types) reddish purple
    7: "#000000",
    UNKNOWN: "#DDDDDD",
    EMPTY: "#FFFFFF",
}

# Findings: one marker shape per detector, so they stay distinct without colour.
DETECTOR_MARKERS: dict[str, str] = {
    "S1a": "o", "S1b": "s", "S2": "^", "S3": "v", "S4": "D", "S5": "P", "MW": "X",
}
_EXTRA_MARKERS = ["*", "h", "<", ">", "p", "d"]


def mt_names() -> dict[int, str]:
    """Type names from analyzer.kernels, the one table of them."""
    from ..kernels import MIGRATETYPE_NAMES
    return dict(MIGRATETYPE_NAMES)


def _rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def colorize(grid: np.ndarray) -> np.ndarray:
    """Type-code grid -> uint8 RGB image (lookup table, vectorised)."""
    lut = np.zeros((10, 3), dtype=np.uint8)           # index = code + 2
    for code, col in MT_COLORS.items():
        lut[code + 2] = _rgb(col)
    g = np.clip(grid.astype(np.int16), EMPTY, 7) + 2
    return lut[g]


# ---------------------------------------------------------------------------
# Frame access (Arrow-backed pandas -> numpy without Python loops)
# ---------------------------------------------------------------------------
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
        codes = sorted(codes, key=lambda c: (int(c) == UNKNOWN, total[int(c)], int(c)))
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
# Figures
# ---------------------------------------------------------------------------
@dataclass
class PlotOptions:
    width_px: int = 1600
    height_px: int = 1000
    dpi: int = 100
    max_rows: int | None = None     # default: the heatmap axes' height in pixels
    max_cols: int | None = None
    max_markers: int = 300          # per detector; beyond that the densest spots are shown
    mode: str = "dominant"          # pixel colour rule, see rasterize()


_AX_LEFT, _AX_RIGHT, _AX_BOTTOM, _AX_TOP = 0.135, 0.985, 0.13, 0.93


def _grid_size(view: View, opts: PlotOptions) -> tuple[int, int]:
    ax_w = int(opts.width_px * (_AX_RIGHT - _AX_LEFT))
    ax_h = int(opts.height_px * (_AX_TOP - _AX_BOTTOM))
    rows = min(view.nblocks, opts.max_rows or ax_h)
    cols = opts.max_cols or ax_w
    return max(rows, 1), max(cols, 1)


def _block_ticks(lo: int, hi: int, target: int = 8) -> np.ndarray:
    """Ticks at power-of-two block multiples, so the pfn labels are round hex numbers."""
    step = 1
    while (hi - lo) / step > target:
        step *= 2
    first = -(-lo // step) * step
    return np.arange(first, hi + 1, step)


def _pfn_formatter(order: int) -> FuncFormatter:
    return FuncFormatter(lambda y, _pos: f"{int(round(y)) << order:#x}")


def _draw_regions(ax_reg: Any, ax: Any, analysis: Any, view: View, order: int, px_per_block: float) -> None:
    """Left strip: zones (column 0) and CMA areas (column 1) along the pfn axis.

    A name too long for its span (a 64 MiB area among GiBs is a few pixels tall) is
    written horizontally at the heatmap's right edge instead of spilling over its
    neighbours in the strip.
    """

    def label(col: float, a: int, b: int, name: str) -> None:
        if (b - a) * px_per_block >= 6.5 * len(name) + 6:
            ax_reg.text(col, (a + b) / 2, name, rotation=90, ha="center", va="center", fontsize=8)
        else:
            ax.text(0.995, (a + b) / 2, name, transform=ax.get_yaxis_transform(), ha="right", va="center",
                    fontsize=7, zorder=5, bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="#555555",
                                                    lw=0.5, alpha=0.85))

    ax_reg.set_xlim(0, 2)
    ax_reg.set_xticks([0.5, 1.5], ["zone", "CMA"], fontsize=7, rotation=90)
    ax_reg.tick_params(axis="y", left=True, labelleft=True, labelsize=8)
    for sp in ax_reg.spines.values():
        sp.set_visible(False)
    lo, hi = view.block_lo, view.block_hi
    shades = ["#BBBBBB", "#888888"]
    for i, z in enumerate(analysis.meta.zones or []):
        name, zs, ze = str(z[0]), int(z[1]) >> order, -(-int(z[2]) >> order)
        a, b = max(zs, lo), min(ze, hi)
        if b <= a:
            continue
        ax_reg.axhspan(a, b, xmin=0.02, xmax=0.48, color=shades[i % 2], lw=0)
        label(0.5, a, b, name)
    for area in analysis.meta.cma_areas or []:
        name, base, count = str(area[0]), int(area[1]), int(area[2])
        a, b = max(base >> order, lo), min(-(-(base + count) >> order), hi)
        if b <= a:
            continue
        ax_reg.axhspan(a, b, xmin=0.52, xmax=0.98, facecolor=MT_COLORS[4], alpha=0.35,
                       edgecolor=MT_COLORS[4], hatch="//", lw=0.8)
        label(1.5, a, b, f"{name} (CMA)" if (b - a) * px_per_block < 6.5 * len(name) + 6 else name)


def timeline_figure(analysis: Any, view: View | None = None, opts: PlotOptions | None = None) -> Figure:
    """Pageblock x time heatmap with zones/CMA strip, isolation hatching, finding markers."""
    opts = opts or PlotOptions()
    view = view or make_view(analysis)
    order = int(analysis.meta.pageblock_order)
    rows, cols = _grid_size(view, opts)
    bl = analysis.blocks
    grid = rasterize(_col(bl, "block", np.int64), _col(bl, "start_ts", np.int64),
                     _col(bl, "end_ts", np.int64), _col(bl, "migratetype", np.int16), view, rows, cols,
                     mode=opts.mode)
    img = colorize(grid)
    fig = Figure(figsize=(opts.width_px / opts.dpi, opts.height_px / opts.dpi), dpi=opts.dpi)
    ax = fig.add_axes([_AX_LEFT, _AX_BOTTOM, _AX_RIGHT - _AX_LEFT, _AX_TOP - _AX_BOTTOM])
    ax_reg = fig.add_axes([_AX_LEFT - 0.037, _AX_BOTTOM, 0.034, _AX_TOP - _AX_BOTTOM], sharey=ax)
    x0, x1 = view.t_lo / 1e9, view.t_hi / 1e9
    extent = (x0, x1, view.block_lo, view.block_hi)
    ax.imshow(img, extent=extent, origin="lower", aspect="auto", interpolation="nearest")

    # Isolation windows: hatched overlay computed at screen resolution, so the hatch
    # spacing does not grow when few blocks are stretched over many pixels.
    ax_h = int(opts.height_px * (_AX_TOP - _AX_BOTTOM))
    ax_w = int(opts.width_px * (_AX_RIGHT - _AX_LEFT))
    iso = getattr(analysis, "isolation", None)
    mask = isolation_mask(iso, view, order, ax_h, ax_w)
    n_iso = 0
    if iso is not None and len(iso):
        ib0 = _col(iso, "start_pfn", np.int64) >> order
        ib1 = -(-_col(iso, "end_pfn", np.int64) >> order)
        n_iso = int(((_col(iso, "end_ts", np.int64) >= view.t_lo) & (_col(iso, "start_ts", np.int64) < view.t_hi)
                     & (ib1 > view.block_lo) & (ib0 < view.block_hi)).sum())
    if mask.any():
        rr, cc = np.indices(mask.shape)
        over = np.zeros(mask.shape + (4,), dtype=np.uint8)
        over[mask] = (255, 255, 255, 70)
        over[mask & (((rr + cc) % 6) < 2)] = (0, 0, 0, 200)
        # outline: a window only a few pixels tall still reads as a solid dark band
        pad = np.pad(mask, 1, constant_values=False)
        inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
        over[mask & ~inner] = (0, 0, 0, 255)
        ax.imshow(over, extent=extent, origin="lower", aspect="auto", interpolation="nearest")

    # Findings: one scatter per detector, one marker per occupied pixel.
    # Markers are deduplicated on a grid of roughly marker-sized cells: a detector that
    # fires everywhere then shows as an even carpet instead of hiding the heatmap.
    cell = 9
    pts = finding_points(getattr(analysis, "findings", None), view,
                         min(max(ax_h // cell, 1), view.nblocks), max(ax_w // cell, 1),
                         max_markers=opts.max_markers)
    extra = iter(_EXTRA_MARKERS)
    handles_f = []
    for det, (x, y, n, ncells) in pts.items():
        mk = DETECTOR_MARKERS.get(det) or next(extra, "o")
        ax.scatter(x, y, marker=mk, s=36, facecolors="white", edgecolors="black", linewidths=0.9, zorder=3)
        note = f", {len(x)} densest of {ncells} spots marked" if len(x) < ncells else ""
        handles_f.append(Line2D([], [], ls="", marker=mk, mfc="white", mec="black",
                                label=f"{det} finding ({n}{note})"))

    ax.set_xlim(x0, x1)
    ax.set_ylim(view.block_lo, view.block_hi)
    ax.set_yticks(_block_ticks(view.block_lo, view.block_hi))
    ax.yaxis.set_major_formatter(_pfn_formatter(order))
    ax.tick_params(axis="y", labelleft=False, right=True)
    ax.set_xlabel("trace time [s]")
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    ax_reg.set_ylabel(f"pfn (pageblock = {1 << order} pages)")
    _draw_regions(ax_reg, ax, analysis, view, order, ax_h / view.nblocks)
    for z in analysis.meta.zones or []:    # zone boundaries across the heatmap
        for edge in (int(z[1]) >> order, -(-int(z[2]) >> order)):
            if view.block_lo < edge < view.block_hi:
                ax.axhline(edge, color="black", lw=0.6, ls="--")

    names = mt_names()
    handles = [Patch(facecolor=MT_COLORS[k], edgecolor="#555555", label=f"{k} {names.get(k, '?')}")
               for k in sorted(c for c in names if c >= 0) if k in MT_COLORS]
    handles.append(Patch(facecolor=MT_COLORS[UNKNOWN], edgecolor="#555555", label="unknown"))
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="///",
                         label=f"isolation window ({n_iso})"))
    fig.legend(handles=handles, loc="lower left", ncol=4, fontsize=9, frameon=False,
               bbox_to_anchor=(_AX_LEFT - 0.04, 0.005))
    if handles_f:
        fig.legend(handles=handles_f, loc="lower right", ncol=1 if len(handles_f) <= 3 else 2, fontsize=9,
                   frameon=False, bbox_to_anchor=(_AX_RIGHT, 0.005))
    kr = getattr(analysis.meta, "kernel_release", None) or "unknown kernel"
    title = f"Pageblock migratetype over time — {kr}"
    if view.title:
        title += f" ({view.title})"
    fig.suptitle(title, fontsize=12, y=0.985)
    fig.text(_AX_LEFT, 0.945, f"{view.nblocks} pageblocks x {(view.t_hi - view.t_lo) / 1e9:.3f} s; "
             f"pixel grid {rows} x {cols}, each pixel shows "
             + ("the type holding most block-time" if opts.mode == "dominant" else
                "the rarest type present (rarest over the whole view)"),
             fontsize=8, color="#444444")
    return fig


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


def pagetypeinfo_counts(table: Any, zone: str | None = None) -> dict[int, int] | None:
    """Block counts per type from a parsed pagetypeinfo snapshot, summed over zones.

    `table` is analyzer.capture.PageTypeInfo (its `.blocks` maps (node, zone) ->
    {migratetype: blocks}) or a plain mapping of that shape; zone keys may also be
    bare zone names and type keys type names ("Movable").
    """
    if table is None:
        return None
    blocks = getattr(table, "blocks", table)
    if not isinstance(blocks, dict):
        return None
    names = {v.lower(): k for k, v in mt_names().items()}
    out: dict[int, int] = {}
    for key, per in blocks.items():
        zname = key[-1] if isinstance(key, tuple) else key
        if zone is not None and str(zname) != zone:
            continue
        for t, n in per.items():
            code = int(t) if isinstance(t, (int, np.integer)) else names.get(str(t).strip().lower())
            if code is not None:
                out[code] = out.get(code, 0) + int(n)
    return out or None


def counts_figure(analysis: Any, view: View | None = None, opts: PlotOptions | None = None,
                  zone: str | None = None) -> Figure:
    """Per-type block counts over time, with pagetypeinfo start/end as reference markers."""
    opts = opts or PlotOptions(height_px=700)
    view = view or make_view(analysis)
    bl = analysis.blocks
    bins = max(50, min(2000, int(opts.width_px * 0.8)))
    series = count_series(_col(bl, "block", np.int64), _col(bl, "start_ts", np.int64),
                          _col(bl, "end_ts", np.int64), _col(bl, "migratetype", np.int16), view, bins)
    names = mt_names()
    fig = Figure(figsize=(opts.width_px / opts.dpi, opts.height_px / opts.dpi), dpi=opts.dpi)
    ax = fig.add_axes([0.08, 0.2, 0.88, 0.7])
    for code, (edges, at_edge, vmin, vmax) in sorted(series.items()):
        color = MT_COLORS.get(code, "#999999")
        if code == UNKNOWN:
            color = "#999999"           # light grey would vanish on white
        x = edges / 1e9
        ax.fill_between(x[:-1], vmin, vmax, step="post", color=color, alpha=0.25, lw=0)
        label = "unknown" if code == UNKNOWN else f"{code} {names.get(code, '?')}"
        ax.step(x, at_edge, where="post", color=color, lw=1.6, label=label)
    # Reference points: whole zones only (not a pfn window), and only where the view
    # reaches the trace's start / end.
    meta = analysis.meta
    refs = []
    if not view.pfn_zoomed:
        if view.full_t_lo is None or view.t_lo <= view.full_t_lo:
            refs.append(("start", getattr(meta, "pagetypeinfo_start", None), view.t_lo, "o"))
        if view.full_t_hi is None or view.t_hi >= view.full_t_hi:
            refs.append(("end", getattr(meta, "pagetypeinfo_end", None), view.t_hi, "s"))
    ref_handles = []
    for label, table, t, mk in refs:
        counts = pagetypeinfo_counts(table, zone or view.zone)
        if not counts:
            continue
        for code, n in counts.items():
            ax.plot([t / 1e9], [n], marker=mk, ms=10, mfc=MT_COLORS.get(code, "#999999"),
                    mec="black", mew=1.2, ls="", clip_on=False, zorder=4)
        ref_handles.append(Line2D([], [], ls="", marker=mk, mfc="white", mec="black", ms=9,
                                  label=f"/proc/pagetypeinfo at {label}"))
    ax.set_xlim(view.t_lo / 1e9, view.t_hi / 1e9)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("trace time [s]")
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    ax.set_ylabel("pageblocks of that type")
    ax.grid(True, color="#EEEEEE")
    h, _ = ax.get_legend_handles_labels()
    fig.legend(handles=h + ref_handles, loc="lower center", ncol=min(5, len(h) + len(ref_handles)),
               fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.005))
    kr = getattr(meta, "kernel_release", None) or "unknown kernel"
    t = f"Blocks per migratetype over time (reconstructed) — {kr}"
    if view.title:
        t += f" ({view.title})"
    fig.suptitle(t, fontsize=12)
    return fig


def figure_png(fig: Figure) -> bytes:
    """PNG bytes of a figure at its own size (no tight bbox: size stays predictable)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)   # a bare Figure: no pyplot state to close
    return buf.getvalue()


def default_mode(path: str) -> None:
    """0666 minus umask, like open() would: atomic_file's mkstemp leaves 0600."""
    import os
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_png(fig: Figure, path: str) -> None:
    from ..atomic import atomic_file
    data = figure_png(fig)
    with atomic_file(path) as f:
        f.write(data)
    default_mode(path)
