"""Judging the kernel by the trace: measured print behaviour, S6 (the 2012 isolate-vs-pcp race),
A1 (free-page accounting), evidence tiers, "not checked" -> exit 3, offline is not isolation."""
from __future__ import annotations

import numpy as np

from analyzer.analysis import analyze
from analyzer.detectors import a1_accounting
from analyzer.kernels import CMA, ISOLATE, MOVABLE, UNMOVABLE, behavior_for
from analyzer.model import build_model
from analyzer.model.synthetic import SyntheticTrace, synthetic_meta

PB = 512
Z0 = 0x40000
CMA_BASE, CMA_COUNT = 0x48000, 0x1000
K61 = "Linux (none) 6.1.0-50-arm64 #1 SMP Debian 6.1.192-1 (2026-07-02) aarch64 GNU/Linux"


def meta():
    m = synthetic_meta(zones=[("DMA", Z0, 0x50000)], cma=[("reserved", CMA_BASE, CMA_COUNT)], release=None)
    m.uname = K61
    return m


def race_story(reverted: bool, with_second_page: bool = True) -> tuple[SyntheticTrace, dict]:
    """The 2012 thread's sequence: P cached as CMA on a pcp list -> cma_alloc isolates P's block ->
    P drained (to the CMA freelist if the drain does not re-read the block type) -> P allocated
    while the block is isolated -> block restored.  Q: a stale pcp type while nothing is isolated."""
    tr = SyntheticTrace()
    s = {}
    tr.add("print", buf="pb/setmt kprobe active (filter mask == 7)\n")
    P, Q = CMA_BASE + 7, Z0 + 3 * PB + 1
    s["free_p"] = tr.add("mm_page_free", pfn=P, order=0, cpu=1)
    if with_second_page:
        s["free_q"] = tr.add("mm_page_free", pfn=Q, order=0, cpu=0)
        tr.add("setmt", page=0, flags=UNMOVABLE, pfn=Q & ~(PB - 1), mask=7, pid=7)
    tr.add("cma_alloc_start", name="reserved", count=PB, align=9, pid=42)
    s["iso"] = tr.add("setmt", page=0, flags=ISOLATE, pfn=CMA_BASE, mask=7, pid=42)
    s["drain_p"] = tr.add("mm_page_pcpu_drain", pfn=P, order=0, migratetype=CMA if reverted else ISOLATE, cpu=0)
    if reverted:
        s["alloc_p"] = tr.add("mm_page_alloc", pfn=P, order=0, migratetype=MOVABLE, gfp_flags=0, cpu=1)
    tr.add("test_pages_isolated", start_pfn=CMA_BASE, end_pfn=CMA_BASE + PB, fin_pfn=CMA_BASE + PB, pid=42)
    tr.add("setmt", page=0, flags=CMA, pfn=CMA_BASE, mask=7, pid=42)
    tr.add("cma_alloc_finish", name="reserved", pfn=CMA_BASE, page=1, count=PB, align=9, errorno=0, pid=42)
    if with_second_page:
        s["drain_q"] = tr.add("mm_page_pcpu_drain", pfn=Q, order=0, migratetype=MOVABLE, cpu=0)
    tr.add("mm_page_alloc_zone_locked", pfn=Z0 + 9 * PB, order=0, migratetype=MOVABLE, percpu_refill=1)
    tr.add("mm_page_alloc", pfn=Z0 + 9 * PB, order=0, migratetype=MOVABLE, gfp_flags=0)
    return tr, s


def test_stock_61_behaves_as_the_table_says():
    tr, s = race_story(reverted=False)
    a = analyze(tr, meta())
    d = a.behaviour["drain"]
    assert d["expected"] == "cached" and d["observed"] == "cached" and d["agree"] is True
    assert d["isolated"]["printed_live"] == 1 and d["not_isolated"]["printed_cached"] == 1
    assert a.kernel.drain_prints == "cached" and not a.kernel.observed
    ids = set(a.findings["detector"].astype(str))
    assert "S6" not in ids and "S1a" in ids            # Q's stale type: a kprobe-confirmed S1a
    assert a.behaviour["summary"] == []


