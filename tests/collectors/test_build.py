"""`build:` kernel specs without compiling a kernel: spec parsing, patch application onto a private
copy, the work tree's restore/keep-mtime rules, dropped-option explanations from real Kconfig
syntax, the bzImage setup-header release, and the CLI's one-line errors (exit 2, nothing left
in the cache) for a patch that does not apply and a missing cross compiler."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from collectors.build import kconfig, source as buildsrc
from collectors.build.build import cache_key, toolchain
from collectors.kernels import spec as kernels
from collectors.errors import KernelSpecError

ROOT = Path(__file__).resolve().parents[2]

MAIN_C = "int main(void)\n{\n\tint a = 1;\n\tint b = 2;\n\treturn a + b;\n}\n"
PATCH_OK = """--- a/mm/page_alloc.c
+++ b/mm/page_alloc.c
@@ -2,5 +2,5 @@
 {
 \tint a = 1;
-\tint b = 2;
+\tint b = 3;
 \treturn a + b;
 }
"""
PATCH_2 = """--- a/mm/page_alloc.c
+++ b/mm/page_alloc.c
@@ -2,5 +2,5 @@
 {
 \tint a = 1;
-\tint b = 3;
+\tint b = 4;
 \treturn a + b;
 }
--- /dev/null
+++ b/mm/new.c
@@ -0,0 +1 @@
+int new;
"""
PATCH_BAD = """--- a/kernel/fork.c
+++ b/kernel/fork.c
@@ -1,1 +1,1 @@
-int z;
+int y;
--- a/mm/page_alloc.c
+++ b/mm/page_alloc.c
@@ -2,5 +2,5 @@
 {
 \tint a = 7;
-\tint b = 9;
+\tint b = 3;
 \treturn a + b;
 }
