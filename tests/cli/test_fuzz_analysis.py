"""Fuzz the whole analysis path: mutated slices of a real kernel text trace and a real trace.dat
with overwritten bytes through the CLI, generated event tables through `analyze()`.  Only MtauditError (exit 2) may come out; an
internal error (exit 4) or a crash in C fails the test.

Each batch runs in its own process (tests/support/fuzz_worker.py), so a segfault is a failed test that
names the input that caused it, not a dead test run.  Budget: MTAUDIT_FUZZ_EXAMPLES inputs per
kind (default 30: about a minute for the four kinds in CI); a longer hunt, e.g.
    MTAUDIT_FUZZ_EXAMPLES=2000 MTAUDIT_FUZZ_SEED=$RANDOM .venv/bin/python -m pytest -q -m fuzz
MTAUDIT_FUZZ_SEED picks other inputs (default 0: CI runs the same ones every time).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.fuzz

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "..", "support", "fuzz_worker.py")
EXAMPLES = int(os.environ.get("MTAUDIT_FUZZ_EXAMPLES", "30"))
SEED = int(os.environ.get("MTAUDIT_FUZZ_SEED", "0"))
BATCH = 100                     # inputs per process: a crash loses at most one batch's progress


def _batches(total: int) -> list[int]:
    return [min(BATCH, total - i) for i in range(0, total, BATCH)]


def _run(kind: str, env: dict, tmp_path, worker: str = WORKER) -> tuple[int, list[dict]]:
    """All batches of one kind; pytest.fail naming the saved input when a worker process dies."""
    total, failures = 0, []
    for b, n in enumerate(_batches(EXAMPLES)):
        out = tmp_path / f"{kind}-batch{b}"
        p = subprocess.run([sys.executable, worker, kind, "--seed", str(SEED + b), "--examples", str(n),
                            "--out", str(out)], capture_output=True, text=True, env=env, timeout=3600)
        if p.returncode < 0 or p.returncode > 1:        # killed (SIGSEGV, ...) or the worker itself broke
            cur = next((out / f for f in ("current.txt", "current.json", "current.dat") if (out / f).exists()), None)
            keep = None
            if cur:
                keep = tmp_path / f"crash-{kind}-{b}{cur.suffix}"
                shutil.copy(cur, keep)
            how = signal.Signals(-p.returncode).name if p.returncode < 0 else f"exit {p.returncode}"
            pytest.fail(f"fuzz worker {kind} seed {SEED + b} died ({how}) on input {keep}:\n{p.stderr[-3000:]}")
        res = json.loads(p.stdout.strip().splitlines()[-1])
        total += res["inputs"]
        failures += res["failures"]
    return total, failures


@pytest.mark.parametrize("kind,no_cext", [("text", False), ("tracedat", False), ("tables", False),
                                          ("tables", True)],
                         ids=["text-cext", "tracedat-cext", "tables-cext", "tables-numpy"])
def test_fuzz_analysis_never_crashes(kind, no_cext, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MTAUDIT_NO_CEXT"}
    if no_cext:
        env["MTAUDIT_NO_CEXT"] = "1"
    total, failures = _run(kind, env, tmp_path)
    assert total >= EXAMPLES
    assert not failures, "\n\n".join(f"{f['count']}x, input {f['input']} "
                                     f"(replay: python tests/support/fuzz_worker.py replay {f['input']} --out /tmp/x):\n"
                                     f"{f['message']}" for f in failures)


def test_a_worker_killed_by_sigsegv_fails_the_run_and_keeps_the_input(tmp_path):
    crasher = tmp_path / "crasher.py"
    crasher.write_text("import ctypes, faulthandler, os, sys\n"
                       "out = sys.argv[sys.argv.index('--out') + 1]\n"
                       "os.makedirs(out, exist_ok=True)\n"
                       "open(os.path.join(out, 'current.txt'), 'w').write('the input that crashed')\n"
                       "faulthandler.enable(); ctypes.string_at(0)\n")
    with pytest.raises(pytest.fail.Exception) as e:
        _run("text", dict(os.environ), tmp_path, worker=str(crasher))
    assert "SIGSEGV" in str(e.value) and "Segmentation fault" in str(e.value)
    assert (tmp_path / "crash-text-0.txt").read_text() == "the input that crashed"