def test_reverted_51bb1a4093cc_is_caught_by_evidence_not_by_version():
    tr, s = race_story(reverted=True)
    a = analyze(tr, meta())
    d = a.behaviour["drain"]
    assert d["expected"] == "cached" and d["observed"] == "cached-always" and d["agree"] is False
    assert d["isolated"] == {"informative": 1, "printed_live": 0, "printed_cached": 1, "printed_other": 0,
                             "verdict": "cached", "expected": "live"}
    assert a.behaviour["summary"] == [
        "kernel behaves unlike 6.1.0-50-arm64 (upstream 6.1.192, debian): drains do not re-read the block "
        "type while a block of the zone is isolated"]
    assert a.kernel.drain_prints == "cached-always" and a.kernel.observed == ("drain_prints",)
    assert a.table_kernel.drain_prints == "cached"
    f = a.findings
    s6 = f[f["detector"].astype(str) == "S6"]
    assert list(s6["seq"]) == [s["drain_p"]] and list(s6["severity"]) == ["critical"]
    assert "pcp cpu1" in s6["explanation"].iloc[0] and "Isolate" in s6["explanation"].iloc[0]
    assert "MW" not in set(f["detector"].astype(str))   # never excused as the model's fault
    assert list(f[f["detector"].astype(str) == "S5"]["seq"]) == [s["alloc_p"]]
    assert a.evidence()["probe"] == len(a.kernel_findings) and a.exit_status() == 1
    j = a.summary(with_rows=False)
    assert j["behaviour"]["drain"]["observed"] == "cached-always"
    assert j["kernel"]["judged_by_observed"] == ["drain_prints"]
    story = a.narrative(CMA_BASE + 7)
    assert any("to the CMA freelist while block Isolate" in t for t in story)
    assert any(t.startswith("!! S6") for t in story)


def test_no_ground_truth_no_verdict():
    tr, _ = race_story(reverted=True)
    tr._rows.pop("print")
    tr._rows.pop("setmt")
    a = analyze(tr, meta())
    assert a.behaviour["drain"]["observed"] is None and a.behaviour["drain"]["agree"] is None
    assert a.kernel.drain_prints == "cached"
    assert "S6" not in set(a.findings["detector"].astype(str))


def test_a_mismatch_against_the_probe_is_never_a_model_warning_on_live_kernels():
    """6.12 prints the live type; if it prints something else than the kprobe's type, that is the
    kernel's fault (here: a drain printing Movable for a block the probe set Unmovable)."""
    tr = SyntheticTrace()
    tr.add("print", buf="pb/setmt kprobe active (filter mask == 7)\n")
    tr.add("mm_page_free", pfn=Z0 + 5, order=0)
    tr.add("setmt", page=0, flags=UNMOVABLE, pfn=Z0, mask=7)
    d = tr.add("mm_page_pcpu_drain", pfn=Z0 + 5, order=0, migratetype=MOVABLE)
    m = meta()
    m.uname = "Linux (none) 6.12.117+deb13-arm64 #1 SMP Debian 6.12.117-1 aarch64 GNU/Linux"
    a = analyze(tr, m)
    f = a.findings
    assert list(f["detector"].astype(str)) == ["S1a"] and list(f["seq"]) == [d]
    # the print did not overrule the kprobe in the model either
    st = a.model.block_type_at(np.array([Z0 + 5]), np.array([d + 1]))
    assert int(st.mt[0]) == UNMOVABLE
    assert a.behaviour["drain"]["not_isolated"]["verdict"] == "cached"
    assert a.behaviour["drain"]["agree"] is False


def test_missing_events_are_not_checked_and_inconclusive():
    tr = SyntheticTrace()
    tr.add("mm_page_alloc", pfn=Z0 + 1, order=0, migratetype=MOVABLE, gfp_flags=0)
    a = analyze(tr, meta())
    st = dict(zip(a.detectors["id"], a.detectors["status"]))
    assert st["S1"] == st["S2"] == st["S6"] == "not checked" and st["S5"] == "checked"
    assert a.not_checked() == ["S1", "S2", "S3", "S6"] and a.exit_status() == 3
    notes = dict(zip(a.detectors["id"], a.detectors["notes"]))
    assert notes["S1"]["missing_events"] == ["mm_page_pcpu_drain"]


