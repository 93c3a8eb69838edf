"""Plots: rasteriser golden values + brute-force oracle, counts, figures (synthetic and real).

Run `python3 tests/report/test_plots.py --bench [blocks] [intervals]` for render timings of a
large synthetic analysis (printed, never asserted).
"""
from __future__ import annotations

import io
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from analyzer.errors import MtauditError  # noqa: E402
from analyzer.model.consistency import Consistency  # noqa: E402
from analyzer.report import plots  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
REAL = os.path.join(ROOT, "fixtures", "captures", "debian-6.1-arm64-cma-churn")


# ---------------------------------------------------------------------------
# synthetic §3 Analysis (test fixture, shaped like the contract)
# ---------------------------------------------------------------------------
def _arrow_frame(cols: dict[str, tuple[np.ndarray | list, pa.DataType]]) -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(pa.array(v, type=t), dtype=pd.ArrowDtype(t)) for k, (v, t) in cols.items()})


class SynthAnalysis:
    """Enough of the §3 Analysis to draw and report on."""

    def __init__(self, meta, blocks, findings, isolation, detectors, consistency):
        self.meta, self.blocks, self.findings = meta, blocks, findings
        self.isolation, self.detectors, self.consistency = isolation, detectors, consistency

    def history(self, pfn: int) -> pd.DataFrame:
        b = int(pfn) >> self.meta.pageblock_order
        rows = self.blocks[self.blocks["block"] == b]
        return pd.DataFrame({"seq": range(len(rows)), "ts": rows["start_ts"].tolist(), "cpu": 0,
                             "event": rows["source"].tolist(),
                             "text": [f"type -> {m}" for m in rows["migratetype"].tolist()]})

    def narrative(self, pfn: int) -> list[str]:
        h = self.history(pfn)
        return [f"{t / 1e9:.6f}s {ev}: {tx} <&>" for t, ev, tx in zip(h["ts"], h["event"], h["text"])]

    # what analysis.Analysis offers besides the §3 frames
    model = SimpleNamespace(ground_truth=True, agreement={"rate": 0.97, "coverage": 0.81, "disagreeing_blocks": (5, 6, 7),
                                                          "window_start_ts": 2_000_000_000},
                            warnings=["synthetic model warning <w>"])
    kernel = SimpleNamespace(assumed=[], describe=lambda: "6.1.0-synthetic (upstream 6.1.0)")

    def top_blocks(self, n: int = 10) -> list[dict]:
        vc = self.findings["block"].value_counts().head(n)
        return [{"block": int(b), "start_pfn": hex(int(b) << 9), "findings": int(c), "by_detector": {"S1a": int(c)},
                 "zone": "DMA"} for b, c in vc.items()]

    def lost_summary(self) -> dict:
        return {"windows": [], "total": 0, "manifest": {"0": 0, "1": 0}, "findings_after_first_loss": 0}


