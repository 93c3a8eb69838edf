"""Unit tests of the collector pieces that need no QEMU: specs, config checks, scenarios,
manifest/bundle writing, module ordering, cpio and ELF reading (checked against cpio/ldd)."""
from __future__ import annotations

import json
import re
import lzma
import subprocess
from pathlib import Path

import pytest

from analyzer.errors import MtauditError
from analyzer import bundle
from collectors.guest import elfdeps, initramfs, scenarios
from collectors.kernels import spec as kernels
from collectors.errors import CollectError, KernelConfigError, KernelSpecError
from support.tools import requires_tool

ROOT = Path(__file__).resolve().parents[2]
CORPUS61 = ROOT / "fixtures" / "captures" / "debian-6.1-arm64-cma-churn"


# -- kernel SPECs ----------------------------------------------------------------------------
@pytest.mark.parametrize("text,kind,series,arch", [
    ("debian:6.1/arm64", "debian", "6.1", "arm64"),
    ("debian:6.12/arm64", "debian", "6.12", "arm64"),
    ("debian:6.1/amd64", "debian", "6.1", "amd64"),
    ("debian:6.12/x86_64", "debian", "6.12", "amd64"),
    ("debian:6.1", "debian", "6.1", "arm64"),
])
def test_debian_specs(text, kind, series, arch):
    s = kernels.parse_spec(text)
    assert (s.kind, s.series, s.arch) == (kind, series, arch)


def test_path_and_deb_specs():
    s = kernels.parse_spec("path:/k/Image,modules=/k/mods,config=/k/.config", arch="aarch64")
    assert (s.kind, s.file, s.modules, s.config, s.arch) == ("path", "/k/Image", "/k/mods", "/k/.config", "arm64")
    assert kernels.parse_spec("deb:/x/linux-image.deb").file == "/x/linux-image.deb"


@pytest.mark.parametrize("bad", ["debian:six/arm64", "debian:6.1/mips", "path:", "path:/k,foo=1",
                                 "deb:/x/file.tar", "6.1", "ubuntu:22.04"])
def test_bad_specs_are_user_errors(bad):
    with pytest.raises(KernelSpecError) as e:
        kernels.parse_spec(bad)
    assert isinstance(e.value, MtauditError) and bad.split(",")[0][:6] in str(e.value) or "arch" in str(e.value)


def test_spec_arch_conflict():
    with pytest.raises(KernelSpecError, match="--arch"):
        kernels.parse_spec("debian:6.1/arm64", arch="amd64")


def test_missing_path_image(tmp_path):
    with pytest.raises(KernelSpecError, match="does not exist"):
        kernels.resolve(f"path:{tmp_path}/nope", arch="arm64")


# -- config checks -----------------------------------------------------------------------------
GOOD = "\n".join(f"CONFIG_{o}=y" for o in kernels.REQUIRED) + "\nCONFIG_HUGETLBFS=y\n"


def _kernel(config: str, spec="debian:6.1/arm64", arch="arm64") -> kernels.Kernel:
    return kernels.Kernel(spec=spec, arch=arch, release="6.1.0-1-" + arch, version="1",
                          image=Path("/nonexistent"), config_path=None, modules=None,
                          config=kernels.parse_config(config))


def test_parse_config_values():
    c = kernels.parse_config('CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D="x y"\nCONFIG_E=64\n')
    assert c == {"A": "y", "B": "m", "C": "n", "D": "x y", "E": "64"}


def test_config_ok_and_modules_count():
    """=m satisfies a requirement (the 9p transport may be a module); "is not set" does not."""
    as_module = _kernel(GOOD.replace("CONFIG_9P_FS=y", "CONFIG_9P_FS=m"))
    assert as_module.config["9P_FS"] == "m" and as_module.has("9P_FS")
    assert kernels.check_config(as_module) is None                       # accepted
    unset = _kernel(GOOD.replace("CONFIG_9P_FS=y", "# CONFIG_9P_FS is not set"))
    assert not unset.has("9P_FS")
    with pytest.raises(KernelConfigError, match="CONFIG_9P_FS"):
        kernels.check_config(unset)