def test_offlined_blocks_do_not_count_as_zone_isolation():
    """offline_pages(): test_pages_isolated succeeds and the blocks stay ISOLATE, but the zone's
    nr_isolate_pageblock no longer counts them; alloc_contig_range restores its blocks itself."""
    def story(offline: bool):
        tr = SyntheticTrace()
        tr.add("print", buf="pb/setmt kprobe active (filter mask == 7)\n")
        tr.add("setmt", page=0, flags=ISOLATE, pfn=Z0 + 40 * PB, mask=7, pid=5)
        during = tr.add("mm_page_free", pfn=Z0, order=0)
        test = tr.add("test_pages_isolated", start_pfn=Z0 + 40 * PB, end_pfn=Z0 + 41 * PB,
                      fin_pfn=Z0 + 41 * PB, pid=5)
        after = tr.add("mm_page_free", pfn=Z0, order=0)
        if not offline:
            tr.add("setmt", page=0, flags=MOVABLE, pfn=Z0 + 40 * PB, mask=7, pid=5)
        later = tr.add("mm_page_free", pfn=Z0, order=0)
        return build_model(tr, meta(), behavior_for(K61)), during, test, after, later

    m, during, test, after, later = story(offline=True)
    zi = m.block_type_at(np.full(3, Z0, np.uint64), np.array([during, after, later])).zone_isolated
    assert list(zi) == [True, False, False] and m.stats["offlined_blocks"] == 1
    st = m.block_type_at(np.array([Z0 + 40 * PB]), np.array([later]))
    assert int(st.mt[0]) == ISOLATE                     # the block itself stays isolated
    m, during, test, after, later = story(offline=False)
    zi = m.block_type_at(np.full(3, Z0, np.uint64), np.array([during, after, later])).zone_isolated
    assert list(zi) == [True, True, False] and "offlined_blocks" not in m.stats


def test_zero_length_window_drain_is_no_free_time_print():
    """A contig window known only from its test_pages_isolated has zero length; the drain the
    isolation caused just before it printed the live type and must not type the block."""
    tr = SyntheticTrace()
    tr.add("mm_page_alloc", pfn=Z0 + 2 * PB, order=0, migratetype=MOVABLE, gfp_flags=0, pid=9)
    tr.add("mm_page_free", pfn=Z0 + 3 * PB + 4, order=0)
    tr.add("mm_page_pcpu_drain", pfn=Z0 + 3 * PB + 4, order=0, migratetype=UNMOVABLE)   # live, during isolation
    tr.add("test_pages_isolated", start_pfn=Z0 + 60 * PB, end_pfn=Z0 + 61 * PB, fin_pfn=Z0 + 61 * PB, pid=9)
    m = build_model(tr, meta(), behavior_for(K61))
    iso = m.isolation
    assert list(iso["start_seq"]) == list(iso["end_seq"])          # the window as the events bracket it
    st = m.block_type_at(np.array([Z0 + 3 * PB]), np.array([3]))
    assert int(st.mt[0]) == MOVABLE                                  # not "free-observed" Unmovable


def test_accounting_reads_snapshots(tmp_path):
    (tmp_path / "meminfo-end.txt").write_text("MemTotal: 1000 kB\nMemFree: 400 kB\nCmaTotal: 512 kB\n"
                                              "CmaFree: 600 kB\n")
    (tmp_path / "zoneinfo-end.txt").write_text("Node 0, zone      DMA\n  pages free     10\n"
                                               "        present  1000\n        managed  900\n"
                                               "        cma      128\n      nr_free_pages 100\n"
                                               "      nr_free_cma  150\n")
    (tmp_path / "pagetypeinfo-end.txt").write_text(
        "Free pages count per migrate type at order       0      1\n"
        "Node    0, zone      DMA, type      Movable     20     10\n"
        "Node    0, zone      DMA, type          CMA     10      0\n"
        "Node    0, zone      DMA, type      Isolate      4      0\n")
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "meminfo-01-a.txt").write_text("MemTotal: 1000 kB\nMemFree: 400 kB\n"
                                                        "CmaTotal: 512 kB\nCmaFree: 500 kB\n")

    class M:
        source = str(tmp_path)
        files: dict = {}
    bad, seen = a1_accounting.check_capture(M(), tol=5)
    checks = {(b["snapshot"], b["check"]): (b["counter"], b["reference"]) for b in bad}
    assert checks == {("end", "CmaFree<=CmaTotal"): (600, 512), ("end", "nr_free_cma<=cma"): (150, 128),
                      ("end", "nr_free_pages=freelists"): (100, 50), ("end", "nr_free_cma=CMA freelists"): (150, 10)}
    assert seen == ["end", "snap/01-a"]


