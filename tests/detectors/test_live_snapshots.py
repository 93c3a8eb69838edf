"""A1 and the consistency check on a bundle recorded live (fixtures/bundles/host-6.18-record-tracefs:
`mtaudit record --duration 0.4` on the 6.18 CI machine, no kprobe events, no CMA).

On a running system the blocks' types before the trace are unknown (only per-type counts
are), and zoneinfo/pagetypeinfo are two reads: the analysis must say UNKNOWN, not FAIL, and
allow the skew of two reads unless the recorder took them so that they agree.
"""
from __future__ import annotations

import json
import os
import re
import shutil

import analyzer
from analyzer.analysis import analyze
from analyzer.capture import load_capture
from analyzer.detectors import a1_accounting

B = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "bundles", "host-6.18-record-tracefs")


def test_live_bundle_reads_unknown_not_failed():
    trace, meta = load_capture(B)
    assert meta.kernel_release == "6.18.44-fc-v1272"
    assert meta.unknowns == []                                  # nothing "assumed"
    # no CMA, known from the capture itself: pagetypeinfo's columns (no CMA column) win over the
    # config's CONFIG_CMA=n, which says the same; never "unknown" or "assumed"
    assert meta.provenance["cma_areas"] == "none: the kernel has no CMA (pagetypeinfo column header)"
    assert not meta.numbering.has_cma and meta.cma_areas == []
    a = analyze(trace, meta)
    cr = a.consistency
    c = cr.table
    assert cr.start_unknown and cr.passed is None and cr.contradicted is False
    assert cr.available
    assert not len(a.findings[a.findings["detector"] == "A1"])
    # the zone's block count is the kernel's own (pagetypeinfo), not the zone span
    normal = c[c["zone"] == "Normal"]
    assert int(normal["reconstructed"].sum()) >= int(normal["pagetypeinfo"].sum())
    assert analyzer.load(os.path.join(B, "trace.dat")).meta.kernel_release == meta.kernel_release


def _bump_zoneinfo(tmp_path, pages: int, agreed: bool) -> str:
    d = tmp_path / "b"
    shutil.copytree(B, d)
    zi = (d / "zoneinfo-start.txt").read_text()
    zone = zi.index("zone   Normal")
    m = re.compile(r"nr_free_pages\s+(\d+)").search(zi, zone)
    zi = zi[:m.start(1)] + str(int(m[1]) + pages) + zi[m.end(1):]
    (d / "zoneinfo-start.txt").write_text(zi)
    man = json.loads((d / "manifest.json").read_text())
    man["recorder"]["start"]["zoneinfo_pagetypeinfo_agree"] = agreed
    (d / "manifest.json").write_text(json.dumps(man))
    return str(d)


def test_a1_allows_the_skew_of_two_live_reads(tmp_path):
    """+1024 pages (the false finding users saw) is the skew of two reads; +5 % of the zone is not."""
    _, meta = load_capture(_bump_zoneinfo(tmp_path / "a", 1024, agreed=False))
    bad, _ = a1_accounting.check_capture(meta, live=True)
    assert bad == []
    _, meta = load_capture(_bump_zoneinfo(tmp_path / "b", 1024, agreed=True))     # taken to agree: strict
    bad, _ = a1_accounting.check_capture(meta, live=True)
    assert [b["check"] for b in bad] == ["nr_free_pages=freelists"]
    _, meta = load_capture(_bump_zoneinfo(tmp_path / "c", 300_000, agreed=False))
    bad, _ = a1_accounting.check_capture(meta, live=True)
    assert [b["check"] for b in bad] == ["nr_free_pages=freelists"] and bad[0]["snapshot"] == "start"
