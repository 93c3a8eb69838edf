"""Layouts no shipped capture has, made from a real capture's records and judged by trace-cmd.

The records (payload bytes and timestamps) of a real capture are re-packed by
tests/support/tracedat_write.py into: big endian, 4-byte kernel long, pages with lost-event
flags / padding / absolute time stamps / time extends, a second buffer (instance) in v7 and
in trace-cmd's own v6 conversion of it, and zlib-compressed v7 (trace-cmd 3.1.6 here has no
zlib, so that one is compared with the v6 file of the same records, which trace-cmd judged).
"""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from analyzer.readers import tracedat_pages as tp
from support import tracedat_write as W
from analyzer.readers.tracedat import TraceDat

from support.tracedat_oracle import compare
from support.tracedat_variants import extract, to_big_endian
from support.tools import requires_tool

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "captures")
SMALL = os.path.join(ROOT, "custom-6.1-x86_64-cmadebugfs", "trace.dat")
MEDIUM = os.path.join(ROOT, "debian-6.12-arm64-cma-churn", "trace.dat")

needs_tracecmd = requires_tool("trace-cmd")
pytestmark = pytest.mark.cext


def tables(t: TraceDat) -> dict:
    return {n: t.table(n) for n in t.events()}


def assert_same_tables(a: TraceDat, b: TraceDat) -> None:
    ta, tb = tables(a), tables(b)
    assert ta.keys() == tb.keys()
    for n in ta:
        assert ta[n].equals(tb[n]), n
    assert a.lost.equals(b.lost)


@pytest.fixture(scope="module")
def small():
    return TraceDat(SMALL)


@needs_tracecmd
@pytest.mark.parametrize("version,compression,endian,long_size", [
    (6, "none", "little", 4), (6, "none", "big", 8), (7, "zstd", "big", 4), (7, "none", "big", 8)])
def test_endian_and_long_size_variants_match_trace_cmd(tmp_path, small, version, compression, endian, long_size):
    bufs = extract(small)
    if endian == "big":
        bufs = to_big_endian(small, bufs)
    out = str(tmp_path / "v.dat")
    W.write(out, small.h, bufs, version=version, compression=compression,
            lay=W.Layout(endian=endian, long_size=long_size, page_size=small.h.page_size))
    t = TraceDat(out)
    assert (t.meta.endian, t.meta.extra["kernel_long_size"], t.meta.file_version) == (endian, long_size, version)
    assert compare(t, out)["records"] == 2435
    if tp.use_compiled():
        assert_same_tables(t, TraceDat(out, compiled=False))
    assert_same_tables(t, small)


@needs_tracecmd
def test_big_endian_medium_capture_matches_trace_cmd(tmp_path):
    src = TraceDat(MEDIUM)
    out = str(tmp_path / "be.dat")
    W.write(out, src.h, to_big_endian(src, extract(src)), version=7, compression="zstd",
            lay=W.Layout(endian="big", long_size=8))
    s = compare(TraceDat(out), out)
    assert s["records"] == 531098


@needs_tracecmd
def test_lost_padding_stamps_and_time_extends_match_trace_cmd(tmp_path, small):
    bufs = extract(small)
    r = bufs[0][1][0]
    n = len(r.ts)
    rng = np.random.default_rng(7)
    # time extends: open gaps of 2**27..2**31 ns between some records
    gaps = np.where(rng.random(n) < 0.03, rng.integers(1 << 27, 1 << 31, n), 0).astype(np.uint64)
    r.ts = r.ts + np.cumsum(gaps, dtype=np.uint64)
    r.lost = {100: 5, 700: -1, 1500: 1234}
    r.pad = rng.random(n) < 0.05
    r.stamp = rng.random(n) < 0.02
    out = str(tmp_path / "lp.dat")
    W.write(out, small.h, bufs, version=6)
    t = TraceDat(out)
    s = compare(t, out)
    assert s["drops"] == [(0, 5), (0, -1), (0, 1234)]
    lost = t.lost.to_pylist()
    assert [(x["cpu"], x["count"]) for x in lost] == [(0, 5), (0, -1), (0, 1234)]
    ts = t.table("kmem:mm_page_pcpu_drain")["ts"].to_numpy()
    for x in lost:      # the window brackets the gap: last record before, first after
        assert x["ts_start"] < x["ts_end"]
        assert x["ts_end"] in ts and x["ts_start"] in ts
    if tp.use_compiled():
        assert_same_tables(t, TraceDat(out, compiled=False))
    # blocks are walked independently (in parallel): running max and lost windows must
    # carry across block boundaries, so tiny blocks give the same tables and lost rows
    for compiled in ([True, False] if tp.use_compiled() else [False]):
        tiny = TraceDat(out, compiled=compiled)
        tiny._block_bytes = 2 * small.h.page_size
        assert_same_tables(tiny, t)


