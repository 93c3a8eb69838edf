"""perf.data reader on real captures (fixtures/perf/host-6.18): file, pipe, -z, pipe -z, lost.

When perf is installed every sample is compared with what perf itself decodes: the raw field
values from `perf script -s tests/support/perf_fields.py` (perf's embedded Python), and for pipe -z,
where perf 6.1's scripting returns nothing, the `perf script --ns` text.  The compiled and
the Python record walks must give identical tables, and hostile input must end in a
TraceFormatError (never a crash, hang or other exception).
"""
from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import analyzer
from analyzer.errors import TraceFormatError
from analyzer.readers import perfdata_walk as pw
from analyzer.readers import sniff
from analyzer.readers.perf_script import PerfScript
from analyzer.readers.perfdata import PerfData
from support.perf_pipe import pipe_records
from support.tools import requires_tool

pytestmark = pytest.mark.cext   # run again on the numpy paths (scripts/test)

HERE = os.path.dirname(__file__)
D = os.path.join(HERE, "..", "..", "fixtures", "perf", "host-6.18")
FILES = ["perf.data", "perf-z.data", "perf-pipe.data", "perf-pipe-z.data", "perf-lost.data"]
ORACLE = os.path.join(HERE, "..", "support", "perf_fields.py")
have_perf = shutil.which("perf") is not None
need_perf = requires_tool("perf")
need_c = pytest.mark.skipif(not pw.use_compiled(), reason="C perf.data walker not built")


def _path(name: str) -> str:
    return os.path.join(D, name)


def _rows(t: PerfData) -> list[str]:
    """Every sample as the oracle prints it, in the reader's seq order."""
    out = []
    for ev in t.events():
        for r in t.table(ev).to_pylist():
            vals = [r[k] for k in sorted(r) if k not in ("seq", "ts", "cpu", "pid", "comm")]
            out.append((r["seq"], "\t".join(map(str, [ev, r["cpu"], r["ts"], r["pid"], r["comm"], *vals]))))
    out.sort()
    assert [s for s, _ in out] == list(range(len(out)))
    return [x for _, x in out]


@pytest.mark.parametrize("name", FILES)
def test_real_files_load(name):
    p = _path(name)
    assert sniff(p) == "perf.data"
    t = analyzer.load(p)
    assert isinstance(t, PerfData)
    assert t.meta.kernel_release == "6.18.44-fc-v1272"
    assert t.meta.extra["pipe"] == ("pipe" in name)
    assert t.meta.compression == ("zstd" if "-z" in name else "none")
    assert sum(t.events().values()) > 1000
    a = t.table("kmem:mm_page_alloc")
    assert [str(x) for x in a.schema.types] == ["int64", "int64", "int32", "int32", "string",
                                                "uint64", "uint32", "uint64", "int32"]
    assert np.all(np.diff(a.column("seq").to_numpy()) > 0)
    assert np.all(np.diff(a.column("ts").to_numpy()) >= 0)