def test_accounting_is_clean_on_the_shipped_stock_captures():
    for name in ("debian-6.1-arm64-cma-churn", "debian-6.12-arm64-cma-churn"):
        class M:
            source = f"fixtures/bundles/{name}"
            files: dict = {}
        bad, seen = a1_accounting.check_capture(M())
        assert bad == [] and len(seen) == 16, name


def test_history_names_the_list_owner_the_claim_and_the_guess():
    tr = SyntheticTrace()
    P = Z0 + 4 * PB + 3
    tr.add("mm_page_free", pfn=P, order=0, cpu=1)                                   # before the probe
    tr.add("print", buf="pb/setmt kprobe active (filter mask == 7)\n")
    tr.add("mm_page_alloc_extfrag", pfn=Z0 + 4 * PB + 256, alloc_order=0, fallback_order=3,
           alloc_migratetype=UNMOVABLE, fallback_migratetype=MOVABLE, change_ownership=1, cpu=0)
    tr.add("setmt", page=0, flags=UNMOVABLE, pfn=Z0 + 4 * PB, mask=7)
    tr.add("mm_page_pcpu_drain", pfn=P, order=0, migratetype=MOVABLE, cpu=0)       # cpu0 drains cpu1's list
    a = analyze(tr, meta())
    text = a.history(pfn=P)["text"].tolist()
    assert any(t.startswith("freed to pcp cpu1") for t in text)
    assert any("a guess: before the kprobe was live" in t for t in text)
    assert any("claiming the block for Unmovable" in t for t in text)   # its buddy does not cover P
    assert "drained from pcp cpu1 (remote drain by cpu0) to the Movable freelist while block Unmovable" in text


def test_zone_locked_that_differs_from_the_probe_on_a_block_printing_kernel_is_judged_freelist():
    tr = SyntheticTrace()
    tr.add("print", buf="pb/setmt kprobe active (filter mask == 7)\n")
    tr.add("setmt", page=0, flags=UNMOVABLE, pfn=Z0 + 2 * PB, mask=7)
    z = tr.add("mm_page_alloc_zone_locked", pfn=Z0 + 2 * PB + 8, order=0, migratetype=MOVABLE, percpu_refill=1)
    tr.add("mm_page_alloc", pfn=Z0 + 2 * PB + 8, order=0, migratetype=MOVABLE, gfp_flags=0)
    m = meta()
    m.uname = "Linux (none) 6.12.117+deb13-arm64 #1 SMP Debian 6.12.117-1 aarch64 GNU/Linux"
    a = analyze(tr, m)
    zl = a.behaviour["zone_locked"]
    assert (zl["expected"], zl["observed"], zl["agree"]) == ("block", "freelist", False)
    assert (zl["ground_truth_records"], zl["printed_other"]) == (1, 1)
    assert a.kernel.zone_locked_prints == "freelist" and a.table_kernel.zone_locked_prints == "block"
    assert a.behaviour["summary"] == ["kernel behaves unlike 6.12.117+deb13-arm64 (upstream 6.12.117, debian): "
                                      "zone_locked prints differ from the block type (1 of 1)"]
    # the print is not taken as the block's live type: the probe's Unmovable stands, and S2 reports it
    assert "zone-locked-observed" not in set(a.model.blocks["source"].astype(str))
    assert list(a.findings[a.findings["detector"].astype(str) == "S2"]["seq"]) == [z]
