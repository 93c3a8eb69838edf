"""`mtaudit regress` planning and run classification: interleaving, guest CPUs x jobs <= cores,
which runs count as failed, how bundle arguments are found."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from collectors.errors import CollectError
from harness.regress import Run, find_bundles, interleaved, plan_smp


def test_interleaved_order():
    assert interleaved(3) == [("baseline", 1), ("candidate", 1), ("baseline", 2), ("candidate", 2),
                              ("baseline", 3), ("candidate", 3)]


@pytest.mark.parametrize("smp,jobs,cores,want,noted", [
    (2, 1, 2, 2, False),
    (2, 2, 2, 1, True),      # the 2-core host: two guests get one CPU each
    (2, 2, 8, 2, False),
    (4, 3, 8, 2, True),
    (1, 2, 2, 1, False),
])
def test_plan_smp(smp, jobs, cores, want, noted):
    got, note = plan_smp(smp, jobs, cores)
    assert got == want and (note is not None) == noted
    assert got * jobs <= cores
    if noted:
        assert f"lowered from {smp} to {want}" in note


def test_plan_smp_refuses_more_jobs_than_cores():
    with pytest.raises(CollectError, match="needs at least 3 host cores"):
        plan_smp(1, 3, 2)


def _run(**manifest) -> Run:
    r = Run(side="candidate", index=2, bundle=None, manifest=manifest,
            analysis={"detectors": [], "lost_events": {"total": 0}})
    return r


def test_run_problems():
    assert _run(status="ok", lost_events={"cpu0": 0}).problems() == []
    assert _run(status="failed", failure="timeout in phase scenario").problems() == \
        ["guest failed: timeout in phase scenario"]
    assert _run(status="ok", lost_events={"cpu0": 3, "cpu1": 4}).problems() == ["7 trace events lost"]
    r = _run(status="ok", console_problems=[{"kind": "OOM", "line": "invoked oom-killer"},
                                            {"kind": "WARNING", "line": "WARNING: at mm/page_alloc.c"}])
    assert r.problems() == ["console WARNING: WARNING: at mm/page_alloc.c"]   # OOM alone is not a failure
    r = Run(side="baseline", index=1, collect_error="kernel panic", analysis=None, analysis_error="no bundle")
    assert r.problems() == ["collect failed: kernel panic", "not analyzed: no bundle"] and r.label == "b1"


def test_find_bundles(tmp_path):
    src = Path(__file__).resolve().parents[2] / "fixtures/bundles/debian-6.12-arm64-cma-churn"
    parent = tmp_path / "artifacts"
    for n in ("r2", "r1"):
        d = parent / n
        d.mkdir(parents=True)
        shutil.copy(src / "manifest.json", d / "manifest.json")
    assert [p.name for p in find_bundles([parent])] == ["r1", "r2"]
    assert [p.name for p in find_bundles([parent / "r1", parent / "r1"])] == ["r1"]   # no duplicates
    with pytest.raises(CollectError, match="no such bundle"):
        find_bundles([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollectError, match="neither a bundle"):
        find_bundles([tmp_path / "empty"])
    assert json.loads((parent / "r1" / "manifest.json").read_text())["status"] == "ok"


def test_analysis_json_schema_version_is_checked(tmp_path):
    from analyzer.analysis import SCHEMA_VERSION
    from harness.regress import analysis_schema_problem, read_manifest
    assert analysis_schema_problem({"schema_version": SCHEMA_VERSION}, Path("a.json")) is None
    assert "a.json: analysis schema_version None" in analysis_schema_problem({"tool": "mtaudit"}, Path("a.json"))
    assert "schema_version 99" in analysis_schema_problem({"schema_version": 99}, Path("a.json"))
    # the bundle manifest is checked too (analyzer/bundle.py), as one line naming the file
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 7, "status": "ok"}))
    with pytest.raises(CollectError, match="manifest.json: manifest schema_version 7"):
        read_manifest(tmp_path)