@need_perf
@pytest.mark.parametrize("name", ["perf.data", "perf-z.data", "perf-pipe.data", "perf-lost.data"])
def test_every_sample_equals_perf(name):
    """Field for field (raw values, comm, tid, cpu, ns time) and in perf's order."""
    p = _path(name)
    want = subprocess.run(["perf", "script", "-i", p, "-s", ORACLE], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    got = _rows(PerfData(p))
    assert len(got) == len(want) > 1000
    bad = [(a, b) for a, b in zip(got, want) if a != b]
    assert not bad, bad[:3]


@need_perf
def test_pipe_z_equals_perf_script_text(tmp_path):
    """perf 6.1's scripting yields nothing on pipe -z files; its text output does not."""
    p = _path("perf-pipe-z.data")
    txt = tmp_path / "out.txt"
    with open(txt, "w") as f:
        subprocess.run(["perf", "script", "--ns", "-i", p], stdout=f, stderr=subprocess.DEVNULL, check=True)
    t, x = PerfData(p), PerfScript(str(txt))
    assert t.events() == x.events()
    for ev in t.events():
        a, b = t.table(ev), x.table(ev)
        assert a.schema.names == b.schema.names
        for col in a.schema.names:
            yv = b.column(col)
            ok = yv.is_valid().to_numpy(zero_copy_only=False)
            if not ok.all():
                assert (ev, col) == ("kmem:mm_page_alloc", "gfp_flags")   # printed symbolically
            xs = [v for v, k in zip(a.column(col).to_pylist(), ok) if k]
            ys = [v for v, k in zip(yv.to_pylist(), ok) if k]
            assert xs == ys, (ev, col)


@need_perf
def test_lost_equals_perf_counters():
    """LOST records are perf's "lost N chunks"; per-CPU totals equal the kernel's counters (LOST_SAMPLES)."""
    p = _path("perf-lost.data")
    t = PerfData(p)
    dump = subprocess.run(["perf", "report", "-D", "-i", p], capture_output=True, text=True, check=True).stdout
    chunks = sorted((int(line.split()[0]), int(line.split()[1]), int(line.rsplit("lost:", 1)[1]))
                    for line in dump.splitlines() if "PERF_RECORD_LOST: id:" in line)
    kernel = sum(int(line.rsplit(":", 1)[1]) for line in dump.splitlines()
                 if "PERF_RECORD_LOST_SAMPLES" in line and "lost samples" in line)
    assert t.meta.extra["lost_chunks"] == len(chunks) > 0
    assert t.meta.extra["lost_samples"] == kernel > 0
    lost = t.lost.to_pandas()
    assert int(lost["count"].sum()) == kernel
    mine = sorted((int(r.cpu), int(r.ts_end), int(r["count"])) for _, r in lost.iterrows()
                  if r.ts_start == r.ts_end)
    assert mine == chunks                  # (cpu, time, count) of every PERF_RECORD_LOST
    assert set(lost["cpu"]) <= {0, 1}
    shown = subprocess.run(["perf", "script", "--show-lost-events", "-i", p], capture_output=True,
                           text=True, check=True).stdout
    assert shown.count("PERF_RECORD_LOST lost") == len(chunks)


@need_c
@pytest.mark.parametrize("name", FILES)
def test_c_and_python_walks_agree(name):
    a, b = PerfData(_path(name), compiled=True), PerfData(_path(name), compiled=False)
    assert b.meta.extra["walker"] == "python"
    assert a.events() == b.events()
    assert a.lost.equals(b.lost)
    for ev in a.events():
        assert a.table(ev).equals(b.table(ev)), ev




def test_compressed2_reads_like_compressed(tmp_path):
    """PERF_RECORD_COMPRESSED2 (u64 data size, 8-byte padding) gives the same samples."""
    data = Path(_path("perf-pipe-z.data")).read_bytes()
    out = bytearray(data[:16])
    n2 = 0
    for r, typ, size in pipe_records(data):
        rec = data[r:r + size]
        if typ == 81:
            payload = rec[8:]
            pad = (-len(payload)) % 8
            body = struct.pack("<Q", len(payload)) + payload + b"\0" * pad
            rec = struct.pack("<IHH", 83, 0, 8 + len(body)) + body
            n2 += 1
        out += rec
    assert n2 > 1
    p = tmp_path / "c2.data"
    p.write_bytes(bytes(out))
    a, b = PerfData(_path("perf-pipe-z.data")), PerfData(str(p))
    assert a.events() == b.events()
    for ev in a.events():
        assert a.table(ev).equals(b.table(ev))


def test_one_zstd_stream_across_records():
    """A decompressed record straddles two COMPRESSED records: per-record decompression would fail."""
    import zstandard
    data = Path(_path("perf-z.data")).read_bytes()
    t = PerfData(_path("perf-z.data"), compiled=False)     # record offsets in the decompressed stream
    w = t._segs[0].w
    sel = np.flatnonzero(w.o_type == 81)
    d = zstandard.ZstdDecompressor().decompressobj()
    ends_inside = 0
    total = 0
    for i in sel.tolist():
        off, size = int(w.o_off[i]), int(w.o_size[i])
        total += len(d.decompress(data[off + 8:off + size]))
        # does a record start exactly at `total` in the decompressed stream?
        ends_inside += total not in set(t._segs[1].w.s_off.tolist()) | set(t._segs[1].w.o_off.tolist())
    assert ends_inside > 0


@pytest.mark.parametrize("bad,msg", [
    (b"PERFILE2" + struct.pack("<Q", 104) + b"\0" * 20, "truncated perf.data header"),
    (b"2ELIFREP" + b"\0" * 200, "big-endian"),
    (b"PERFILE2" + struct.pack("<Q", 16), "no event attrs"),
])
def test_bad_headers(tmp_path, bad, msg):
    p = tmp_path / "x.data"
    p.write_bytes(bad)
    with pytest.raises(TraceFormatError, match=msg):
        analyzer.load(str(p))


def _decode_all(path: str, compiled: bool):
    t = PerfData(path, compiled=compiled)
    return t.events(), [t.table(ev) for ev in t.events()], t.lost


@pytest.mark.parametrize("name", ["perf.data", "perf-pipe-z.data", "perf-lost.data"])
def test_fuzz_mutations_are_format_errors(tmp_path, name):
    """Byte flips and truncations: a TraceFormatError or a readable file, in both walkers alike."""
    data = bytearray(Path(_path(name)).read_bytes())
    rng = random.Random(1234 + len(name))
    p = tmp_path / "m.data"
    walkers = [True, False] if pw.use_compiled() else [False]
    for k in range(40):
        m = bytearray(data)
        if k % 4 == 0:
            m = m[:rng.randrange(16, len(m))]
        else:
            for _ in range(rng.randrange(1, 8)):
                i = rng.randrange(len(m))
                m[i] = rng.randrange(256)
        p.write_bytes(bytes(m))
        outcomes = []
        for c in walkers:
            try:
                ev, tabs, _ = _decode_all(str(p), c)
                outcomes.append(("ok", ev, [t.num_rows for t in tabs]))
            except TraceFormatError:
                outcomes.append(("error",))
        assert all(o[0] == outcomes[0][0] for o in outcomes), (k, outcomes)


@need_c
def test_fuzz_walker_on_random_bytes():
    """The C walker on random and hostile buffers: ValueError or output, never a crash."""
    rng = np.random.default_rng(7)
    lay = pw.Layout.of(0x10587 | pw.S_CALLCHAIN | pw.S_READ, 8 | 4, True)
    for k in range(3000):
        n = int(rng.integers(0, 512))
        buf = rng.integers(0, 256, n, dtype=np.uint8)
        if n >= 8 and k % 2:           # plausible headers: sample type, small sizes
            buf[0:4] = [9, 0, 0, 0]
            buf[6:8] = [min(n, 255), 0]
        for c in (True, False):
            try:
                w = pw.walk(buf.tobytes(), 0, n, lay, compiled=c)
                assert np.all(w.s_raw + w.s_rawlen <= n)
            except pw.WalkError:
                pass


@need_c
def test_time_order_equals_stable_argsort():
    """The compiled run merge is numpy's stable argsort: runs of any count and length, ties."""
    rng = np.random.default_rng(11)
    cw = pw._cwalk
    for k in range(200):
        n = int(rng.integers(0, 3000))
        if k % 3 == 0:
            t = rng.integers(0, 50, n)                          # many ties, many runs
        else:                                                   # per-CPU chunks: a few sorted runs
            cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(0, 12))))
            t = np.concatenate([np.sort(p) for p in np.split(rng.integers(0, 1 << 40, n), cuts)]) if n else \
                np.zeros(0, np.int64)
        t = t.astype(np.uint64)
        if k % 5 == 1:
            t[::7] |= np.uint64(1 << 63)                        # hostile times: ordered as int64 like numpy
        assert np.array_equal(cw.time_order(t), np.argsort(t.view(np.int64), kind="stable")), k


