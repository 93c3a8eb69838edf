"""HTML report: sections, escaping, self-containment, comparison; headless Chromium render."""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from analyzer.report import html as rhtml  # noqa: E402
from analyzer.report import plots  # noqa: E402
from test_plots import synthetic_analysis  # noqa: E402
from support.tools import requires_tool

SECTIONS = ["summary", "metadata", "timeline", "counts", "findings", "consistency"]
CHROMIUM = "/usr/bin/chromium"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if tag == "link" or (tag == "a" and a.get("href")):
            self.hrefs.append(a.get("href", ""))
        if tag == "script":
            self.scripts += 1


def _parse(text: str) -> _Collect:
    c = _Collect()
    c.feed(text)
    return c


def _small_opts() -> plots.PlotOptions:
    return plots.PlotOptions(width_px=900, height_px=600)


@pytest.fixture(scope="module")
def synth_html() -> str:
    return rhtml.render_report(synthetic_analysis(nblocks=120, nintervals=2000), opts=_small_opts(), source="synthetic <dir>")


def test_report_has_every_section(synth_html):
    c = _parse(synth_html)
    for s in SECTIONS:
        assert s in c.ids, s
    assert len(c.ids) == len(set(c.ids))                          # ids unique
    for h in ("Summary", "Capture", "Pageblock timeline", "Blocks per migratetype over time",
              "Top findings", "Most affected pageblocks", "Histories", "Consistency with /proc/pagetypeinfo", "Zones", "CMA areas"):
        assert h in synth_html, h
    # detector table with kernel applicability, severity badges
    assert "&lt; 6.10" in synth_html and 'class="na"' in synth_html and 'class="sev"' in synth_html


def test_report_is_self_contained_and_escaped(synth_html):
    c = _parse(synth_html)
    assert c.scripts == 0
    assert len(c.srcs) == 2 + ("cma" in c.ids)     # timeline, counts (+ the CMA latency plot)
    for src in c.srcs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(h.startswith("#") for h in c.hrefs)                # only in-page links
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", synth_html)
    # text from the capture is escaped, never markup
    assert "<script>" not in synth_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in synth_html  # the cmdline
    assert "y &lt;b&gt;" in synth_html                              # a detector meaning
    assert "&lt;&amp;&gt;" in synth_html                            # narrative text
    assert "synthetic &lt;dir&gt;" in synth_html


def test_report_findings_and_narratives(synth_html):
    a = synthetic_analysis(nblocks=120, nintervals=2000)
    top = rhtml._top_findings(a.findings, 15)
    assert (top["severity"].astype(str).iloc[0]) == "high"
    first_pfn = int(top["pfn"].iloc[0])
    assert f"pfn {first_pfn:#x}" in synth_html
    # the narrative of that pfn is in the page, escaped
    line = a.narrative(first_pfn)[0]
    assert rhtml.e(line) in synth_html
    # ground-truth agreement: rates as percentages, lists as counts, timestamps as seconds
    assert "rate: 97.00%, coverage: 81.00%, disagreeing_blocks: 3, window_start_ts: 2.000 s" in synth_html
    assert "synthetic model warning &lt;w&gt;" in synth_html
    assert "Inconsistent; 3 blocks of unknown type at the end." in synth_html


def test_write_report_atomic(tmp_path):
    out = tmp_path / "sub" / "r.html"
    rhtml.write_report(synthetic_analysis(nblocks=16, nintervals=100), str(out), opts=_small_opts())
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["r.html"]    # no temp file left


def test_comparison_side_by_side():
    a = synthetic_analysis(nblocks=40, nintervals=400, seed=1, release="6.1.0-50-arm64")
    b = synthetic_analysis(nblocks=40, nintervals=400, seed=2, nfindings=3, release="6.12.117+deb13-arm64")
    text = rhtml.render_comparison(a, b, ["6.1 <old>", "6.12"], opts=_small_opts())
    c = _parse(text)
    assert "comparison" in c.ids
    for p in ("a-", "b-"):
        for s in SECTIONS:
            assert p + s in c.ids
    assert len(c.ids) == len(set(c.ids))
    assert len(c.srcs) == 4
    assert "6.1 &lt;old&gt;" in text and "6.1.0-50-arm64" in text and "6.12.117+deb13-arm64" in text
    # the comparison row of S1a carries both counts
    na = int((a.findings["detector"] == "S1a").sum())
    nb = int((b.findings["detector"] == "S1a").sum())
    row = re.search(r"<tr><td>S1a</td>(.*?)</tr>", text).group(1)
    nums = re.findall(r'<td class="num">(\d+)</td>', row)
    assert nums == [str(na), str(nb)]