def test_amd64_without_cma_is_refused_with_hint_only_where_cma_is_needed():
    k = _kernel(GOOD.replace("CONFIG_CMA=y", "# CONFIG_CMA is not set"), spec="debian:6.1/amd64", arch="amd64")
    kernels.check_config(k)                       # memory offline, gigantic pages ... need no CMA
    with pytest.raises(KernelConfigError) as e:
        kernels.check_config(k, ("CMA",))
    msg = str(e.value)
    assert "CONFIG_CMA" in msg and "arm64" in msg and "source" in msg and "memory-offline" in msg


@pytest.mark.parametrize("name, needs", [("cma-churn", True), ("cma-race", True), ("memory-offline", False),
                                         ("idle", False)])
def test_scenario_needs_cma_from_its_command_line(name, needs):
    sc = scenarios.load(name)
    assert kernels.scenario_needs_cma(sc.cmdline, sc.requires) is needs


@pytest.mark.parametrize("opt", ["TRACEPOINTS", "FTRACE", "KPROBE_EVENTS"])
def test_missing_tracing_option_is_named(opt):
    with pytest.raises(KernelConfigError, match=f"CONFIG_{opt}"):
        kernels.check_config(_kernel(GOOD.replace(f"CONFIG_{opt}=y\n", "")))


def test_scenario_requirements_checked():
    with pytest.raises(KernelConfigError, match="CONFIG_MEMORY_HOTREMOVE"):
        kernels.check_config(_kernel(GOOD), extra=("CONFIG_MEMORY_HOTREMOVE",))


def test_no_config_refused():
    with pytest.raises(KernelConfigError, match="no kernel config"):
        kernels.check_config(_kernel(""))


def test_boot_kprobe_table():
    assert kernels.boot_kprobe_ok("6.12.118+deb13-arm64")
    assert not kernels.boot_kprobe_ok("6.1.0-56-arm64")
    assert not kernels.boot_kprobe_ok("5.10.0-30-arm64")


def test_path_spec_reads_arm64_image_magic(tmp_path):
    img = tmp_path / "Image"
    head = bytearray(0x400)
    head[0x38:0x3C] = b"ARM\x64"
    img.write_bytes(bytes(head) + b"Linux version 6.9.0-test (x) #1\0")
    cfg = tmp_path / "config"
    cfg.write_text(GOOD)
    k = kernels.resolve(f"path:{img},config={cfg}")
    assert (k.arch, k.release) == ("arm64", "6.9.0-test")
    assert k.version.startswith("sha256:")


# -- scenarios ---------------------------------------------------------------------------------
def test_builtin_scenarios_have_headers():
    names = scenarios.available()
    assert {"idle", "cma-churn", "contig-alloc", "memory-offline"} <= set(names)
    churn = scenarios.load("cma-churn")
    assert churn.memory >= 3072 and "hugetlb_cma=1G" in churn.cmdline and churn.phases > 5
    assert scenarios.load("idle").timeout <= 180


def test_scenario_file_and_bad_header(tmp_path):
    p = tmp_path / "mine.sh"
    p.write_text("# mtaudit: memory=512 cmdline=foo=1 requires=CONFIG_X\nphase x\n")
    s = scenarios.load(str(p))
    assert (s.name, s.memory, s.cmdline, s.requires, s.builtin) == ("mine", 512, ["foo=1"], ["CONFIG_X"], False)
    p.write_text("# mtaudit: colour=blue\n")
    with pytest.raises(CollectError, match="unknown header key"):
        scenarios.load(str(p))
    with pytest.raises(CollectError, match="unknown scenario"):
        scenarios.load("no-such-scenario")


