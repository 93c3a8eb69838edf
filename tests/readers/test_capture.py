"""Capture metadata: bundle directories, .tar.zst archives, bare traces, overrides, bad files."""
from __future__ import annotations

import gc
import io
import json
import os
import shutil
import tarfile

import pytest
import zstandard

from analyzer.capture import (CaptureError, load_capture, parse_cma_override, parse_dmesg_cma,
                              parse_dmesg_zones, parse_pagetypeinfo, parse_zoneinfo)
from analyzer.errors import MtauditError
from analyzer.kernels import behavior_for

CAP = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "captures")
D61 = os.path.join(CAP, "debian-6.1-arm64-cma-churn")
D612 = os.path.join(CAP, "debian-6.12-arm64-cma-churn")
X86 = os.path.join(CAP, "custom-6.1-x86_64-cmadebugfs")


def test_debian_61_bundle():
    tr, m = load_capture(D61)
    assert m.kind == "directory"
    assert m.kernel_release == "6.1.0-50-arm64" and "Debian 6.1.176-1" in m.uname
    assert behavior_for(m.kernel_id).version == (6, 1, 176)
    assert m.arch == "arm64" and m.pageblock_order == 9
    assert m.zones == [("DMA", 262144, 1048576)]
    # 1 GiB at 0xbf800000 (hugetlb0) and 64 MiB at 0xb8800000 (reserved), names confirmed by cma events
    assert sorted(m.cma_areas) == [("hugetlb0", 0xbf800, 262144), ("reserved", 0xb8800, 16384)]
    assert m.pagetypeinfo_end.zone_blocks("DMA") == {0: 121, 1: 866, 2: 5, 3: 0, 4: 544, 5: 0}
    assert m.pagetypeinfo_start.zone_blocks("DMA")[4] == 544
    assert m.pagetypeinfo_end.free[(0, "DMA", 4)][10] == 265
    assert "hugetlb_cma=1G" in m.cmdline and m.unknowns == []


def test_debian_612_bundle_on_node_lines():
    _, m = load_capture(D612)
    assert sorted(m.cma_areas) == [("hugetlb0", 0x80000, 262144), ("reserved", 0xf8600, 16384)]
    assert behavior_for(m.kernel_id).version == (6, 12, 117)


def test_x86_capture_without_zoneinfo_uses_boot_log_zone_ranges():
    tr, m = load_capture(X86)
    assert m.zones == [("DMA32", 1, 0x3ffe0)]
    assert m.provenance["zones"] == "dmesg Zone ranges"
    assert m.cma_areas == [("reserved", 0x3bc00, 16384)]
    assert m.kernel_release == "6.1.192" and m.arch == "x86_64"       # from the trace's UNAME option
    assert m.pagetypeinfo_end.zone_blocks("DMA32") == {0: 21, 1: 455, 2: 4, 3: 0, 4: 32, 5: 0}


def test_bare_trace_says_what_it_does_not_know():
    tr, m = load_capture(os.path.join(X86, "trace.dat"))
    assert m.kind == "trace" and m.pageblock_order == 9
    text = " ".join(m.unknowns)
    assert "pageblock order unknown" in text and "zone spans unknown" in text
    # the area comes from the cma events only (a lower bound of its extent)
    assert [a[0] for a in m.cma_areas] == ["reserved"] and "lower bound" in text


def test_overrides_win(tmp_path):
    _, m = load_capture(D61, overrides={"pageblock_order": 10, "cma": ["mine:0x50000:4096"],
                                        "kernel": "6.12.5"})
    assert m.pageblock_order == 10 and m.cma_areas == [("mine", 0x50000, 4096)]
    assert m.kernel_release == "6.12.5" and m.provenance["kernel"] == "--kernel"
    with pytest.raises(CaptureError, match="NAME:BASEPFN:COUNT"):
        parse_cma_override("x:1")


@pytest.mark.parametrize("name,text,msg", [
    ("pagetypeinfo-end.txt", "hello world\n", "pagetypeinfo-end.txt"),
    ("pagetypeinfo-end.txt", "Page block order: 9\nPages per block: 256\n", "Pages per block"),
    ("pagetypeinfo-end.txt", "Page block order: 9\nPages per block:  512\n\nNumber of blocks type  Unmovable  Movable\n"
                             "Node 0, zone DMA 1 2 3\n", "block counts"),
    ("zoneinfo-end.txt", "nothing here\n", "zoneinfo-end.txt"),
    ("manifest.json", "{not json", "manifest.json"),
    ("uname.txt", "6.1.0\n", "uname.txt"),
])
def test_garbled_metadata_names_the_file(tmp_path, name, text, msg):
    d = tmp_path / "cap"
    d.mkdir()
    shutil.copy(os.path.join(X86, "trace.dat"), d / "trace.dat")
    (d / name).write_text(text)
    with pytest.raises(MtauditError, match=msg) as e:
        load_capture(str(d))
    assert name in str(e.value)