@needs_tracecmd
def test_instances_v7_and_trace_cmd_v6_conversion(tmp_path, small):
    top = extract(small)[0][1]
    r = extract(small)[0][1][0]
    k = np.arange(0, len(r.ts), 3)
    inst = [W.Records(r.ts[k] + 7, r.data, r.off[k], r.len[k]),
            W.Records(r.ts[k[:50]] + 3, r.data, r.off[k[:50]], r.len[k[:50]])]
    v7 = str(tmp_path / "mb7.dat")
    W.write(v7, small.h, [("", top), ("inst", inst)], version=7, compression="zstd")
    v6 = str(tmp_path / "mb6.dat")
    subprocess.run(["trace-cmd", "convert", "-i", v7, "-o", v6, "--file-version", "6", "--compression", "none"],
                   check=True, capture_output=True)
    for path in (v7, v6):
        t = TraceDat(path)
        assert t.meta.buffers == ["", "inst"]
        assert "buffer" in t.table("kmem:mm_page_pcpu_drain").column_names
        assert compare(t, path)["records"] == 2435 + len(k) + 50
    assert_same_tables(TraceDat(v7), TraceDat(v6))


def test_zlib_v7_equals_the_same_records_in_v6(tmp_path, small):
    bufs = extract(small)
    v6, z = str(tmp_path / "a.dat"), str(tmp_path / "z.dat")
    W.write(v6, small.h, bufs, version=6)
    W.write(z, small.h, bufs, version=7, compression="zlib", chunk_pages=3)
    tz = TraceDat(z)
    assert tz.meta.compression == "zlib"
    assert_same_tables(tz, TraceDat(v6))
    assert_same_tables(tz, small)


@pytest.mark.skipif(not tp.use_compiled(), reason="C walker not built")
@pytest.mark.parametrize("name", ["custom-6.1-x86_64-cmadebugfs", "debian-6.1-arm64-cma-churn"])
def test_compiled_and_numpy_walkers_give_identical_tables(name):
    p = os.path.join(ROOT, name, "trace.dat")
    assert_same_tables(TraceDat(p, compiled=True), TraceDat(p, compiled=False))


@needs_tracecmd
@pytest.mark.parametrize("version,compression,page_size", [(6, "none", 8192), (7, "zstd", 16384)])
def test_other_page_sizes_match_trace_cmd(tmp_path, small, version, compression, page_size):
    out = str(tmp_path / "ps.dat")
    W.write(out, small.h, extract(small), version=version, compression=compression, lay=W.Layout(page_size=page_size))
    t = TraceDat(out)
    assert t.meta.page_size == page_size and t.meta.extra["page_sizes"] == {"": page_size}
    assert compare(t, out)["records"] == 2435


def test_per_buffer_page_size_differs_from_file_page_size(tmp_path, small):
    """v7 BUFFER options carry their own sub-buffer size (trace-cmd >= 3.3 `--subbuf-size`).

    trace-cmd 3.1.6 cannot read such a file, so the judge is the original capture's tables.
    """
    out = tmp_path / "ps.dat"
    W.write(str(out), small.h, extract(small), version=7, compression="zstd", lay=W.Layout(page_size=16384))
    data = bytearray(out.read_bytes())
    data[14:18] = (4096).to_bytes(4, "little")          # initial header: host page size
    out.write_bytes(bytes(data))
    t = TraceDat(str(out))
    assert t.meta.page_size == 4096 and t.meta.extra["page_sizes"] == {"": 16384}
    assert_same_tables(t, small)


@needs_tracecmd
@pytest.mark.parametrize("mult,shift", [(3, 1), (1, 3), (1_234_567, 22)])
def test_tsc2nsec_and_offset_options_match_trace_cmd(tmp_path, small, mult, shift):
    """x86-tsc traces carry TSC2NSEC (mult, shift); shift 3 makes many cross-CPU ties.  Plus
    the OFFSET and DATE options, which trace-cmd report also adds to every timestamp."""
    import copy
    import struct
    h = copy.copy(small.h)
    h.raw = dict(small.h.raw)
    h.raw["options"] = [(o, b) for o, b in small.h.raw["options"] if o not in (4, 7, 14)] + [
        (4, b"[x86-tsc] local global\n\0"), (14, struct.pack("<IIQ", mult, shift, 0)), (7, b"1000000000\0"),
        (1, b"0x5000000000\0")]        # DATE (record --date): microseconds, trace-cmd adds it too
    top = extract(small)[0][1]
    r = top[0]
    k = np.arange(0, len(r.ts), 2)
    cpu1 = W.Records(r.ts[k] + 3, r.data, r.off[k], r.len[k])
    out = str(tmp_path / "tsc.dat")
    W.write(out, h, [("", [r, cpu1])], version=6)
    t = TraceDat(out)
    assert t.meta.extra["tsc2nsec"]["mult"] == mult
    assert compare(t, out)["records"] == 2435 + len(k)
    if tp.use_compiled():
        assert_same_tables(t, TraceDat(out, compiled=False))
    import pyarrow as pa
    parts: dict = {}
    for name, b in TraceDat(out).iter_batches():
        parts.setdefault(name, []).append(b)
    for name in t.events():
        assert pa.Table.from_batches(parts[name]).sort_by("seq").equals(t.table(name)), name