# -- bundle / manifest -------------------------------------------------------------------------
def test_stats_parsing_on_real_capture():
    st = bundle.parse_stats((CORPUS61 / "stats-end.txt").read_text(), "stats-end.txt")
    assert st["cpu0"]["entries"] == 849295 and st["cpu1"]["entries"] == 318114
    assert bundle.lost_events(st) == {"cpu0": 0, "cpu1": 0}
    st = bundle.parse_stats("== /x/per_cpu/cpu1\nentries: 5\noverrun: 7\ncommit overrun: 1\n"
                            "dropped events: 2\noldest event ts:  5.25\n== /x/per_cpu/cpu0/stats\noverrun: 0\n", "s")
    assert bundle.lost_events(st) == {"cpu0": 0, "cpu1": 10}      # keys in CPU order, "cpuN" like the manifest
    assert list(st) == ["cpu0", "cpu1"] and st["cpu1"]["entries"] == 5
    with pytest.raises(bundle.CaptureError, match="x/stats-end.txt: line 1"):
        bundle.parse_stats("overrun: 3\n", "x/stats-end.txt")
    with pytest.raises(bundle.CaptureError, match="bad count"):
        bundle.parse_stats("== /x/per_cpu/cpu0\noverrun: many\n", "s")


def test_trace_magic_reads_ten_bytes(tmp_path):
    good, bad, short = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    good.write_bytes(b"\x17\x08\x44tracing6\0" + b"x" * 100)
    bad.write_bytes(b"\x17\x08\x45tracing6\0")
    short.write_bytes(b"\x17\x08")
    assert bundle.is_trace_dat(good) and not bundle.is_trace_dat(bad) and not bundle.is_trace_dat(short)
    assert not bundle.is_trace_dat(tmp_path / "missing")


def test_manifest_schema_version_is_checked(tmp_path):
    m = bundle.Manifest.from_dict(_manifest(), "m.json")
    assert m.to_dict()["schema_version"] == 1 and list(m.to_dict())[-1] == "files"
    with pytest.raises(bundle.CaptureError, match="m.json: manifest schema_version 2"):
        bundle.Manifest.from_dict({**_manifest(), "schema_version": 2}, "m.json")
    with pytest.raises(bundle.CaptureError, match="m.json: no schema_version"):
        bundle.Manifest.from_dict({k: v for k, v in _manifest().items() if k != "schema_version"}, "m.json")
    with pytest.raises(bundle.CaptureError, match="lost_events"):
        bundle.Manifest.from_dict({**_manifest(), "lost_events": {"cpu0": "x"}}, "m.json")
    # a hand-written manifest's bare CPU numbers read as "cpuN"; unknown keys travel in `extra`
    m = bundle.Manifest.from_dict({**_manifest(), "lost_events": {"1": 2, "0": 1}, "note": "x"}, "m.json")
    assert m.lost_events == {"cpu0": 1, "cpu1": 2} and m.extra == {"note": "x"}
    assert m.get("note") == "x" and m.get("status") == "ok" and m.get("collector", "-") == "-"
    (tmp_path / "manifest.json").write_text(json.dumps({**_manifest(), "schema_version": 3}))
    assert any("schema_version 3" in p for p in bundle.validate(tmp_path))


def _manifest(status="ok"):
    return {"schema_version": 1, "status": status, "failure": None, "kernel": {}, "cmdline": "",
            "scenario": {}, "qemu": {}, "started": "", "finished": "", "lost_events": {},
            "guest_exit": 0, "console_problems": []}


def test_manifest_hashes_and_validation(tmp_path):
    for f in bundle.EXPECTED:
        if f != "manifest.json":
            (tmp_path / f).write_text(f)
    m = bundle.write_manifest(tmp_path, bundle.Manifest.from_dict(_manifest(), "m"))
    assert set(m.files) == set(bundle.EXPECTED) - {"manifest.json"}
    assert json.loads((tmp_path / "manifest.json").read_text())["files"] == m.files
    assert bundle.validate(tmp_path) == []
    (tmp_path / "uname.txt").write_text("tampered")
    assert bundle.validate(tmp_path) == ["uname.txt sha256 mismatch"]
    (tmp_path / "trace.dat").unlink()
    probs = bundle.validate(tmp_path)
    assert "trace.dat missing" in probs and "trace.dat listed but missing" in probs


