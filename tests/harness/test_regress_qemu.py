"""`mtaudit regress` end to end on real kernels in real QEMU, kept short for CI: the idle
scenario, two runs per kernel (the fewest that can gate), two guests at once (--jobs 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.tools import requires_tool

pytestmark = pytest.mark.qemu
ROOT = Path(__file__).resolve().parents[2]


@requires_tool("qemu-system-aarch64", "trace-cmd")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="--jobs 2 needs 2 host cores")
def test_regress_two_kernels_in_parallel(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "analyzer.cli", "regress", "--baseline", "debian:6.1/arm64",
                        "--candidate", "debian:6.12/arm64", "--scenario", "idle", "--runs", "2",
                        "--jobs", "2", "--out", str(out), "--no-html"],
                       cwd=ROOT, capture_output=True, text=True, timeout=3600)
    res = json.loads((out / "result.json").read_text())
    ok_sides = {r["side"] for r in res["runs"] if r["status"] == "ok"}
    # idle: nothing fires (0) or too little is judged (3); a side none of whose runs could be
    # analyzed measured nothing about its kernel: a harness failure (2), with the runs kept
    assert p.returncode == 2 if len(ok_sides) < 2 else p.returncode in (0, 3), p.stderr
    assert res["exit_code"] == p.returncode
    assert [r["run"] for r in res["runs"]] == ["b1", "c1", "b2", "c2"]   # interleaved
    rel = {r["side"]: r["kernel_release"] for r in res["runs"]}
    assert rel["baseline"].startswith("6.1.") and rel["candidate"].startswith("6.12.")
    # guest CPUs x jobs <= host cores: idle asks for 2 CPUs; on a 2-core host both guests get 1
    want = min(2, (os.cpu_count() or 1) // 2)
    assert res["timing"]["guest_smp"] == want
    if want < 2:
        assert "lowered from 2 to 1" in res["timing"]["smp_note"]
    for r in res["runs"]:
        m = json.loads((out / r["bundle"] / "manifest.json").read_text())
        assert m["scenario"]["smp"] == want
        assert r["timings"]["boot_s"] > 0 and r["timings"]["analyze_s"] > 0
        if r["status"] == "ok":
            assert (out / r["analysis"]).is_file()
        else:   # a failed run is kept and says why; the comparison is inconclusive or a harness error
            assert r["problems"] and p.returncode in (2, 3)
            assert res["status"] == ("inconclusive" if p.returncode == 3 else "error")
    if p.returncode == 0:
        assert [r["status"] for r in res["runs"]] == ["ok"] * 4
    assert {d["id"] for d in res["detectors"]} >= {"S1", "S2"}
    assert all(d["verdict"] != "regressed" for d in res["detectors"])
    assert res["timing"]["fetch_build_s"]["baseline"] >= 0
