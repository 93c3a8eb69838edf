"""Analysis summary, console report and exports on a synthetic story (with lost events)."""
from __future__ import annotations

import io
import json
import os

import pandas as pd
import pytest
from rich.console import Console

from support.synth_model import K61, Story
from analyzer import kernels
from analyzer.analysis import Analysis
from analyzer.detectors import run_all
from analyzer.model import consistency
from analyzer.model.consistency import Consistency
from analyzer.report import export
from analyzer.report.console import render


def _analysis(lost_rows=()):
    s = Story(cma_blocks=(6,))
    p = s.pfn(2, 5)
    s.free(p, cpu=1)
    s.retype(2, kernels.UNMOVABLE)
    s.drain(p, kernels.MOVABLE, cpu=1)            # S1a at seq 2, ts 2000
    s.free(s.pfn(6, 1))
    s.drain(s.pfn(6, 1), kernels.MOVABLE)         # S1a + S3 at seq 4, ts 4000
    m = s.build()
    f, d = run_all(m, K61)
    lost = pd.DataFrame(list(lost_rows), columns=["cpu", "ts_start", "ts_end", "count"])
    return Analysis(meta=s.meta, kernel=K61, model=m, findings=f, detectors=d,
                    consistency=consistency.check(m, s.meta), lost=lost,
                    event_counts={k: len(v) for k, v in m.events.items()}), p


def test_summary_is_json_and_complete():
    a, p = _analysis()
    js = json.loads(json.dumps(a.summary()))
    assert js["findings"] == {"total": 3, "kernel": 3, "model_warnings": 0,
                              "evidence": {"probe": 1, "observed": 0, "traced": 2, "inferred": 0},
                              "by_detector": {"S1a": 2, "S3": 1}}
    assert js["exit_status"] == 1
    assert [b["block"] for b in js["top_blocks"]] == [6, 2]       # critical S3 first
    assert js["lost_events"]["effect"] == "no events lost"
    assert {d["id"] for d in js["detectors"]} >= {"S1", "S2", "S3", "S4", "S5", "MW"}
    assert len(js["finding_rows"]) == 3 and len(js["block_history"]) == len(a.blocks)


def test_lost_events_lower_confidence_of_later_findings():
    a, _ = _analysis(lost_rows=[(1, 3000, 3500, 12)])
    ls = a.summary()["lost_events"]
    assert ls["total"] == 12 and ls["findings_after_first_loss"] == 2   # the two findings at ts 4000
    out = io.StringIO()
    render(a, Console(file=out, width=120))
    text = out.getvalue()
    assert "Lost events" in text and "2 findings after the first loss" in text


def test_console_report_sections():
    a, _ = _analysis()
    out = io.StringIO()
    render(a, Console(file=out, width=120))
    text = out.getvalue()
    assert text.splitlines()[0] == "FINDINGS on 6.1.0-50-arm64: S1a=2 S3=1; not checked: S2, S5 -> exit 1"
    for needle in ("Detectors", "S1a=2", "critical", "Top pageblocks", "not checked"):
        assert needle in text, needle
    assert "kernels: < 6.10" not in text                   # the legend is behind --explain
    out = io.StringIO()
    render(a, Console(file=out, width=120), explain=True)
    assert "kernels: < 6.10" in out.getvalue()


def test_console_failed_consistency_prints_no_pass_explanation():
    a, _ = _analysis()
    cons = pd.DataFrame([{"zone": "DMA", "type": "Movable", "reconstructed": 5, "evidenced": 5,
                          "pagetypeinfo": 3, "diff": 2, "unknown": 0, "unverified": 0}])
    a.consistency = Consistency(cons, available=True, passed=False, exact=False)
    out = io.StringIO()
    render(a, Console(file=out, width=120))
    text = out.getvalue()
    assert "FAIL" in text and "PASS" not in text and "exactly fill the shortfall;" not in text
    assert "Consistency: end state" in text                # the table is shown on failure
    a.consistency.passed = True
    out = io.StringIO()
    render(a, Console(file=out, width=120))
    assert "PASS" in out.getvalue() and "FAIL" not in out.getvalue()
    assert "Consistency: end state" not in out.getvalue()  # and only with --explain on success


def test_exports_json_and_parquet_atomic(tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    a, _ = _analysis()
    export.write_json(a, str(tmp_path / "a.json"))
    assert json.loads((tmp_path / "a.json").read_text())["findings"]["total"] == 3
    files = export.write_parquet(a, str(tmp_path / "pq"))
    assert "findings.parquet" in files
    t = pq.read_table(tmp_path / "pq" / "findings.parquet")
    assert t.num_rows == 3 and t.schema.field("pfn").type == "uint64"

    # a failure half-way leaves the previous export untouched and no temp dir behind
    def boom(*_a, **_k):
        raise OSError("disk full")
    monkeypatch.setattr(export.pq, "write_table", boom)
    with pytest.raises(OSError):
        export.write_parquet(a, str(tmp_path / "pq"))
    assert pq.read_table(tmp_path / "pq" / "findings.parquet").num_rows == 3
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