"""


def tiny_tree(d: Path) -> Path:
    (d / "mm").mkdir(parents=True)
    (d / "kernel").mkdir()
    (d / "Makefile").write_text("all:\n")
    (d / "Kconfig").write_text("source \"mm/Kconfig\"\n")
    (d / "mm" / "page_alloc.c").write_text(MAIN_C)
    (d / "kernel" / "fork.c").write_text("int x;\n")
    return d


# -- spec ----------------------------------------------------------------------------------
def test_build_spec_parses_every_option():
    s = kernels.parse_spec("build:debian-source:6.1,patch=a.diff,patch=b.diff,config=f.cfg,arch=x86_64,base=defconfig")
    assert (s.kind, s.file, s.arch, s.patches, s.config, s.base) == \
        ("build", "debian-source:6.1", "amd64", ("a.diff", "b.diff"), "f.cfg", "defconfig")
    assert kernels.parse_spec("build:/src/linux,arch=arm64").arch == "arm64"
    assert kernels.parse_spec("build:/src/linux").base == "tinyconfig"


@pytest.mark.parametrize("spec,msg", [
    ("build:", "missing SRC"), ("build:x,frobnicate=1", "unknown option 'frobnicate=1'"),
    ("build:x,config=a,config=b", "config= given twice"), ("build:debian-source:bookworm", "debian-source:6.1"),
    ("build:x,arch=mips", "unsupported architecture"), ("build:x,patch=", "unknown option"),
])
def test_build_spec_errors(spec, msg):
    with pytest.raises(KernelSpecError, match=msg):
        kernels.parse_spec(spec)


def test_build_spec_arch_conflict():
    with pytest.raises(KernelSpecError, match="--arch says"):
        kernels.parse_spec("build:x,arch=arm64", "amd64")


# -- patches and the work tree ---------------------------------------------------------------
def test_patches_apply_to_a_private_copy_and_failures_name_file_and_hunk(tmp_path):
    src = tiny_tree(tmp_path / "src")
    (tmp_path / "ok.diff").write_text(PATCH_OK)
    (tmp_path / "bad.diff").write_text(PATCH_BAD)
    ps = buildsrc.load_patches((str(tmp_path / "ok.diff"),))
    assert ps[0].files == ["mm/page_alloc.c"] and len(ps[0].sha256) == 64
    (tmp_path / "s1").mkdir()
    new = buildsrc.apply_patches(ps, src, tmp_path / "s1")
    assert b"int b = 3;" in new["mm/page_alloc.c"]
    assert (src / "mm" / "page_alloc.c").read_text() == MAIN_C        # source untouched
    bad = buildsrc.load_patches((str(tmp_path / "ok.diff"), str(tmp_path / "bad.diff")))
    (tmp_path / "s2").mkdir()
    with pytest.raises(buildsrc.PatchError) as e:
        buildsrc.apply_patches(bad, src, tmp_path / "s2")
    assert str(e.value).startswith(f"patch {tmp_path / 'bad.diff'} does not apply: ")
    assert "kernel/fork.c: hunk #1 FAILED at line 1" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(buildsrc.PatchError, match="does not exist"):
        buildsrc.load_patches((str(tmp_path / "nope.diff"),))
    (tmp_path / "empty.diff").write_text("hello\n")
    with pytest.raises(buildsrc.PatchError, match="no file headers"):
        buildsrc.load_patches((str(tmp_path / "empty.diff"),))


def test_work_tree_rewrites_only_changed_files_and_restores_unpatched(tmp_path):
    pristine = tiny_tree(tmp_path / "pristine")
    base = tmp_path / "tree"
    wt = buildsrc.work_tree(pristine, base, lambda m: None)
    assert os.stat(wt / "kernel" / "fork.c").st_ino == os.stat(pristine / "kernel" / "fork.c").st_ino
    p1, p2 = tmp_path / "p1.diff", tmp_path / "p2.diff"
    p1.write_text(PATCH_OK)
    p2.write_text(PATCH_2)

    def apply(*paths):
        sc = Path(tmp_path / f"scratch{time.monotonic_ns()}")
        sc.mkdir()
        return buildsrc.sync_patched(wt, pristine, buildsrc.apply_patches(buildsrc.load_patches(paths), pristine, sc))

    assert apply(str(p1)) == ["mm/page_alloc.c"]
    assert (pristine / "mm" / "page_alloc.c").read_text() == MAIN_C       # hard link not written through
    m1 = os.stat(wt / "mm" / "page_alloc.c").st_mtime_ns
    assert apply(str(p1)) == []                                            # same content: mtime kept
    assert os.stat(wt / "mm" / "page_alloc.c").st_mtime_ns == m1
    assert apply(str(p1), str(p2)) == ["mm/new.c", "mm/page_alloc.c"]
    assert "int b = 4;" in (wt / "mm" / "page_alloc.c").read_text() and (wt / "mm" / "new.c").exists()
    assert apply() == ["mm/new.c", "mm/page_alloc.c"]                      # back to pristine
    assert (wt / "mm" / "page_alloc.c").read_text() == MAIN_C and not (wt / "mm" / "new.c").exists()
    assert os.stat(wt / "mm" / "page_alloc.c").st_mtime_ns > m1            # restored = rebuilt


# -- kconfig -------------------------------------------------------------------------------
KCONFIG = """menu "Networking"
config NET
\tbool "Networking support"

config INET
\tbool "TCP/IP"
\tdepends on NET