def test_pack_roundtrip(tmp_path):
    d = tmp_path / "b"
    (d / "snap").mkdir(parents=True)
    (d / "trace.dat").write_bytes(b"x" * 1000)
    (d / "snap" / "meminfo-0.txt").write_text("m")
    out = bundle.pack(d)
    import tarfile
    import zstandard
    raw = zstandard.ZstdDecompressor().stream_reader(open(out, "rb")).read()
    import io
    names = tarfile.open(fileobj=io.BytesIO(raw)).getnames()
    assert names == ["b/snap", "b/snap/meminfo-0.txt", "b/trace.dat"]


# -- initramfs pieces --------------------------------------------------------------------------
def _fake_ko(path: Path, depends: str, xz: bool = False) -> None:
    data = b"\x7fELF....\0license=GPL\0depends=" + depends.encode() + b"\0name=" + path.name.split(".")[0].encode() + b"\0"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(data) if xz else data)


def test_module_order_from_modinfo(tmp_path):
    m = tmp_path / "lib/modules/6.12.0"
    _fake_ko(m / "kernel/fs/9p/9p.ko.xz", "9pnet,netfs", xz=True)
    _fake_ko(m / "kernel/net/9p/9pnet_virtio.ko.xz", "9pnet,virtio_ring", xz=True)
    _fake_ko(m / "kernel/net/9p/9pnet.ko.xz", "", xz=True)
    _fake_ko(m / "kernel/fs/netfs/netfs.ko.xz", "", xz=True)
    _fake_ko(m / "kernel/drivers/virtio/virtio_mmio.ko.xz", "", xz=True)
    (m / "modules.builtin").write_text("kernel/drivers/virtio/virtio_ring.ko\n")
    order = initramfs.module_load_order(m, ("virtio_mmio", "9pnet_virtio", "9p"))
    names = [Path(p).name.split(".")[0] for p in order]
    assert names == ["virtio_mmio", "9pnet", "9pnet_virtio", "netfs", "9p"]
    with pytest.raises(CollectError, match="virtio_pci"):
        initramfs.module_load_order(m, ("virtio_pci",))


