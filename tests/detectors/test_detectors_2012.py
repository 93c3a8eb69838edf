"""The exact sequence of the 2012 CMA v19 thread, "mm: page_alloc: update migrate type
of pages on pcp when isolating" (notes/kernel-mm.md §4):

  a CMA page sits on a pcp list -> cma_alloc isolates its block -> the drain puts the
  page on the CMA freelist (stale cached type, block is ISOLATE) -> after the undo the
  page is refilled for a MOVABLE request and cached as MOVABLE -> drained onto the
  MOVABLE freelist while its block is CMA -> an UNMOVABLE fallback finds it on the
  MOVABLE list and claims the block: "finally causes pageblock migration type change
  from MIGRATE_CMA to MIGRATE_MOVABLE" (here: to UNMOVABLE).
"""
from __future__ import annotations


from support.synth_model import K61, Story
from analyzer import kernels
from analyzer.detectors import run_all

UNMOV, MOV, CMA, ISO = kernels.UNMOVABLE, kernels.MOVABLE, kernels.CMA, kernels.ISOLATE

# The 2012 kernel (3.3 + CMA v19): pcp type cached and never re-read on drain
# (the re-read while a zone has isolated blocks came with 3.18, 51bb1a4093cc).
K2012 = kernels.behavior_for("3.3.0")  # the CMA v19 era: drains always print the cached type


def story_2012(isolated_drain_prints: int):
    s = Story(cma_blocks=(4, 5))
    p = s.pfn(4, 12)
    seqs = {}
    seqs["free"] = s.free(p, cpu=1)                       # freed to pcp cpu1 as CMA
    s.isolate(4, 5, name="reserved")                      # cma_alloc isolates the blocks
    seqs["drain1"] = s.drain(p, isolated_drain_prints, cpu=1)
    s.unisolate()                                         # undo: back to CMA
    seqs["refill"] = s.zone_locked(p, MOV, cpu=0)         # refilled for a MOVABLE request
    seqs["drain2"] = s.drain(p, MOV, cpu=0)               # drained to the MOVABLE list
    seqs["steal"] = s.extfrag(p, UNMOV, MOV, 1, cpu=0, alloc_order=0, fallback_order=9)
    return s, p, seqs


def test_2012_sequence_on_the_2012_kernel():
    s, p, seq = story_2012(isolated_drain_prints=CMA)     # stale type: not re-read
    findings, table = run_all(s.build(), K2012)
    got = {(str(r.detector), int(r.seq)) for r in findings.itertuples()}
    assert ("S1a", seq["drain1"]) in got     # drained to CMA freelist while block ISOLATE
    assert ("S2", seq["refill"]) in got      # CMA page taken from the MOVABLE list
    assert ("S3", seq["refill"]) in got
    assert ("S1b", seq["drain2"]) in got     # refilled as MOVABLE, drained to MOVABLE in a CMA block
    assert ("S3", seq["drain2"]) in got
    assert ("S3", seq["steal"]) in got       # fallback found the CMA page on the MOVABLE list
    lost = findings[findings["event"] == "cma-block-lost"]
    assert list(lost["block"]) == [4] and int(lost.iloc[0]["printed_mt"]) == UNMOV
    assert "MW" not in set(findings["detector"].astype(str))
    t = table.set_index("id")
    assert int(t.loc["S3", "count"]) == 4 and t.loc["S3", "severity"] == "critical"


def test_2012_sequence_on_6_1_drain_rereads_in_isolation():
    # Since 3.18 the drain inside the isolation window prints the live type (ISOLATE):
    # the first half of the thread's bug is gone, the pollution that follows is not.
    s, p, seq = story_2012(isolated_drain_prints=ISO)
    findings, _ = run_all(s.build(), K61)
    at_drain1 = findings[findings["seq"] == seq["drain1"]]
    assert len(at_drain1) == 0
    assert {"S1b", "S2", "S3"} <= set(findings["detector"].astype(str))


def test_2012_stale_drain_on_6_1_in_window_is_a_model_warning():
    # 6.1 would have printed ISOLATE; a CMA print there means the model's window is wrong
    s, p, seq = story_2012(isolated_drain_prints=CMA)
    findings, _ = run_all(s.build(), K61)
    row = findings[findings["seq"] == seq["drain1"]]
    assert list(row["detector"].astype(str)) == ["MW"]


def test_2012_narrative_tells_the_thread_story():
    from analyzer.model import consistency
    from analyzer.narrative import history, narrative
    s, p, seq = story_2012(isolated_drain_prints=CMA)
    m = s.build()
    findings, _ = run_all(m, K2012)
    story = narrative(m, p, findings=findings)
    expected = ["freed to pcp cpu1 as CMA", "block isolated by cma_alloc(reserved)",
                "drained from pcp cpu1 to the CMA freelist while block Isolate", "!! S1a",
                "isolation by cma_alloc(reserved) ends: block restored to CMA",
                "refilled into pcp cpu0 as Movable while block CMA",
                "drained from pcp cpu0 to the Movable freelist while block CMA", "!! S1b",
                "fallback on cpu0: a Unmovable request took 0x80c from the Movable freelist, "
                "claiming the block for Unmovable"]
    pos = [next(i for i, t in enumerate(story) if t.startswith(e)) for e in expected]
    assert pos == sorted(pos), story
    h = history(m, block=4, findings=findings)
    assert list(h.columns) == ["seq", "ts", "cpu", "event", "text"]
    assert list(h["ts"]) == sorted(h["ts"])
    assert (h["event"] == "model:block-type").sum() == 4   # CMA, ISOLATE, CMA, UNMOVABLE
    # no pagetypeinfo in the story: the check says so instead of passing
    cr = consistency.check(m, s.meta)
    assert cr.available is False and cr.passed is None