endmenu
config NET_9P
\ttristate "Plan 9"
\tdepends on NET
config 9P_FS
\ttristate "Plan 9 FS"
\tdepends on INET && NET_9P
\tdepends on !SLUB_TINY || EXPERT # comment
\thelp
\t  depends on FOO is only help text
config SLUB_TINY
\tbool "tiny"
"""


def test_dropped_options_name_their_unmet_dependencies(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "arch" / "x86").mkdir(parents=True)
    (tmp_path / "arch" / "arm64").mkdir(parents=True)
    (tmp_path / "net" / "Kconfig").write_text(KCONFIG)
    (tmp_path / "arch" / "arm64" / "Kconfig").write_text("config INET\n\tdepends on ARM_ONLY\n")
    req = kconfig.parse_fragment("CONFIG_NET=y\nCONFIG_9P_FS=y\n# CONFIG_INET is not set\nCONFIG_NOPE=y\n"
                                 'CONFIG_CMDLINE="a b"\n')
    assert req == {"NET": "y", "9P_FS": "y", "INET": "n", "NOPE": "y", "CMDLINE": "a b"}
    final = kernels.parse_config("CONFIG_NET=y\n# CONFIG_INET is not set\nCONFIG_SLUB_TINY=y\n"
                                 'CONFIG_NET_9P=y\nCONFIG_CMDLINE="a b"\n')
    drops = kconfig.dropped(req, final)
    assert drops == {"9P_FS": ("y", "n"), "NOPE": ("y", "n")}
    msg = kconfig.explain_dropped(tmp_path, "x86", drops, final)
    assert msg == ("CONFIG_9P_FS=y became n (depends on INET && NET_9P && (!SLUB_TINY || EXPERT); "
                   "off: INET=n, SLUB_TINY=y, EXPERT=n); CONFIG_NOPE=y (no such symbol in this kernel's Kconfig)")


def test_config_plan_hashes_contents_and_checks_files(tmp_path):
    f = tmp_path / "frag.config"
    f.write_text("CONFIG_DEBUG_VM=y\n")
    a = kconfig.plan("amd64", "tinyconfig", str(f))
    assert a.fragments[0].name == "x86_64.config" and a.requested()["DEBUG_VM"] == "y"
    assert a.requested()["CMA"] == "y"
    g = tmp_path / "other-name.config"
    g.write_text("CONFIG_DEBUG_VM=y\n")
    assert kconfig.plan("amd64", "tinyconfig", str(g)).digest == a.digest      # content, not name
    g.write_text("# CONFIG_DEBUG_VM is not set\n")
    assert kconfig.plan("amd64", "tinyconfig", str(g)).digest != a.digest
    assert kconfig.plan("arm64", "tinyconfig", "").digest != kconfig.plan("amd64", "tinyconfig", "").digest
    with pytest.raises(kconfig.KconfigError, match="does not exist"):
        kconfig.plan("amd64", "tinyconfig", str(tmp_path / "missing"))
    with pytest.raises(kconfig.KconfigError, match="base config"):
        kconfig.plan("amd64", str(tmp_path / "missing"), "")


def test_shipped_fragments_cover_the_harness_requirements():
    for arch in ("amd64", "arm64"):
        req = kconfig.plan(arch, "tinyconfig", "").requested()
        for opt in list(kernels.REQUIRED) + ["CMA_DEBUGFS", "DMA_CMA", "MEMORY_ISOLATION", "COMPACTION",
                                             "HUGETLBFS", "MEMORY_HOTPLUG", "MEMORY_HOTREMOVE", "KPROBES",
                                             "DEBUG_FS", "NET_9P_VIRTIO"]:
            assert req.get(opt) == "y", (arch, opt)
    assert kconfig.plan("arm64", "tinyconfig", "").requested()["VIRTIO_MMIO"] == "y"
    assert kconfig.plan("amd64", "tinyconfig", "").requested()["VIRTIO_PCI"] == "y"


def test_cache_key_depends_on_every_input():
    src = buildsrc.Source("x", "tarball", "tarball:aa")
    plan = kconfig.plan("amd64", "tinyconfig", "")
    p = [buildsrc.Patch(Path("a"), "a", "11", [])]
    k = cache_key(src, p, plan, "amd64", "gcc 12")
    assert k == cache_key(src, p, plan, "amd64", "gcc 12")
    assert k != cache_key(buildsrc.Source("x", "tarball", "tarball:ab"), p, plan, "amd64", "gcc 12")
    assert k != cache_key(src, [buildsrc.Patch(Path("a"), "a", "12", [])], plan, "amd64", "gcc 12")
    assert k != cache_key(src, [], plan, "amd64", "gcc 12")
    assert k != cache_key(src, p, plan, "arm64", "gcc 12")
    assert k != cache_key(src, p, plan, "amd64", "gcc 13")


# -- path: images --------------------------------------------------------------------------
def test_release_from_bzimage_setup_header(tmp_path):
    """The boot protocol's kernel_version pointer (u16 at 0x20E, + 0x200), as in any bzImage."""
    img = bytearray(0x4000)
    img[0x1FE:0x200] = b"\x55\xaa"
    img[0x202:0x206] = b"HdrS"
    ver = b"6.1.192-mtaudit (root@host) #3 SMP PREEMPT_DYNAMIC Wed Dec  2 17:00:00 UTC 2026\0"
    img[0x20E:0x210] = (0x3000 - 0x200).to_bytes(2, "little")
    img[0x3000:0x3000 + len(ver)] = ver
    (tmp_path / "bzImage").write_bytes(bytes(img) + os.urandom(4096))
    assert kernels._release_from_image(tmp_path / "bzImage") == "6.1.192-mtaudit"
    arm = bytearray(0x2000)
    arm[0x38:0x3C] = b"ARM\x64"
    arm[0x1000:0x1040] = b"Linux version 6.12.118-arm64 (debian-kernel@lists) #1 SMP\0"
    (tmp_path / "Image").write_bytes(bytes(arm))
    assert kernels._release_from_image(tmp_path / "Image") == "6.12.118-arm64"
    (tmp_path / "junk").write_bytes(os.urandom(0x3000))
    assert kernels._release_from_image(tmp_path / "junk") is None