@need_c
def test_take_strings_and_attr_of_check_their_input():
    cw = pw._cwalk
    names = pa.array(["a", "bc", ""], pa.string())
    off = np.frombuffer(names.buffers()[1], np.int32)[:4]
    cols = cw.take_strings(off, names.buffers()[2], [np.array([1, 0, 2, 1], np.int32), np.zeros(0, np.int32),
                                                     np.array([0], np.int32)])
    got = [pa.Array.from_buffers(pa.string(), len(o) - 1, [None, pa.py_buffer(o), pa.py_buffer(d)]).to_pylist()
           for o, d in cols]
    assert got == [["bc", "a", "", "bc"], [], ["a"]]
    for bad in ([3], [-1]):
        with pytest.raises(ValueError):
            cw.take_strings(off, names.buffers()[2], [np.array(bad, np.int32)])
    with pytest.raises(ValueError):
        cw.take_strings(np.array([0, 9], np.int32), b"abc", [np.array([0], np.int32)])
    ids = np.array([5, 9], np.uint64)
    assert cw.attr_of(np.array([9, 5, 9], np.uint64), ids, np.array([1, 0], np.int32)).tolist() == [0, 1, 0]
    with pytest.raises(ValueError):
        cw.attr_of(np.array([7], np.uint64), ids, np.array([1, 0], np.int32))