# ---------------------------------------------------------------------------
# headless Chromium
# ---------------------------------------------------------------------------
def _chromium(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    ud = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={ud}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _page_problems(stderr: str) -> list[str]:
    """Console errors / failed loads of the page (dbus noise of a headless host ignored)."""
    bad = []
    for line in stderr.splitlines():
        if "CONSOLE" in line or "Not allowed to load" in line or "net::ERR" in line \
                or "Uncaught" in line or "Failed to load" in line:
            bad.append(line)
    return bad


@pytest.mark.chromium
@requires_tool(CHROMIUM)
def test_chromium_renders_report(tmp_path):
    a = synthetic_analysis(nblocks=200, nintervals=3000)
    page = tmp_path / "report.html"
    rhtml.write_report(a, str(page), opts=plots.PlotOptions(width_px=1200, height_px=800))
    _check_in_chromium(page, tmp_path, "synthetic")


def _check_in_chromium(page, tmp_path, tag: str) -> None:
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not _page_problems(dom.stderr)
    c = _parse(dom.stdout)
    for s in SECTIONS:
        assert s in c.ids, s
    assert len(c.srcs) == 2 + ("cma" in c.ids)     # timeline, counts (+ the CMA latency plot)
    shot = tmp_path / f"report-{tag}.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", page.as_uri()], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not _page_problems(r.stderr)
    import matplotlib.image as mpimg
    img = (mpimg.imread(str(shot))[..., :3] * 255).round().astype(int)
    assert img.shape[:2] == (2000, 1280)
    # the embedded heatmap was decoded and drawn: palette colours cover real area
    for code in (1, 4):
        col = np.array(plots._rgb(plots.MT_COLORS[code]))
        assert (np.abs(img - col).sum(axis=-1) <= 6).sum() > 2000, code
    # the header bar (#16324f) rendered: CSS applied
    assert (np.abs(img[:40] - np.array([0x16, 0x32, 0x4F])).sum(axis=-1) <= 6).mean() > 0.5
    keep = os.environ.get("MTAUDIT_KEEP_SCREENSHOTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, shot.name))
        shutil.copy(page, os.path.join(keep, f"report-{tag}.html"))


@pytest.fixture(scope="module")
def real_61(analyzed):
    return analyzed("captures/debian-6.1-arm64-cma-churn")


def test_comparison_real_61_vs_612(real_61, analyzed):
    b = analyzed("captures/debian-6.12-arm64-cma-churn")
    text = rhtml.render_comparison(real_61, b, ["Debian 6.1", "Debian 6.12"], opts=_small_opts())
    c = _parse(text)
    assert len(c.ids) == len(set(c.ids)) and len(c.srcs) == 4
    assert "6.1.0-50-arm64" in text and "6.12.117+deb13-arm64" in text
    for det in ("S1", "S2", "MW"):
        row = re.search(rf"<tr><td>{det}</td>(.*?)</tr>", text).group(1)
        nums = [int(x) for x in re.findall(r'<td class="num">(\d+)</td>', row)]
        want = []
        for an in (real_61, b):
            d = an.detectors.set_index("id")
            want.append(int(d.loc[det, "count"]))
        assert nums == want, det


@pytest.mark.chromium
@requires_tool(CHROMIUM)
def test_chromium_renders_real_report(tmp_path, real_61):
    a = real_61
    page = tmp_path / "report.html"
    rhtml.write_report(a, str(page), source="fixtures/captures/debian-6.1-arm64-cma-churn")
    text = page.read_text()
    assert "6.1.0-50-arm64" in text
    _check_in_chromium(page, tmp_path, "real-6.1")


def test_narrative_window_keeps_the_finding():
    lines = [f"line {i}" for i in range(500)]
    lines[300] = "!! S1a"
    w = rhtml._window(lines, 80)
    assert "!! S1a" in w
    assert w[0] == "… 247 earlier lines omitted" and w[-1] == "… 173 later lines omitted"
    assert len(w) == 82
    assert rhtml._window(lines[:10], 80) == lines[:10]


def test_report_survives_sparse_capture():
    """A bare trace: no zones, no CMA, no pagetypeinfo, no findings; then no history at all."""
    from types import SimpleNamespace
    a = synthetic_analysis(nblocks=8, nintervals=30, nfindings=0)
    a.meta = SimpleNamespace(kernel_release=None, arch=None, pageblock_order=9, zones=[], cma_areas=[],
                             pagetypeinfo_start=None, pagetypeinfo_end=None, unknowns=[], cmdline=None)
    a.isolation = a.isolation.iloc[0:0]
    text = rhtml.render_report(a, opts=_small_opts())
    c = _parse(text)
    assert all(s in c.ids for s in SECTIONS) and len(c.srcs) == 2
    assert "No findings." in text and "unknown kernel" in text
    a.blocks = a.blocks.iloc[0:0]
    text = rhtml.render_report(a, opts=_small_opts())
    assert all(s in _parse(text).ids for s in SECTIONS)
    assert "No pageblock history was reconstructed" in text and not _parse(text).srcs


def test_comparison_takes_lead_sections_instead_of_splicing():
    """The harness adds its verdicts as a Section: first in the page and first in the navigation."""
    a = synthetic_analysis(nblocks=40, nintervals=300, seed=1)
    b = synthetic_analysis(nblocks=40, nintervals=300, seed=2)
    lead = rhtml.Section("verdicts", "Verdicts", '<section id="verdicts"><h2>Verdicts: PASS</h2></section>')
    text = rhtml.render_comparison(a, b, ["A", "B"], opts=_small_opts(), lead=[lead])
    c = _parse(text)
    assert c.ids.index("verdicts") < c.ids.index("comparison")
    nav = text[text.index("<nav>"):text.index("</nav>")]
    assert nav.startswith('<nav><a href="#verdicts">Verdicts</a><a href="#comparison">')
    plain = rhtml.render_comparison(a, b, ["A", "B"], opts=_small_opts())
    assert 'id="verdicts"' not in plain and '<nav><a href="#comparison">' in plain
