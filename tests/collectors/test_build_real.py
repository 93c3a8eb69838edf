"""Real source builds: Debian's linux-source-6.1, x86_64 tinyconfig + the shipped fragment, with a
patch that adds a unique pr_info() at boot, booted under QEMU with `idle`.  Then: the same spec
again is a cache hit (make never runs: a `make` wrapper first on PATH logs every call), a
changed patch rebuilds only init/main.c in the reused O= dir, and a patch that does not apply
and a fragment option with an unmet dependency stop with one line and exit 2.

The build lands in the normal cache (~/.cache/mtaudit), so CI on the same machine pays the
cold build once; the changed patch carries a fresh marker per run and so always rebuilds."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from collectors.collect import resolve_kernel
from collectors.kernels import spec as kernels
from support.tools import requires_tool

pytestmark = [pytest.mark.kbuild, pytest.mark.qemu, requires_tool("qemu-system-x86_64", "trace-cmd")]
ROOT = Path(__file__).resolve().parents[2]
SRC = "debian-source:6.1"
MARK_A = "mtaudit-build-test: patch A is in this kernel"


def boot_patch(marker: str) -> str:
    """One pr_info() in kernel_init(), just before /init runs (6.1 init/main.c)."""
    return ("--- a/init/main.c\n+++ b/init/main.c\n"
            "@@ -1508,6 +1508,7 @@ static int __ref kernel_init(void *unused)\n"
            " \trcu_end_inkernel_boot();\n \n \tdo_sysctl_args();\n"
            f'+\tpr_info("{marker}\\n");\n'
            " \n \tif (ramdisk_execute_command) {\n \t\tret = run_init_process(ramdisk_execute_command);\n")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("kbuild")
    (d / "bin").mkdir()
    wrapper = d / "bin" / "make"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {d / "make-calls.log"}\nexec {shutil.which("make")} "$@"\n')
    wrapper.chmod(0o755)
    (d / "a.patch").write_text(boot_patch(MARK_A))
    return d


def env_for(work: Path) -> dict:
    return {**os.environ, "PATH": f"{work / 'bin'}:{os.environ['PATH']}"}


def make_calls(work: Path) -> list[str]:
    log = work / "make-calls.log"
    return log.read_text().splitlines() if log.exists() else []


def collect(work: Path, spec: str, name: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", "collect", "--kernel", spec,
                           "--scenario", "idle", "--out", str(work / "out"), "--name", name],
                          cwd=ROOT, capture_output=True, text=True, env=env_for(work), timeout=timeout)


@pytest.fixture(scope="module")
def first(work):
    spec = f"build:{SRC},arch=x86_64,patch={work / 'a.patch'}"
    t0 = time.monotonic()
    r = collect(work, spec, "first")
    assert r.returncode == 0, r.stderr[-4000:]
    return work / "out" / "first", time.monotonic() - t0, spec


def test_built_kernel_boots_with_the_patch_and_manifest_names_it(work, first):
    b, elapsed, spec = first
    m = json.loads((b / "manifest.json").read_text())
    assert m["status"] == "ok" and m["kernel"]["spec"] == spec and m["kernel"]["arch"] == "amd64"
    build = m["kernel"]["build"]
    assert build["patches"] == [{"name": "a.patch", "path": str(work / "a.patch"),
                                 "sha256": hashlib.sha256((work / "a.patch").read_bytes()).hexdigest()}]
    assert build["source"]["package"] == "linux-source-6.1" and build["source"]["version"].startswith("6.1.")
    assert build["kernelrelease"] == m["kernel"]["release"] and m["kernel"]["release"].startswith("6.1.")
    assert (b / "uname.txt").read_text().split()[2] == m["kernel"]["release"]
    assert build["fragment"]["files"][0]["name"] == "x86_64.config"
    assert build["config_requested"]["CMA"] == "y" and build["config_requested"]["9P_FS"] == "y"
    assert m["kernel"]["config"]["KPROBE_EVENTS"] == "y"
    # the patch is in the running kernel: its pr_info() is in the guest's kernel log
    dmesg = (b / "dmesg-start.txt").read_text(errors="replace")
    assert MARK_A in dmesg
    entry = Path(build["entry"])
    assert (entry / "build.log").stat().st_size > 0 and (entry / "patches" / "00-a.patch").exists()
    # a path: spec of the same image now reads its release from the bzImage itself
    k = kernels.resolve(f"path:{entry / 'bzImage'},config={entry / 'config'}")
    assert k.release == m["kernel"]["release"]


def test_same_spec_is_a_cache_hit_without_make(work, first):
    b, _, spec = first
    before = len(make_calls(work))
    r = collect(work, spec, "second")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(make_calls(work)) == before, make_calls(work)[before:]
    m1 = json.loads((b / "manifest.json").read_text())
    m2 = json.loads((work / "out" / "second" / "manifest.json").read_text())
    assert m2["kernel"]["build"]["cached"] is True
    assert m2["kernel"]["build"]["cache_key"] == m1["kernel"]["build"]["cache_key"]
    assert "cache hit" in r.stderr
    assert MARK_A in (work / "out" / "second" / "dmesg-start.txt").read_text(errors="replace")


def _resolve_with_patch(work, name: str, marker: str):
    (work / name).write_text(boot_patch(marker))
    old = dict(os.environ)
    os.environ["PATH"] = env_for(work)["PATH"]
    try:
        return resolve_kernel(f"build:{SRC},arch=x86_64,patch={work / name}")
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_changed_patch_rebuilds_only_what_it_touches(work, first):
    # The shared work tree may hold another patch set from an earlier build in this cache (its
    # files are restored from the pristine source, so they count as changed too): patch B brings
    # the tree to a known state, patch C then differs from it in init/main.c alone.
    before = len(make_calls(work))
    kb = _resolve_with_patch(work, "b.patch", f"mtaudit-build-test: patch B {uuid.uuid4().hex}")
    assert len(make_calls(work)) > before                       # make ran: not a cache hit
    assert kb.build["cached"] is False and "init/main.c" in kb.build["changed_files"]
    marker = f"mtaudit-build-test: patch C {uuid.uuid4().hex}"
    before = len(make_calls(work))
    k = _resolve_with_patch(work, "c.patch", marker)
    assert len(make_calls(work)) > before
    assert k.build["cached"] is False and k.build["incremental"] is True
    assert k.build["changed_files"] == ["init/main.c"]
    log = (Path(k.build["entry"]) / "build.log").read_text()
    compiled = [x.split()[-1] for x in log.splitlines() if x.startswith("  CC ")]
    assert "init/main.o" in compiled and len(compiled) < 20, compiled
    assert marker.encode() in (Path(k.build["build_dir"]) / "init" / "main.o").read_bytes()
    assert kernels._release_from_image(k.image) == k.release


def test_real_patch_that_does_not_apply(work, first):
    bad = work / "stale.patch"
    bad.write_text(boot_patch("x").replace("\tdo_sysctl_args();", "\tdo_sysctl_args_renamed();"))
    before = len(make_calls(work))
    r = collect(work, f"build:{SRC},arch=x86_64,patch={bad}", "stale", timeout=600)
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line == f"mtaudit: patch {bad} does not apply: init/main.c: hunk #1 FAILED at line 1508"
    assert len(make_calls(work)) == before and not (work / "out" / "stale").exists()


def test_unmet_dependency_names_option_and_dependency(work, first):
    frag = work / "nomodules.config"
    frag.write_text("# CONFIG_MODULES is not set\n")
    r = collect(work, f"build:{SRC},arch=x86_64,config={frag}", "nomod", timeout=900)
    assert r.returncode == 2, r.stderr[-2000:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("mtaudit: config: 2 requested option(s) dropped by kconfig: "
                           "CONFIG_KPROBES=y became n (depends on MODULES"), line
    assert "off: MODULES=n" in line and "CONFIG_KPROBE_EVENTS=y became n" in line
    # nothing half-made: no O= dir for that configuration, no image, no temp dirs
    from collectors.build import build, kconfig, source as buildsrc
    from collectors.build.cache import cache_root
    src = buildsrc.identify(SRC, lambda m: None)
    plan = kconfig.plan("amd64", "tinyconfig", str(frag))
    tc = build.toolchain("amd64")
    tk = build.tree_key(src, plan, "amd64", build.compiler_version(tc.cc))
    assert not (cache_root() / "build" / "trees" / tk[:24] / "obj").exists()
    key = build.cache_key(src, [], plan, "amd64", build.compiler_version(tc.cc))
    assert not (cache_root() / "build" / "images" / key[:32]).exists()
    assert not list((cache_root() / "build").rglob(".tmp-*"))