@need_c
def test_fixed_layout_walk_equals_python_on_random_bytes():
    """Sample types without variable parts take the compiled fast path: the same records as
    the Python walk, lean or not, on hostile buffers, and an error where it has one (the
    Python walk checks every header before the samples, so which error comes first may
    differ; the compiled walks, lean or not, report the same one)."""
    rng = np.random.default_rng(8)
    # (sample type, read format, where the RAW size sits)
    for st, rf, raw_at in ((0x10587, 0, 56), (0x10587 | pw.S_READ, 1 | 2, 80), (pw.S_RAW | pw.S_TIME, 0, 16)):
        lay = pw.Layout.of(st, rf, True)
        for k in range(1500):
            recs = []                   # a valid record chain; the bodies are random
            for _ in range(int(rng.integers(0, 8))):
                size = 8 * int(rng.integers(1, 16))
                r = rng.integers(0, 256, size, dtype=np.uint8)
                r[0:8] = [9 if rng.random() < 0.8 else 3, 0, 0, 0, 0, 0, size & 255, 0]
                if size >= raw_at + 4 and rng.random() < 0.8:   # a RAW size that fits, or just not
                    r[raw_at:raw_at + 4] = np.frombuffer(
                        struct.pack("<I", int(rng.integers(0, size - raw_at - 4 + 2))), np.uint8)
                recs.append(r)
            buf = np.concatenate(recs) if recs else np.zeros(0, np.uint8)
            if k % 5 == 0 and len(buf):                    # and sometimes a cut
                buf = buf[:int(rng.integers(0, len(buf)))]
            n = len(buf)
            got = []
            for c, lean in ((True, False), (True, True), (False, False)):
                try:
                    w = pw.walk(buf.tobytes(), 0, n, lay, compiled=c, lean=lean)
                    got.append(("ok", w.s_off.tolist(), w.s_time.tolist(), [] if lean else w.s_raw.tolist(),
                                [] if lean else w.s_rawlen.tolist(), w.o_off.tolist()))
                except pw.WalkError as e:
                    got.append(("error", e.msg, e.at))
            full_c, lean_c, py = got
            assert full_c[0] == py[0] and (full_c == py or py[0] == "error"), (st, k)
            assert lean_c[:3] == full_c[:3], (st, k)


@need_c
def test_change_positions_equal_searchsorted():
    """Comm change positions by the compiled merge walk equal the searchsorted definition:
    samples before the change's time, plus samples at that time earlier in the file."""
    rng = np.random.default_rng(5)
    cw = pw._cwalk
    for k in range(100):
        n, m = int(rng.integers(0, 400)), int(rng.integers(0, 30))
        t = rng.integers(0, 40, n).astype(np.uint64)
        s_off = np.sort(rng.choice(1 << 20, n, replace=False)).astype(np.int64) * 8
        order = np.argsort(t.view(np.int64), kind="stable")
        c_time = rng.integers(-2, 42, m).astype(np.int64)
        c_ord = (np.int64(1) << 48) | (rng.integers(0, 1 << 20, m).astype(np.int64) * 8 + 4)
        o = np.lexsort((c_ord, c_time))
        c_time, c_ord = c_time[o], c_ord[o]
        ords = (np.int64(1) << 48) | s_off
        ts = t.view(np.int64)
        want = [int(np.sum((ts < ct) | ((ts == ct) & (ords < co)))) for ct, co in zip(c_time, c_ord)]
        assert cw.change_pos(t, s_off, 1 << 48, order, c_time, c_ord).tolist() == want, k
    with pytest.raises(ValueError):            # unsorted changes: the caller's numpy path
        cw.change_pos(np.zeros(1, np.uint64), np.zeros(1, np.int64), 0, np.zeros(1, np.int64),
                      np.array([5, 1], np.int64), np.array([0, 0], np.int64))