def test_binary_metadata_rejected(tmp_path):
    d = tmp_path / "cap"
    d.mkdir()
    shutil.copy(os.path.join(X86, "trace.dat"), d / "trace.dat")
    (d / "zoneinfo-end.txt").write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(CaptureError, match="binary"):
        load_capture(str(d))


def test_manifest_kernel_and_lost_events(tmp_path):
    d = tmp_path / "cap"
    d.mkdir()
    shutil.copy(os.path.join(X86, "trace.dat"), d / "trace.dat")
    (d / "manifest.json").write_text(json.dumps({
        "schema_version": 1, "status": "ok", "kernel": {"release": "6.1.0-50-arm64", "arch": "arm64",
                                                         "version": "6.1.176-1"},
        "lost_events": {"0": 3}, "cmdline": "cma=64M"}))
    _, m = load_capture(str(d))
    assert m.kernel_release == "6.1.0-50-arm64" and behavior_for(m.kernel_id).version == (6, 1, 176)
    assert m.lost_events == {"cpu0": 3} and m.cmdline == "cma=64M" and m.arch == "arm64"


def test_missing_trace_and_missing_path(tmp_path):
    with pytest.raises(CaptureError, match="no trace.dat"):
        load_capture(str(tmp_path))
    with pytest.raises(CaptureError, match="no such file"):
        load_capture(str(tmp_path / "nope"))


def _tar_zst(src_dir: str, out: str, top: str = "bundle") -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        tf.add(src_dir, arcname=top)
    with open(out, "wb") as f:
        f.write(zstandard.ZstdCompressor().compress(raw.getvalue()))


def test_tar_zst_archive_is_extracted_and_cleaned_up(tmp_path):
    arc = str(tmp_path / "cap.tar.zst")
    _tar_zst(X86, arc)
    tr, m = load_capture(arc)
    assert m.kind == "archive" and m.zones == [("DMA32", 1, 0x3ffe0)]
    tmpdir = os.path.dirname(os.path.dirname(m.files["dmesg-end.txt"]))
    assert os.path.isdir(tmpdir)
    assert tr.events()["cma:cma_alloc_finish"] == 1
    del tr
    gc.collect()
    assert not os.path.exists(tmpdir)


def test_corrupt_archive(tmp_path):
    p = tmp_path / "bad.tar.zst"
    p.write_bytes(b"\x28\xb5\x2f\xfdgarbage")
    with pytest.raises(CaptureError, match="bad.tar.zst"):
        load_capture(str(p))


def test_parsers_on_fixture_text():
    z = parse_zoneinfo(open(os.path.join(D612, "zoneinfo-end.txt")).read(), "z")
    assert z == [("DMA", 262144, 1048576)]
    dm = open(os.path.join(D61, "dmesg-start.txt")).read()
    assert parse_dmesg_zones(dm, 4096) == [("DMA", 0x40000, 0x100000)]
    assert parse_dmesg_cma(dm, 4096) == [("hugetlb0", 0xbf800, 262144), ("reserved", 0xb8800, 16384)]
    p = parse_pagetypeinfo(open(os.path.join(D612, "pagetypeinfo-end.txt")).read(), "p")
    assert p.pageblock_order == 9 and p.pages_per_block == 512
    assert p.type_names == ["Unmovable", "Movable", "Reclaimable", "HighAtomic", "CMA", "Isolate"]
    assert sum(p.zone_blocks("DMA").values()) == 1536


def test_stats_end_lost_counts(tmp_path):
    _, m = load_capture(D61)
    assert m.lost_events == {"cpu0": 0, "cpu1": 0} and m.provenance["lost_events"] == "stats-end.txt"
    from analyzer.bundle import lost_events, parse_stats
    assert lost_events(parse_stats("== /sys/kernel/tracing/per_cpu/cpu1\noverrun: 5\ncommit overrun: 1\n"
                                   "dropped events: 2\n", "s")) == {"cpu1": 8}
    with pytest.raises(CaptureError, match="stats-end.txt"):
        parse_stats("overrun: 3\n", "x/stats-end.txt")


def test_plain_snapshot_names_in_a_users_directory(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    shutil.copy(os.path.join(X86, "trace.dat"), d / "trace.dat")
    shutil.copy(os.path.join(X86, "pagetypeinfo-end.txt"), d / "pagetypeinfo.txt")
    shutil.copy(os.path.join(X86, "dmesg-end.txt"), d / "dmesg.txt")
    _, m = load_capture(str(d))
    assert m.pagetypeinfo_end.zone_blocks("DMA32")[4] == 32
    assert m.zones == [("DMA32", 1, 0x3ffe0)] and m.cma_areas == [("reserved", 0x3bc00, 16384)]
    assert m.files["pagetypeinfo-end.txt"].endswith("pagetypeinfo.txt")
