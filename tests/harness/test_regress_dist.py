"""`mtaudit regress --scheduler`: runs as dask.distributed tasks give what the local regress gives.

On the committed source-built race pair (3 hard-linked copies per side, as CI artifacts are):
a 2-worker local cluster's result.json equals the serial run's, a worker killed while it
analyzes costs a retry (the scheduler reruns the task on a live worker), not the run, Ctrl-C
stops the remote work, and without dask --scheduler is one line and exit 2.  The guest path
(collect on a worker, bundle sent back) is the qemu-marked test at the end.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.tools import requires_tool

ROOT = Path(__file__).resolve().parents[2]
REVERT = ROOT / "fixtures/bundles/src-6.1-x86_64-cma-race-revert"
STOCK = ROOT / "fixtures/bundles/src-6.1-x86_64-cma-race-stock"
SAME = ("status", "exit_code", "detectors", "checks", "behaviour", "expectations", "failing",
        "unmet", "undecided", "stats")


def _need_dask() -> None:
    if os.environ.get("MTAUDIT_REQUIRE_TOOLS") == "1":   # scripts/setup --test installs it
        import distributed  # noqa: F401
    else:
        pytest.importorskip("distributed", reason="dask.distributed not installed (pip install 'mtaudit[dist]')")


def regress(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", "regress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def copies(src: Path, dest: Path, n: int, tag: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        shutil.copytree(src, dest / f"{tag}-r{i}", copy_function=os.link)
    return dest


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    return copies(REVERT, d / "b", 3, "revert"), copies(STOCK, d / "c", 3, "stock")


@pytest.fixture(scope="module")
def serial(pair, tmp_path_factory):
    """The local regression (no scheduler, one analysis at a time): the reference."""
    out = tmp_path_factory.mktemp("serial") / "out"
    p = regress("--baseline-bundles", str(pair[0]), "--candidate-bundles", str(pair[1]), "--out", str(out),
                "--no-html", "--expect-fix", "S6", "--jobs", "1")
    assert p.returncode == 0, p.stderr
    return out, json.loads((out / "result.json").read_text())


def _same_as_serial(out: Path, res: dict, ref_out: Path, ref: dict) -> None:
    for k in SAME:
        assert res[k] == ref[k], k
    keep = ("run", "side", "index", "bundle", "analysis", "kernel_release", "status", "problems", "analysis_exit")
    assert [{k: r[k] for k in keep} for r in res["runs"]] == [{k: r[k] for k in keep} for r in ref["runs"]]
    for r in ref["runs"]:   # the analysis JSONs came back byte for byte
        assert (out / r["analysis"]).read_bytes() == (ref_out / r["analysis"]).read_bytes()


def test_two_worker_local_cluster_equals_serial(pair, serial, tmp_path):
    _need_dask()
    out = tmp_path / "out"
    p = regress("--baseline-bundles", str(pair[0]), "--candidate-bundles", str(pair[1]), "--out", str(out),
                "--no-html", "--expect-fix", "S6", "--scheduler", "local", "--jobs", "2")
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "result.json").read_text())
    _same_as_serial(out, res, *serial)
    s6 = next(d for d in res["detectors"] if d["id"] == "S6")
    assert s6["verdict"] == "fixed" and res["status"] == "pass"
    assert res["scheduler"] == "local"
    assert all(r["worker"].startswith("tcp://") for r in res["runs"])
    assert all(r["worker"] is None for r in serial[1]["runs"])


def _worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def _busy(client, prefix: str) -> dict[str, list[str]]:
    return {w: [k for k in ks if str(k).startswith(prefix)] for w, ks in client.processing().items()}


def test_worker_killed_mid_run_costs_a_retry(pair, serial):
    _need_dask()
    import dask
    from distributed import Client, LocalCluster

    from harness import dist, regress as hregress
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    killed: dict[str, str] = {}
    try:
        with Client(cluster) as client:
            pids = _worker_pids(client)

            def killer() -> None:
                """SIGKILL the first worker seen running a regress task (as the OOM killer would)."""
                t0 = time.monotonic()
                while time.monotonic() - t0 < 120 and not killed:
                    for w, keys in _busy(client, "mtaudit-regress-").items():
                        if keys:
                            time.sleep(0.5)   # let its `mtaudit analyze` child start
                            os.kill(pids[w], signal.SIGKILL)
                            killed.update(worker=w, key=keys[0])
                            return
                    time.sleep(0.05)
            t = threading.Thread(target=killer)
            t.start()
            out = Path(serial[0]).parent / "killed"
            runs = dist.run_bundles({"baseline": [pair[0]], "candidate": [pair[1]]}, out,
                                    cluster.scheduler_address, 2, quiet=True)
            t.join()
    finally:
        cluster.close()
    assert killed, "no worker was ever seen running a task"
    label = killed["key"].rsplit("-", 1)[-1]
    ref = {r["run"]: r for r in serial[1]["runs"]}
    assert [r.label for r in runs] == list(ref)
    for r in runs:   # every run analyzed, the killed one too: on another worker
        assert r.ok, (r.label, r.problems())
        assert r.analysis == json.loads((serial[0] / ref[r.label]["analysis"]).read_text())
        assert r.analysis_exit == ref[r.label]["analysis_exit"]
    lost = next(r for r in runs if r.label == label)
    assert lost.worker != killed["worker"]
    assert hregress.summary_line(lost).startswith("ok ")


def test_ctrl_c_stops_the_remote_work(pair, tmp_path):
    _need_dask()
    from distributed import Client, Event, LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with Client(cluster) as client:
            pids = _worker_pids(client)
            out = tmp_path / "out"
            p = subprocess.Popen([sys.executable, "-m", "analyzer.cli", "regress", "--baseline-bundles",
                                  str(pair[0]), "--candidate-bundles", str(pair[1]), "--out", str(out),
                                  "--no-html", "--scheduler", cluster.scheduler_address],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            t0 = time.monotonic()   # wait until a worker runs its `mtaudit analyze` child
            while not _analyze_children(pids.values()):
                assert time.monotonic() - t0 < 120 and p.poll() is None, "no analysis ever ran on a worker"
                time.sleep(0.1)
            key = next(k for ks in _busy(client, "mtaudit-regress-").values() for k in ks)
            session = key.split("-")[2]
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=120)
            assert p.returncode == 130, err
            assert "remote runs cancelled" in err and "Traceback" not in err
            assert Event(f"mtaudit-regress-{session}-cancel", client=client).is_set()   # told the workers
            t0 = time.monotonic()   # the workers' analyses were stopped, nothing left queued
            while (_analyze_children(pids.values()) or any(_busy(client, "mtaudit-regress-").values())):
                assert time.monotonic() - t0 < 30, "remote work still running 30 s after Ctrl-C"
                time.sleep(0.2)
            assert not (out / "result.json").exists()
    finally:
        cluster.close()


def _analyze_children(pids) -> list[int]:
    """`analyzer.cli analyze` processes descended from these pids."""
    kids: dict[int, list[int]] = {}
    cmd: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd[int(d)] = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    found, todo = [], list(pids)
    while todo:
        for k in kids.get(todo.pop(), []):
            todo.append(k)
            if "analyzer.cli analyze" in cmd.get(k, ""):
                found.append(k)
    return found


def test_without_dask_scheduler_is_one_line_exit_2(tmp_path):
    out = tmp_path / "out"
    code = ("import sys; sys.modules['distributed'] = None\n"   # import distributed -> ImportError
            "from analyzer.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, "regress", "--baseline-bundles", str(REVERT),
                        "--candidate-bundles", str(STOCK), "--out", str(out), "--scheduler", "local"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "dask.distributed is not installed" in lines[0], p.stderr
    assert "mtaudit[dist]" in lines[0] and "Traceback" not in p.stderr
    assert not out.exists()


def test_unreachable_scheduler_is_one_line_and_leaves_no_out(tmp_path):
    _need_dask()
    import socket
    with socket.socket() as s:       # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        out = tmp_path / "out"
        p = regress("--baseline-bundles", str(REVERT), "--candidate-bundles", str(STOCK), "--out", str(out),
                    "--scheduler", f"tcp://127.0.0.1:{port}", "--no-html", timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert not out.exists()


@pytest.mark.qemu
@requires_tool("qemu-system-aarch64", "trace-cmd")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="2 workers need 2 host cores")
def test_guests_on_a_two_worker_cluster(tmp_path):
    """Real guests on dask workers: each bundle comes back into --out as a local run leaves it."""
    _need_dask()
    out = tmp_path / "out"
    p = regress("--baseline", "debian:6.1/arm64", "--candidate", "debian:6.12/arm64", "--scenario", "idle",
                "--runs", "2", "--scheduler", "local", "--jobs", "2", "--out", str(out), "--no-html",
                timeout=3600)
    res = json.loads((out / "result.json").read_text())
    ok_sides = {r["side"] for r in res["runs"] if r["status"] == "ok"}
    assert p.returncode == 2 if len(ok_sides) < 2 else p.returncode in (0, 3), p.stderr
    assert [r["run"] for r in res["runs"]] == ["b1", "c1", "b2", "c2"]
    assert res["timing"]["guest_smp"] == min(2, (os.cpu_count() or 1) // 2)
    for r in res["runs"]:
        assert r["worker"].startswith("tcp://")
        m = json.loads((out / r["bundle"] / "manifest.json").read_text())
        assert (out / r["bundle"] / "trace.dat").is_file() or r["status"] == "failed"
        assert m["kernel"]["spec"] == ("debian:6.1/arm64" if r["side"] == "baseline" else "debian:6.12/arm64")
        assert r["timings"]["boot_s"] > 0 and r["timings"]["collect_s"] > r["timings"]["boot_s"]
        if r["status"] == "ok":
            assert json.loads((out / r["analysis"]).read_text())["schema_version"]
    assert all(d["verdict"] != "regressed" for d in res["detectors"])
    # the bundle came back whole: analyzing it here writes the worker's analysis byte for byte
    ok = [r for r in res["runs"] if r["status"] == "ok"]
    if ok:
        here = tmp_path / "here.json"
        a = subprocess.run([sys.executable, "-m", "analyzer.cli", "analyze", str(out / ok[0]["bundle"]),
                            "--json", str(here), "-q"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert a.returncode in (0, 1, 3), a.stderr
        assert here.read_bytes() == (out / ok[0]["analysis"]).read_bytes()
