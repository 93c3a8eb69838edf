"""Real boots: Debian 6.1 arm64 under qemu-system-aarch64 (TCG), through the `mtaudit collect`
CLI.  Checks the bundle against the contract and trace-cmd, and that every failure path (panic,
hang, missing QEMU, SIGINT/SIGTERM) gives one line, exit 2 (130 for signals), a failed bundle,
and no QEMU process left behind (scanned in /proc, keyed by this test's own directory)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analyzer import bundle
from collectors.guest import scenarios
from support.tools import requires_tool

pytestmark = pytest.mark.qemu
ROOT = Path(__file__).resolve().parents[2]
KSPEC = "debian:6.1/arm64"
needs_qemu = requires_tool("qemu-system-aarch64", "trace-cmd")


def qemu_pids(marker: str) -> list[int]:
    """PIDs of qemu-system-* processes whose argv mentions `marker` (our test directory)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and any(marker.encode() in a for a in argv):
            out.append(int(d))
    return out


def cli(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", "collect", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=timeout)


def scenario(tmp_path: Path, name: str, body: str) -> str:
    p = tmp_path / f"{name}.sh"
    p.write_text(body)
    return str(p)


@pytest.fixture(scope="module")
def idle(tmp_path_factory):
    out = tmp_path_factory.mktemp("idle")
    t0 = time.monotonic()
    r = cli("--kernel", KSPEC, "--scenario", "idle", "--out", str(out), "--name", "b", "--pack")
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "b", time.monotonic() - t0, r


@needs_qemu
def test_idle_bundle_is_complete(idle):
    b, elapsed, r = idle
    assert r.stdout.strip() == str(b)
    assert bundle.validate(b) == []
    m = json.loads((b / "manifest.json").read_text())
    assert m["status"] == "ok" and m["failure"] is None and m["guest_exit"] == 0
    assert m["schema_version"] == 1
    assert m["kernel"]["spec"] == KSPEC and m["kernel"]["arch"] == "arm64"
    assert re.match(r"6\.1\.\d+", m["kernel"]["version"]) and m["kernel"]["release"].startswith("6.1.")
    assert m["kernel"]["config"]["CMA"] == "y" and m["kernel"]["config"]["KPROBE_EVENTS"] == "y"
    assert (b / "uname.txt").read_text().split()[2] == m["kernel"]["release"]
    assert m["cmdline"] == (b / "cmdline.txt").read_text().strip()
    assert "trace_event=kmem:mm_page_alloc" in m["cmdline"] and "mtaudit.scenario=idle" in m["cmdline"]
    assert m["scenario"] == {**m["scenario"], "name": "idle", "sha256": scenarios.load("idle").sha256}
    assert m["qemu"]["accel"] == "tcg" and m["qemu"]["argv"][0].endswith("qemu-system-aarch64")
    assert re.match(r"\d+\.\d+", m["qemu"]["version"])
    assert m["started"] <= m["finished"] and m["finished"].endswith("Z")
    assert m["lost_events"] == {"cpu0": 0, "cpu1": 0}
    assert not [p for p in m["console_problems"] if p["kind"] in ("panic", "BUG", "Oops")]
    assert m["kprobe"]["source"] in ("init", "boot")
    assert set(bundle.EXPECTED) <= set(m["files"]) | {"manifest.json"}
    assert (b.parent / "b.tar.zst").stat().st_size > 1000
    assert not list(b.parent.glob(".tmp-*"))
    assert qemu_pids(str(b.parent)) == []
    print(f"idle boot + bundle: {elapsed:.1f}s wall, timings {m['timings']}")


@needs_qemu
def test_idle_trace_parses_and_nothing_lost(idle):
    b, _, _ = idle
    rep = subprocess.run(["trace-cmd", "report", "-R", "-i", str(b / "trace.dat")],
                         capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    counts: dict[str, int] = {}
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*\S.*?\[\d+\]\s+[\d.]+:\s+(\w+):", line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    for ev in ("mm_page_alloc", "mm_page_free", "mm_page_pcpu_drain", "print"):
        assert counts.get(ev, 0) > 0, (ev, counts)
    # every event the ring buffer held at the end is in trace.dat (independent count: the kernel's)
    stats = bundle.parse_stats((b / "stats-end.txt").read_text(), "stats-end.txt")
    assert sum(counts.values()) == sum(v["entries"] for v in stats.values())
    # the kprobe's format travelled with the file, and its marker was written
    dump = subprocess.run(["trace-cmd", "dump", "--events", str(b / "trace.dat")],
                          capture_output=True, text=True, timeout=120).stdout
    assert "name: setmt" in dump and "mask" in dump
    # /init names what it installed: on 6.1 the old scheme, set_pfnblock_flags_mask filtered to mask == 7
    assert "pb/setmt kprobe active (filters: pb/setmt: mask == 7; source init; 1 probes)" in rep.stdout
    # early boot events are there (tracing from the kernel command line, t=0)
    assert re.search(r"\s0\.0+:\s+mm_page_", rep.stdout)


@needs_qemu
def test_panicking_guest(tmp_path):
    sc = scenario(tmp_path, "boom", "# mtaudit: memory=512 timeout=120 buffer_mb=4 phases=1\n"
                                     "phase boom\necho c > /proc/sysrq-trigger\nsleep 60\n")
    r = cli("--kernel", KSPEC, "--scenario", sc, "--out", str(tmp_path), "--name", "p", "-q")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtaudit: ") and "panic" in lines[0], r.stderr
    m = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert m["status"] == "failed" and "panic" in m["failure"]
    assert any(p["kind"] == "panic" for p in m["console_problems"])
    assert "Kernel panic" in (tmp_path / "p" / "console.log").read_text()
    assert qemu_pids(str(tmp_path)) == []
    assert not list(tmp_path.glob(".tmp-*"))


@needs_qemu
def test_hanging_guest_times_out(tmp_path):
    sc = scenario(tmp_path, "hang", "# mtaudit: memory=512 timeout=600 buffer_mb=4 phases=1\n"
                                     "phase hang\nsleep 600\n")
    t0 = time.monotonic()
    r = cli("--kernel", KSPEC, "--scenario", sc, "--out", str(tmp_path), "--name", "h", "-q",
            "--timeout", "8")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "timeout: scenario phase exceeded 8s" in lines[0], r.stderr
    assert time.monotonic() - t0 < 300
    m = json.loads((tmp_path / "h" / "manifest.json").read_text())
    assert m["status"] == "failed" and m["failure"].startswith("timeout")
    assert qemu_pids(str(tmp_path)) == []


def test_missing_qemu_binary(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    r = cli("--kernel", KSPEC, "--scenario", "idle", "--out", str(tmp_path), env=env, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "qemu-system-aarch64 not found" in lines[0] and "qemu-system-arm" in lines[0]
    assert "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir()) or [p.name for p in tmp_path.iterdir()] == []


@needs_qemu
@pytest.mark.parametrize("sig,when", [(signal.SIGINT, "scenario step 1/1"), (signal.SIGTERM, "booting ")])
def test_signal_kills_vm_and_leaves_failed_bundle(tmp_path, sig, when):
    sc = scenario(tmp_path, "wait", "# mtaudit: memory=512 timeout=600 buffer_mb=4 phases=1\n"
                                     "phase waiting\nsleep 600\n")
    # started with SIGINT ignored, as every background job of a non-interactive shell (a CI
    # script's `scripts/test &`) is: collect must still stop on it
    p = subprocess.Popen([sys.executable, "-m", "analyzer.cli", "collect", "--kernel", KSPEC,
                          "--scenario", sc, "--out", str(tmp_path), "--name", "s"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    seen = []
    try:
        deadline = time.monotonic() + 600
        for line in p.stderr:
            seen.append(line)
            if when in line:
                break
            assert time.monotonic() < deadline
        time.sleep(1.0)
        assert qemu_pids(str(tmp_path)), "QEMU should be running now"
        p.send_signal(sig)
        rc = p.wait(timeout=60)
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 130, (rc, seen[-5:], err)
    assert err.strip().splitlines()[-1] == "mtaudit: interrupted"
    assert qemu_pids(str(tmp_path)) == []
    assert not list(tmp_path.glob(".tmp-*"))
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["status"] == "failed" and m["failure"].startswith("interrupted")


@requires_tool("qemu-system-x86_64")
def test_x86_64_transport_and_kvm_fallback(tmp_path):
    """Stock Debian amd64 has CMA off: a scenario that reserves CMA is refused (naming CONFIG_CMA
    and arm64), `idle` needs none and runs with the config check on: the guest (q35, 9p over
    virtio-pci, x86 kprobe registers) produces a bundle; /dev/kvm is tried with a short probe and
    TCG used when it fails."""
    r = cli("--kernel", "debian:6.1/amd64", "--scenario", "cma-churn", "--out", str(tmp_path), "-q")
    assert r.returncode == 2 and "CONFIG_CMA" in r.stderr and "arm64" in r.stderr
    t0 = time.monotonic()
    r = cli("--kernel", "debian:6.1/amd64", "--scenario", "idle", "--out", str(tmp_path), "--name", "x")
    assert r.returncode == 0, r.stderr[-3000:]
    b = tmp_path / "x"
    assert bundle.validate(b) == []
    m = json.loads((b / "manifest.json").read_text())
    assert m["kernel"]["arch"] == "amd64" and m["kernel"]["config"]["CMA"] == "n"
    assert "virtio-9p-pci,fsdev=out,mount_tag=out" in m["qemu"]["argv"] and "q35" in m["qemu"]["argv"]
    if os.access("/dev/kvm", os.R_OK | os.W_OK) and m["qemu"]["accel"] == "tcg":
        assert m["qemu"]["accel_reason"].startswith("KVM probe")
    assert "%di" in (b / "kprobe_events.txt").read_text()
    assert m["lost_events"] and set(m["lost_events"].values()) == {0}
    assert qemu_pids(str(tmp_path)) == []
    print(f"x86_64 idle: {time.monotonic() - t0:.1f}s, accel {m['qemu']['accel']} ({m['qemu']['accel_reason']})")
