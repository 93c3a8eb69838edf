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

# The numpy side (grids, masks, counts) lives in raster.py; re-exported for callers of plots.
from .raster import (EMPTY, MODES, UNKNOWN, View, _col, count_series,  # noqa: E402,F401
                     finding_points, isolation_mask, make_view, parse_range, rasterize)


# ---------------------------------------------------------------------------
# Colours.  Okabe-Ito (colour-blind-safe); "unknown" is light grey so it reads as
# "no information" and never as a type; pixels with no pageblock at all are white.
# ---------------------------------------------------------------------------

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

# Findings: one marker shape per finding id, so they stay distinct without colour.  The shapes
# are declared by the detectors (analyzer/detectors/registry.py); these are for ids no detector
# declares (an analysis JSON from another version).
_EXTRA_MARKERS = ["<", ">", "p", "d", "8", "H"]


def detector_markers() -> dict[str, str]:
    """finding id -> marker, in report order (the legend follows it)."""
    from ..detectors import finding_kinds
    return {k.id: k.marker for k in finding_kinds()}


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
    ax = fig.add_axes((_AX_LEFT, _AX_BOTTOM, _AX_RIGHT - _AX_LEFT, _AX_TOP - _AX_BOTTOM))
    ax_reg = fig.add_axes((_AX_LEFT - 0.037, _AX_BOTTOM, 0.034, _AX_TOP - _AX_BOTTOM), sharey=ax)
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
    markers = detector_markers()
    rank = {d: i for i, d in enumerate(markers)}
    for det, (x, y, n, ncells) in sorted(pts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])):
        mk = markers.get(det) or next(extra, "o")
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
    ax = fig.add_axes((0.08, 0.2, 0.88, 0.7))
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
    title = f"Blocks per migratetype over time (reconstructed) — {kr}"
    if view.title:
        title += f" ({view.title})"
    fig.suptitle(title, fontsize=12)
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
