"""The real pair: Debian 6.1.192 source for x86_64, once stock and once with 51bb1a4093cc
reverted (no block-type re-read in free_pcppages_bulk()), each under CMA_DEBUGFS
cma_alloc/cma_release + page-cache churn with the ground-truth kprobe.  Same release
string, so only evidence from the trace can tell them apart."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def revert(analyzed):
    return analyzed("bundles/src-6.1-x86_64-cma-race-revert")


@pytest.fixture(scope="module")
def stock(analyzed):
    return analyzed("bundles/src-6.1-x86_64-cma-race-stock")


def _counts(a) -> dict[str, int]:
    return a.findings["detector"].astype(str).value_counts().to_dict()


def test_same_release_string(revert, stock):
    assert revert.table_kernel.describe() == stock.table_kernel.describe()
    assert revert.table_kernel.drain_prints == stock.table_kernel.drain_prints == "cached"


def test_reverted_kernel_shows_the_2012_race_and_the_counting_problem(revert):
    d = revert.behaviour["drain"]
    assert d["observed"] == "cached-always" and d["agree"] is False
    assert d["isolated"]["verdict"] == "cached" and d["isolated"]["expected"] == "live"
    assert d["isolated"]["informative"] == d["isolated"]["printed_cached"] == 36300
    assert revert.behaviour["summary"] == ["kernel behaves unlike 6.1.192 (upstream 6.1.192): drains do not "
                                           "re-read the block type while a block of the zone is isolated"]
    assert revert.kernel.drain_prints == "cached-always"
    c = _counts(revert)
    assert c == {"S6": 36300, "S5": 1182, "A1": 14}
    assert "MW" not in c                                   # nothing excused as the model's fault
    assert revert.evidence() == {"probe": 36300 + 1182, "observed": 0, "traced": 0, "inferred": 0}
    notes = dict(zip(revert.detectors["id"], revert.detectors["notes"]))
    checks = {(v["snapshot"], v["check"]): (v["counter"], v["reference"]) for v in notes["A1"]["violations"]}
    assert checks[("end", "CmaFree<=CmaTotal")] == (777576, 655360)
    assert checks[("end", "nr_free_cma=CMA freelists")] == (194394, 159570)
    assert revert.exit_status() == 1


def test_reverted_kernel_history_tells_it_like_the_thread(revert):
    f = revert.findings
    s6 = set(f[f["detector"].astype(str) == "S6"]["pfn"].astype(int))
    s5 = set(f[f["detector"].astype(str) == "S5"]["pfn"].astype(int))
    pfn = min(s6 & s5)
    story = revert.history(pfn=pfn)["text"].tolist()
    i = next(k for k, t in enumerate(story) if t.startswith("!! S6"))
    before = story[:i]
    assert any(t.startswith("freed to pcp cpu") and t.endswith("as CMA") for t in before)
    assert any(t == "kprobe: block set to Isolate" for t in before)
    assert "to the CMA freelist while block Isolate" in story[i - 1]
    assert any("while the block was isolated" in t for t in story[i:])


def test_stock_kernel_is_clean_and_behaves_as_the_table_says(stock):
    d = stock.behaviour["drain"]
    assert d["agree"] is True and d["observed"] == "cached" and d["determined_by"] == ["isolated"]
    assert d["isolated"]["informative"] == d["isolated"]["printed_live"] == 35468
    assert stock.behaviour["summary"] == [] and stock.kernel is stock.table_kernel
    assert _counts(stock) == {} and stock.exit_status() == 0
    st = dict(zip(stock.detectors["id"], stock.detectors["status"]))
    assert st["S6"] == st["A1"] == "checked"