@requires_tool("cpio")
def test_cpio_is_readable_by_cpio(tmp_path):
    cp = initramfs.Cpio()
    cp.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
    cp.symlink("bin/sh", "busybox")
    cp.file("mtaudit/scenarios/x.sh", b"phase x\n")
    data = cp.finish()
    assert len(data) % 512 == 0
    out = subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True).stdout.decode().split()
    assert out == ["bin", "bin/hello", "bin/sh", "mtaudit", "mtaudit/scenarios", "mtaudit/scenarios/x.sh"]
    subprocess.run(["cpio", "-id", "--quiet"], input=data, cwd=tmp_path, check=True)
    assert (tmp_path / "bin/hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (tmp_path / "bin/sh").is_symlink()


@requires_tool("ldd", "/usr/bin/trace-cmd")
def test_elf_needed_matches_ldd():
    interp, needed = elfdeps.read_elf(Path("/usr/bin/trace-cmd"))
    ldd = subprocess.run(["ldd", "/usr/bin/trace-cmd"], capture_output=True, text=True).stdout
    sonames = {ln.split()[0] for ln in ldd.splitlines() if "=>" in ln}
    assert interp and Path(interp).name in ldd
    # the loader may be listed as DT_NEEDED too; ldd prints it without "=>"
    assert set(needed) - {Path(interp).name} == sonames


# -- the committed real bundles (made by `mtaudit collect ... --scenario cma-churn`) ----------
BUNDLES = sorted((ROOT / "fixtures" / "bundles").glob("debian-*-arm64-cma-churn"))


@pytest.mark.parametrize("b", BUNDLES, ids=[b.name for b in BUNDLES])
def test_committed_bundle_is_complete(b):
    assert bundle.validate(b) == []
    m = json.loads((b / "manifest.json").read_text())
    assert m["status"] == "ok" and m["guest_exit"] == 0 and m["scenario"]["name"] == "cma-churn"
    assert m["scenario"]["sha256"] == scenarios.load("cma-churn").sha256, "bundle is from an older scenario"
    assert m["kernel"]["release"] == (b / "uname.txt").read_text().split()[2]
    assert m["lost_events"] and set(m["lost_events"].values()) == {0}
    assert "hugetlb_cma=1G" in m["cmdline"]
    assert (b / "trace.dat").read_bytes()[:10] == b"\x17\x08\x44tracing"


@requires_tool("trace-cmd")
@pytest.mark.parametrize("b", BUNDLES, ids=[b.name for b in BUNDLES])
def test_committed_bundle_trace_holds_every_buffered_event(b):
    """Independent oracle: the kernel's per-CPU `entries` at the end == events trace-cmd reads."""
    rep = subprocess.run(["trace-cmd", "report", "-R", "-i", str(b / "trace.dat")],
                         capture_output=True, text=True, timeout=600)
    assert rep.returncode == 0
    n = sum(1 for ln in rep.stdout.splitlines() if re.match(r"\s*\S.*\[\d+\]\s+\d+\.\d+:", ln))
    st = bundle.parse_stats((b / "stats-end.txt").read_text(), "stats-end.txt")
    assert n == sum(v["entries"] for v in st.values())
    assert " setmt: " in rep.stdout and "cma_alloc_start" in rep.stdout


def test_interruptible_stops_on_sigint_even_when_it_was_inherited_ignored():
    """A background job of a non-interactive shell starts with SIGINT ignored; Python then has no
    Ctrl-C handler, and collect used to run its guest on after an interrupt."""
    import os
    import signal
    import time

    from collectors.commands import interruptible
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            with interruptible():
                os.kill(os.getpid(), signal.SIGINT)
                while time.monotonic() - t0 < 10:   # the handler runs between bytecodes
                    time.sleep(0.01)
        assert time.monotonic() - t0 < 5
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN      # restored on the way out
    finally:
        signal.signal(signal.SIGINT, old)


# -- today's Debian archive: series by name, split packages, installed probes ------------------
@pytest.mark.parametrize("name, series", [
    ("linux-image-6.18.15+deb13-arm64", "6.18"), ("linux-image-6.1.0-50-arm64", "6.1"),
    ("linux-image-7.2.13+deb14-arm64", "7.2"), ("linux-image-6.18.15+deb13-arm64-unsigned", None),
    ("linux-image-6.18.15+deb13-arm64-16k", None), ("linux-image-6.12.117+deb13-cloud-arm64", None),
    ("linux-image-6.18.15+deb13-arm64-dbg", None)])
def test_plain_flavour_image_names(name, series):
    m = kernels._IMAGE_RE("arm64").fullmatch(name)
    assert (m.group(1) if m else None) == series


def test_absent_series_lists_what_the_archive_has():
    found = [("7.3.4-1~bpo13+1", "trixie-backports"), ("6.18.15-1~bpo13+1", "trixie-backports"),
             ("6.12.117-1", "trixie"), ("6.12.118-1", "trixie-security"), ("7.2.13-1", "sid")]
    assert kernels.available_series(found) == ["6.12 (trixie, trixie-security)", "6.18 (trixie-backports)",
                                               "7.2 (sid)", "7.3 (trixie-backports)"]


def test_installed_probes_read_back(tmp_path):
    p = tmp_path / "probes-installed.txt"
    p.write_text("p:pb/setmt __set_pfnblock_flags_mask.constprop.0 pfn=%x0:x64 flags=%x1:x64||migratetype|init\n"
                 "p:pb/setiso set_pfnblock_bit pfn=%x1:x64 bit=%x2:u32|bit == 4|isolate-set|init\n"
                 "garbage line\n")
    from collectors.collect import installed_probes
    got = installed_probes(p)
    assert [(g["event"], g["symbol"], g["filter"], g["source"]) for g in got] == [
        ("pb/setmt", "__set_pfnblock_flags_mask.constprop.0", None, "init"),
        ("pb/setiso", "set_pfnblock_bit", "bit == 4", "init")]
    assert installed_probes(tmp_path / "missing.txt") == []