# -- CLI errors ----------------------------------------------------------------------------
def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", "collect", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)


def leftovers(cache: Path) -> list[str]:
    """Anything in the cache that is a temp or a finished image (none may come from a failure)."""
    out = []
    for p in cache.rglob("*"):
        if p.name.startswith((".tmp-", ".src.tmp")) or "/build/images/" in str(p) or "/build/tmp/patch-" in str(p):
            out.append(str(p.relative_to(cache)))
    return out


def test_cli_patch_that_does_not_apply(tmp_path):
    src = tiny_tree(tmp_path / "linux-9.9")
    tb = tmp_path / "linux-9.9.tar.gz"
    with tarfile.open(tb, "w:gz") as t:
        t.add(src, arcname="linux-9.9")
    (tmp_path / "bad.diff").write_text(PATCH_BAD)
    cache = tmp_path / "cache"
    env = {**os.environ, "MTAUDIT_CACHE": str(cache)}
    r = cli("--kernel", f"build:{tb},patch={tmp_path / 'bad.diff'},arch=x86_64", "--scenario", "idle",
            "--out", str(tmp_path / "out"), "-q", env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert f"patch {tmp_path / 'bad.diff'} does not apply: kernel/fork.c: hunk #1 FAILED at line 1" in lines[0]
    assert leftovers(cache) == []
    assert not (cache / "build" / "trees").exists() or not any((cache / "build" / "trees").glob("*/src"))
    assert not (tmp_path / "out").exists()
    r = cli("--kernel", f"build:{tb},patch={tmp_path / 'nope.diff'}", "--scenario", "idle",
            "--out", str(tmp_path / "out"), "-q", env=env)
    assert r.returncode == 2 and r.stderr.strip().endswith("nope.diff does not exist"), r.stderr


def test_cli_missing_cross_compiler(tmp_path):
    """arm64 on this host needs aarch64-linux-gnu-gcc: a PATH without it (but with QEMU)."""
    if os.uname().machine == "aarch64":
        pytest.skip("native arm64 host: no cross compiler involved")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("qemu-system-aarch64", "make", "gcc", "flex", "bison", "bc", "patch", "tar", "xz"):
        if shutil.which(tool):
            os.symlink(shutil.which(tool), bin_ / tool)
    cache = tmp_path / "cache"
    env = {**os.environ, "PATH": str(bin_), "MTAUDIT_CACHE": str(cache)}
    r = cli("--kernel", "build:debian-source:6.1,arch=arm64", "--scenario", "idle",
            "--out", str(tmp_path / "out"), "-q", env=env)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == ("mtaudit: arch=arm64 on a x86_64 host cross-compiles: aarch64-linux-gnu-gcc "
                                "not found (apt-get install gcc-aarch64-linux-gnu)")
    assert leftovers(cache) == [] and not (cache / "build").exists()


def test_toolchain_native_and_cross():
    tc = toolchain("amd64")
    assert (tc.karch, tc.target, tc.cross) == ("x86", "bzImage", "")
    if shutil.which("aarch64-linux-gnu-gcc"):
        tc = toolchain("arm64")
        assert (tc.karch, tc.target, tc.cross) == ("arm64", "Image", "aarch64-linux-gnu-")


def test_plain_progress_is_one_line_per_stage_and_ten_percent():
    from collectors.build.build import _PlainBar
    lines: list[str] = []
    with _PlainBar(lines.append, 100) as pb:
        for i in range(1, 101):
            pb.update(i, f"compile: f{i}.o")
        for i in range(101, 106):
            pb.update(i, f"link: x{i}.o")
    assert lines[0] == "compile: 1 units ~1%" and lines[-1] == "link: after 101 compiled units"
    assert len(lines) == 12