def synthetic_analysis(nblocks: int = 64, nintervals: int = 400, seed: int = 0, order: int = 9,
                       base_pfn: int = 0x40000, t_end: int = 10_000_000_000, nfindings: int = 30,
                       release: str = "6.1.0-synthetic") -> SynthAnalysis:
    """Random but structured history: the top quarter of blocks is a CMA area."""
    rng = np.random.default_rng(seed)
    b0 = base_pfn >> order
    nchg = max(nintervals - nblocks, 0)
    chg_block = rng.integers(0, nblocks, nchg)
    chg_t = rng.integers(1, t_end, nchg)
    blk = np.r_[np.arange(nblocks), chg_block]
    st = np.r_[np.zeros(nblocks, np.int64), chg_t]
    o = np.lexsort((st, blk))
    blk, st = blk[o], st[o]
    nxt_same = np.r_[blk[1:] == blk[:-1], False]
    en = np.where(nxt_same, np.r_[st[1:], 0], t_end)
    cma_lo = nblocks * 3 // 4
    in_cma = blk >= cma_lo
    mt = np.where(in_cma, rng.choice([4, 4, 4, 5], len(blk)), rng.choice([0, 1, 1, 1, 1, 2, 3, -1], len(blk)))
    first = np.r_[True, blk[1:] != blk[:-1]]
    mt = np.where(first & ~in_cma, np.where(blk % 7 == 0, -1, 1), mt).astype(np.int8)
    src = np.where(first, "boot", "kprobe")
    blocks = _arrow_frame({
        "block": (blk + b0, pa.int64()), "zone": (["DMA"] * len(blk), pa.string()),
        "start_ts": (st, pa.int64()), "end_ts": (en, pa.int64()), "migratetype": (mt, pa.int8()),
        "source": (src.tolist(), pa.string()), "confidence": (["known"] * len(blk), pa.string())})
    niso = 5
    iso_st = np.sort(rng.integers(0, t_end - t_end // 20, niso))
    isolation = _arrow_frame({
        "start_ts": (iso_st, pa.int64()), "end_ts": (iso_st + t_end // 40, pa.int64()),
        "start_pfn": (np.full(niso, (b0 + cma_lo) << order), pa.uint64()),
        "end_pfn": (np.full(niso, (b0 + cma_lo + max(1, nblocks // 8)) << order), pa.uint64()),
        "kind": (["cma"] * niso, pa.string()), "name": (["reserved"] * niso, pa.string()),
        "restore_mt": (np.full(niso, 4), pa.int8())})
    dets = np.array(["S1a", "S2", "MW"])
    fb = rng.integers(0, nblocks, nfindings) + b0
    findings = _arrow_frame({
        "detector": (dets[rng.integers(0, 3, nfindings)].tolist(), pa.string()),
        "severity": (rng.choice(["high", "medium", "info"], nfindings).tolist(), pa.string()),
        "seq": (np.arange(nfindings), pa.int64()), "ts": (rng.integers(0, t_end, nfindings), pa.int64()),
        "cpu": (rng.integers(0, 2, nfindings), pa.int32()),
        "pfn": ((fb << order) + 3, pa.uint64()), "block": (fb, pa.int64()),
        "event": (["mm_page_pcpu_drain"] * nfindings, pa.string()),
        "printed_mt": (np.ones(nfindings), pa.int8()), "block_mt": (np.full(nfindings, 4), pa.int8()),
        "explanation": (["drain printed <MOVABLE> & block is CMA"] * nfindings, pa.string())})
    detectors = pd.DataFrame({"id": ["S1a", "S1b", "S2", "MW"], "meaning": ["pcp cached type", "x", "y <b>", "z"],
                              "kernels": ["< 6.10", "< 6.10", "all", "all"], "applies": [True, False, True, True],
                              "count": [int((findings["detector"] == d).sum()) for d in ["S1a", "S1b", "S2", "MW"]],
                              "severity": ["high", "high", "medium", "info"]})
    consistency = Consistency(pd.DataFrame({"zone": ["DMA"] * 3, "type": ["UNMOVABLE", "MOVABLE", "CMA"],
                                            "reconstructed": [10, 40, 16], "pagetypeinfo": [10, 41, 16],
                                            "diff": [0, -1, 0]}),
                              available=True, passed=False, exact=False, unknown_blocks=3)
    pti_start = {"DMA": {"Unmovable": 8, "Movable": 40, "Reclaimable": 0, "HighAtomic": 0, "CMA": 16, "Isolate": 0}}
    pti_end = {"DMA": {"Unmovable": 10, "Movable": 38, "Reclaimable": 1, "HighAtomic": 0, "CMA": 15, "Isolate": 1}}
    meta = SimpleNamespace(
        kernel_release=release, arch="arm64", pageblock_order=order,
        zones=[("DMA", base_pfn, base_pfn + (nblocks << order))],
        cma_areas=[("reserved", (b0 + cma_lo) << order, (nblocks - cma_lo) << order)],
        pagetypeinfo_start=pti_start, pagetypeinfo_end=pti_end,
        unknowns=["pageblock types before the kprobe marker <script>"],
        cmdline="console=ttyAMA0 hugetlb_cma=1G <script>alert(1)</script>")
    return SynthAnalysis(meta, blocks, findings, isolation, detectors, consistency)


# ---------------------------------------------------------------------------
# golden: 4 blocks x 3 intervals
# ---------------------------------------------------------------------------
def _golden_intervals():
    # (block, start, end, mt); time 0..300 ns, one column = 100 ns when cols = 3
    iv = [
        (0, 0, 100, 1), (0, 100, 200, 0), (0, 200, 300, 4),
        (1, 0, 150, 0), (1, 150, 160, 5), (1, 160, 300, 1),
        (2, 0, 10, -1), (2, 10, 250, 2), (2, 250, 300, 3),
        (3, 0, 120, 1), (3, 120, 130, 0), (3, 130, 300, -1),
    ]
    a = np.array(iv, dtype=np.int64)
    return a[:, 0], a[:, 1], a[:, 2], a[:, 3]


def test_rasterize_golden_one_row_per_block():
    grid = plots.rasterize(*_golden_intervals(), plots.View(0, 4, 0, 300), rows=4, cols=3)
    # row 0 = block 0 (lowest block at the bottom when drawn with origin="lower")
    assert grid.tolist() == [
        [1, 0, 4],      # exact bins
        [0, 0, 1],      # bin 1: UNMOVABLE 50 > MOVABLE 40 > ISOLATE 10
        [2, 2, 2],      # bin 2: RECLAIMABLE 50 == HIGHATOMIC 50 -> lower code wins
        [1, -1, -1],    # bin 1: unknown 70 beats MOVABLE 20
    ]
    rgb = plots.colorize(grid)
    assert rgb.shape == (4, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 2]) == (0x00, 0x72, 0xB2)     # CMA blue
    assert tuple(rgb[0, 0]) == (0x56, 0xB4, 0xE9)     # MOVABLE sky blue
    assert tuple(rgb[1, 0]) == (0xD5, 0x5E, 0x00)     # UNMOVABLE vermillion
    assert tuple(rgb[2, 1]) == (0x00, 0x9E, 0x73)     # RECLAIMABLE green
    assert tuple(rgb[3, 2]) == (0xDD, 0xDD, 0xDD)     # unknown light grey


def test_rasterize_golden_aggregated_rows_and_empty():
    grid = plots.rasterize(*_golden_intervals(), plots.View(0, 4, 0, 300), rows=2, cols=3)
    assert grid.tolist() == [
        [0, 0, 1],      # blocks 0+1: ties MOVABLE/UNMOVABLE -> 0; bin 2 CMA 100 vs MOVABLE 100 -> 1
        [1, 2, -1],     # blocks 2+3: MOVABLE 100 > RECLAIMABLE 90; unknown 100 > 2/3 at 50
    ]
    grid = plots.rasterize(*_golden_intervals(), plots.View(0, 5, 0, 300), rows=5, cols=6)
    assert (grid[4] == plots.EMPTY).all()             # block 4 has no history
    # 50 ns bins; bin 3 = 150..200 holds ISOLATE 10 ns and MOVABLE 40 ns -> MOVABLE
    assert grid[1].tolist() == [0, 0, 0, 1, 1, 1]
    assert tuple(plots.colorize(grid)[4, 0]) == (255, 255, 255)


def test_rasterize_golden_rarest_mode():
    # whole-view block-time: ISOLATE 10 < HIGHATOMIC 50 < CMA 100 < RECLAIMABLE 240
    # < UNMOVABLE 260 < MOVABLE 360; unknown only when nothing else is there
    grid = plots.rasterize(*_golden_intervals(), plots.View(0, 4, 0, 300), rows=2, cols=3, mode="rarest")
    assert grid.tolist() == [
        [0, 5, 4],      # the 10 ns ISOLATE of block 1 surfaces in bin 1
        [2, 2, 3],
    ]
    with pytest.raises(MtauditError):
        plots.rasterize(*_golden_intervals(), plots.View(0, 4, 0, 300), rows=2, cols=3, mode="x")


def _oracle(block, start, end, mt, view, rows, cols, mode="dominant"):
    """Per-pixel brute force, written independently of the vectorised code."""
    total: dict[int, float] = {}
    for b, s, e, m in zip(block, start, end, mt):
        if view.block_lo <= b < view.block_hi:
            ov = min(e, view.t_hi) - max(s, view.t_lo)
            if ov > 0:
                total[int(m)] = total.get(int(m), 0.0) + ov
    span = view.t_hi - view.t_lo
    out = np.full((rows, cols), plots.EMPTY)
    for r in range(rows):
        for c in range(cols):
            t0 = view.t_lo + span * c / cols
            t1 = view.t_lo + span * (c + 1) / cols
            w: dict[int, float] = {}
            for b, s, e, m in zip(block, start, end, mt):
                if not (view.block_lo <= b < view.block_hi):
                    continue
                if (b - view.block_lo) * rows // view.nblocks != r:
                    continue
                ov = min(e, t1) - max(s, t0)
                if ov > 0:
                    w[int(m)] = w.get(int(m), 0.0) + ov
            if w and mode == "rarest":
                out[r, c] = min(w, key=lambda k: (k == -1, total[k], k))
            elif w:
                best = max(w.values())
                out[r, c] = min(k for k, v in w.items() if v >= best - 1e-6 * span / cols)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_rasterize_matches_brute_force(seed):
    a = synthetic_analysis(nblocks=9, nintervals=60, seed=seed, t_end=997)
    bl = a.blocks
    args = (bl["block"].to_numpy(np.int64), bl["start_ts"].to_numpy(np.int64),
            bl["end_ts"].to_numpy(np.int64), bl["migratetype"].to_numpy(np.int16))
    b0 = int(args[0].min())
    for view, rows, cols in [(plots.View(b0, b0 + 9, 0, 997), 9, 7), (plots.View(b0, b0 + 9, 0, 997), 4, 13),
                             (plots.View(b0 + 2, b0 + 7, 100, 600), 5, 11)]:
        for mode in plots.MODES:
            got = plots.rasterize(*args, view, rows, cols, mode=mode)
            want = _oracle(*args, view, rows, cols, mode=mode)
            assert got.tolist() == want.tolist(), mode


def test_isolation_mask_marks_window_pixels():
    iso = pd.DataFrame({"start_ts": [100], "end_ts": [101], "start_pfn": [2 << 9], "end_pfn": [3 << 9]})
    m = plots.isolation_mask(iso, plots.View(0, 4, 0, 300), 9, rows=4, cols=3)
    # a 1 ns window in block 2 still gets its pixel (row 2, col 1), nothing else
    assert m.sum() == 1 and m[2, 1]


def test_count_series_matches_pointwise_count():
    a = synthetic_analysis(nblocks=20, nintervals=300, seed=3, t_end=1000)
    bl = a.blocks
    args = [bl[c].to_numpy(np.int64) for c in ("block", "start_ts", "end_ts", "migratetype")]
    view = plots.make_view(a)
    s = plots.count_series(*args, view, bins=10)
    blk, st, en, mt = args
    for code, (edges, at_edge, vmin, vmax) in s.items():
        for k, t in enumerate(edges[:-1]):
            want = int(((mt == code) & (st <= t) & (en > t)).sum())
            assert at_edge[k] == want
            inside = [int(((mt == code) & (st <= u) & (en > u)).sum()) for u in range(int(t), int(edges[k + 1]))]
            assert vmin[k] == min(inside) and vmax[k] == max(inside)
        # the last point is the state just before the trace end, not the empty state after it
        want_end = int(((mt == code) & (en == 1000)).sum())
        assert at_edge[-1] == want_end
    # every block has exactly one type at each moment
    total = sum(v[1][:-1] for v in s.values())
    assert (total == 20).all()


def test_pagetypeinfo_counts_shapes():
    d = {"DMA": {"Unmovable": 1, "Movable": 2, "CMA": 3}, "Normal": {"Movable": 5}}
    assert plots.pagetypeinfo_counts(d) == {0: 1, 1: 7, 4: 3}
    assert plots.pagetypeinfo_counts(d, "Normal") == {1: 5}
    by_node = SimpleNamespace(blocks={(0, "DMA"): {0: 107, 1: 879, 4: 544}, (1, "DMA"): {1: 1}})
    assert plots.pagetypeinfo_counts(by_node) == {0: 107, 1: 880, 4: 544}
    assert plots.pagetypeinfo_counts(by_node, "Normal") is None
    assert plots.pagetypeinfo_counts(None) is None


def test_pagetypeinfo_counts_real_parser():
    from analyzer.capture import parse_pagetypeinfo
    path = os.path.join(REAL, "pagetypeinfo-start.txt")
    pti = parse_pagetypeinfo(open(path).read(), path)
    # "Node 0, zone DMA  107 879 6 0 544 0" in the file
    assert plots.pagetypeinfo_counts(pti) == {0: 107, 1: 879, 2: 6, 3: 0, 4: 544, 5: 0}


def test_make_view_zoom_and_errors():
    a = synthetic_analysis()
    v = plots.make_view(a, pfn_range=(0x40000 + 512 * 4, 0x40000 + 512 * 8), time_range=(1.0, 2.5))
    b0 = 0x40000 >> 9
    assert (v.block_lo, v.block_hi) == (b0 + 4, b0 + 8)
    assert (v.t_lo, v.t_hi) == (1_000_000_000, 2_500_000_000)
    assert plots.parse_range("0x10-0x20", what="x") == (16, 32)
    assert plots.parse_range("1.5-3", what="x", as_float=True) == (1.5, 3.0)
    for bad in ("5", "3-1", "a-b", "-4"):
        with pytest.raises(MtauditError):
            plots.parse_range(bad, what="--pfn-range")
    with pytest.raises(MtauditError, match="no such zone"):
        plots.make_view(a, zone="Normal")
    with pytest.raises(MtauditError):
        plots.make_view(a, pfn_range=(0, 0x100))


def _png_image(png: bytes) -> np.ndarray:
    import matplotlib.image as mpimg
    return mpimg.imread(io.BytesIO(png), format="png")


def _distinct_palette_colours(arr: np.ndarray) -> set[int]:
    rgb = (arr[..., :3] * 255).round().astype(int)
    found = set()
    for code, hexc in plots.MT_COLORS.items():
        if code in (plots.EMPTY, 7):
            continue
        c = plots._rgb(hexc)
        if (np.abs(rgb - c).sum(axis=-1) == 0).sum() > 50:
            found.add(code)
    return found


def test_timeline_png_synthetic_size_and_content(tmp_path):
    a = synthetic_analysis(nblocks=300, nintervals=5000)
    t = time.perf_counter()
    fig = plots.timeline_figure(a, opts=plots.PlotOptions(width_px=1200, height_px=800))
    out = tmp_path / "t.png"
    plots.write_png(fig, str(out))
    print(f"\nsynthetic timeline 300 blocks x 5000 intervals: {time.perf_counter() - t:.2f}s")
    arr = _png_image(out.read_bytes())
    assert arr.shape[:2] == (800, 1200)
    assert {0, 1, 4, 5, plots.UNKNOWN} <= _distinct_palette_colours(arr)


def test_counts_png_synthetic(tmp_path):
    a = synthetic_analysis(nblocks=300, nintervals=5000)
    png = plots.figure_png(plots.counts_figure(a, opts=plots.PlotOptions(width_px=1000, height_px=500)))
    arr = _png_image(png)
    assert arr.shape[:2] == (500, 1000)
    assert len(_distinct_palette_colours(arr) - {plots.UNKNOWN}) >= 3


@pytest.fixture(scope="module")
def real_analysis(analyzed):
    return analyzed("captures/debian-6.1-arm64-cma-churn")


def test_timeline_png_real_fixture(real_analysis, tmp_path):
    t = time.perf_counter()
    png = plots.figure_png(plots.timeline_figure(real_analysis))
    print(f"\nreal 6.1 fixture timeline ({len(real_analysis.blocks)} intervals): {time.perf_counter() - t:.2f}s")
    (tmp_path / "real.png").write_bytes(png)
    arr = _png_image(png)
    assert arr.shape[:2] == (1000, 1600)
    assert len(_distinct_palette_colours(arr)) >= 3     # MOVABLE, CMA, UNMOVABLE at least
    png2 = plots.figure_png(plots.counts_figure(real_analysis))
    assert _png_image(png2).shape[:2] == (700, 1600)


# ---------------------------------------------------------------------------
# benchmark (prints; run by hand)
# ---------------------------------------------------------------------------
def bench(nblocks: int = 100_000, nintervals: int = 4_000_000) -> None:
    t = time.perf_counter()
    a = synthetic_analysis(nblocks=nblocks, nintervals=nintervals, nfindings=200_000)
    print(f"build synthetic {nblocks} blocks x {nintervals} intervals: {time.perf_counter() - t:.2f}s")
    view = plots.make_view(a)
    bl = a.blocks
    cols = [bl["block"].to_numpy(np.int64), bl["start_ts"].to_numpy(np.int64),
            bl["end_ts"].to_numpy(np.int64), bl["migratetype"].to_numpy(np.int16)]
    t = time.perf_counter()
    plots.rasterize(*cols, view, 770, 1360)
    t_r = time.perf_counter() - t
    t = time.perf_counter()
    png = plots.figure_png(plots.timeline_figure(a, view))
    t_tl = time.perf_counter() - t
    t = time.perf_counter()
    png2 = plots.figure_png(plots.counts_figure(a, view))
    t_ct = time.perf_counter() - t
    print(f"rasterize only: {t_r:.2f}s; timeline png: {t_tl:.2f}s ({len(png)} B); counts png: {t_ct:.2f}s ({len(png2)} B)")
    # peer measured in the same run: the floor cost of any 1600x1000 heatmap PNG
    # (one imshow of a ready-made image, saved), so the ratio says what our
    # rasterising + overlays add on this machine
    from matplotlib.figure import Figure
    t = time.perf_counter()
    f = Figure(figsize=(16, 10), dpi=100)
    f.add_subplot().imshow(np.random.default_rng(0).integers(0, 255, (770, 1360, 3), dtype=np.uint8),
                           aspect="auto", interpolation="nearest")
    plots.figure_png(f)
    t_peer = time.perf_counter() - t
    print(f"peer (bare imshow+PNG of the same size): {t_peer:.2f}s; timeline/peer = {t_tl / t_peer:.1f}x")
    from analyzer.report import html as rhtml
    t = time.perf_counter()
    page = rhtml.render_report(a)
    print(f"full HTML report: {time.perf_counter() - t:.2f}s ({len(page)} B)")
    with open("/tmp/bench-timeline.png", "wb") as f:
        f.write(png)
    with open("/tmp/bench-counts.png", "wb") as f:
        f.write(png2)


if __name__ == "__main__":
    if "--bench" in sys.argv:
        rest = [int(x) for x in sys.argv[sys.argv.index("--bench") + 1:]]
        bench(*rest)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def _cli(*argv: str):
    """Run `mtaudit ARGV` in this process (no interpreter start-up per call)."""
    import contextlib

    from analyzer.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as ex:      # argparse usage errors
            rc = ex.code
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.mark.parametrize("flag,value", [("--pfn-range", "5"), ("--pfn-range", "0x20-0x10"),
                                        ("--time-range", "a-b"), ("--size", "10x10")])
def test_cli_plot_bad_flags_exit_2(flag, value, tmp_path):
    r = _cli("plot", REAL, "-o", str(tmp_path / "x.png"), flag, value)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and flag in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_cli_plot_and_report_real_fixture(tmp_path):
    import analyzer.analysis  # noqa: F401
    import analyzer.capture  # noqa: F401
    png = tmp_path / "tl.png"
    r = _cli("plot", REAL, "-o", str(png), "--time-range", "0-1000")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _png_image(png.read_bytes()).shape[:2] == (1000, 1600)
    r = _cli("plot", REAL, "-o", str(png), "--kind", "counts", "--zone", "DMA", "--size", "800x400")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _png_image(png.read_bytes()).shape[:2] == (400, 800)
    r = _cli("plot", REAL, "-o", str(png), "--zone", "NoSuchZone")
    assert r.returncode == 2 and "no such zone" in r.stderr and "Traceback" not in r.stderr
    html_out = tmp_path / "r.html"
    r = _cli("report", REAL, "-o", str(html_out))
    assert r.returncode == 0, r.stderr[-3000:]
    text = html_out.read_text()
    for sec in ("summary", "metadata", "timeline", "counts", "findings", "consistency"):
        assert f'id="{sec}"' in text


def test_cli_report_takes_analyze_overrides(tmp_path):
    """plot/report accept analyze's capture flags (here an extra CMA area) and honour them."""
    import analyzer.analysis  # noqa: F401
    small = os.path.join(ROOT, "fixtures", "captures", "custom-6.1-x86_64-cmadebugfs")
    out = tmp_path / "r.html"
    r = _cli("report", small, "-o", str(out), "--cma", "extra-area:0x20000:4096")
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert "<td>extra-area</td><td>0x20000</td>" in text
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)      # shareable, not mkstemp's 0600


def test_legend_names_every_registered_finding_id_in_registry_order():
    """S6 and A1 get their own declared marker and legend entry (the map once stopped at S5)."""
    a = synthetic_analysis(nblocks=64, nintervals=400, nfindings=40)
    ids = ["A1", "S6", "MW", "S1a"]
    a.findings["detector"] = pd.array([ids[i % 4] for i in range(len(a.findings))], dtype=pd.ArrowDtype(pa.string()))
    fig = plots.timeline_figure(a, opts=plots.PlotOptions(width_px=900, height_px=600))
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts() if " finding (" in t.get_text()]
    assert [lab.split()[0] for lab in labels] == ["S1a", "S6", "A1", "MW"]
    marks = plots.detector_markers()
    assert marks["S6"] != marks["A1"] and {marks["S6"], marks["A1"]}.isdisjoint(
        {marks[k] for k in ("S1a", "S1b", "S2", "S3", "S4", "S5", "MW")})
