"""The `perf record -z` stream: one zstd stream across COMPRESSED records, decoded by the C
walker with libzstd (zwalk) or, without it, by the zstandard module.

The files here are the real pipe -z capture (fixtures/perf/host-6.18) with its compressed
records re-cut: the same decompressed bytes split into frames at chosen points (records
straddling frames and COMPRESSED records), truncated, corrupted, or with a frame header that
lies about its size.  Readable variants must give the capture's own tables; the others a
TraceFormatError naming the compressed data (never a crash, hang or other exception), with
the compiled and the Python paths agreeing.
"""
from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from analyzer import cext
from analyzer.errors import TraceFormatError
from analyzer.readers import perfdata
from analyzer.readers import perfdata_walk as pw
from analyzer.readers.perfdata import PerfData
from support.perf_pipe import pipe_records

zstandard = pytest.importorskip("zstandard")

pytestmark = pytest.mark.cext   # run again on the numpy paths (scripts/test)

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "perf", "host-6.18", "perf-pipe-z.data")
has_zwalk = pw._cwalk is not None and hasattr(pw._cwalk, "zwalk")
need_zwalk = pytest.mark.skipif(not has_zwalk, reason="C perf.data walker built without libzstd")
# compiled (compact rows when zwalk is there), compiled with zwalk decoding in place, Python
WALKERS: list[bool | str] = ([True, "in place"] if has_zwalk else [True] if pw.use_compiled() else []) + [False]




def _split() -> tuple[bytes, bytes, bytes]:
    """(records before the first COMPRESSED one, the decompressed stream, the other records)."""
    data = Path(SRC).read_bytes()
    recs = pipe_records(data)
    first = next(r for r, t, _ in recs if t == 81)
    d = zstandard.ZstdDecompressor().decompressobj()
    stream = b"".join(d.decompress(data[r + 8:r + n]) for r, t, n in recs if t == 81)
    rest = b"".join(data[r:r + n] for r, t, n in recs if t != 81 and r > first)
    return data[:first], stream, rest


def _file(head: bytes, comp: bytes, rest: bytes, chunk: int = 60000) -> bytes:
    """A pipe -z file whose compressed stream is `comp`, cut into COMPRESSED records."""
    recs = []
    for i in range(0, len(comp), chunk):
        part = comp[i:i + chunk]
        recs.append(struct.pack("<IHH", 81, 0, 8 + len(part)) + part)
    return head + b"".join(recs) + rest


def _frames(stream: bytes, cuts: list[int], **kw) -> bytes:
    """stream as one zstd frame per piece between the cut points (concatenated frames)."""
    c = zstandard.ZstdCompressor(level=1, **kw)
    edges = [0, *sorted(cuts), len(stream)]
    return b"".join(c.compress(stream[a:b]) for a, b in zip(edges, edges[1:]))


def _read(path: str, compiled: bool | str):
    """events, tables and lost of one path (see WALKERS)."""
    keep = PerfData._row_keep
    if compiled == "in place":      # what files whose ids do not tell the attr get
        PerfData._row_keep = lambda self: None      # type: ignore[method-assign]
    try:
        t = PerfData(path, compiled=bool(compiled))
        return t.events(), {ev: t.table(ev) for ev in t.events()}, t.lost
    finally:
        PerfData._row_keep = keep   # type: ignore[method-assign]


@pytest.fixture(scope="module")
def parts():
    return _split()


@pytest.fixture(scope="module")
def want():
    return _read(SRC, False)


def _same(got, want) -> None:
    assert got[0] == want[0]
    assert got[2].equals(want[2])
    for ev in want[0]:
        assert got[1][ev].equals(want[1][ev]), ev


def test_records_straddling_frames_and_records_read_alike(tmp_path, parts, want):
    """Frames cut inside records (and inside record headers), compressed records of odd sizes."""
    head, stream, rest = parts
    rng = random.Random(5)
    cuts = [rng.randrange(1, len(stream)) for _ in range(40)] + [3, 8 + 5, len(stream) - 1]
    for chunk in (60000, 4093, 97):
        p = tmp_path / f"f{chunk}.data"
        p.write_bytes(_file(head, _frames(stream, cuts), rest, chunk))
        for c in WALKERS:
            _same(_read(str(p), c), want)


def _outcome(path: str) -> list[str]:
    """'ok' or the error's message per walker (the message is checked to name the compressed data)."""
    out = []
    for c in WALKERS:
        try:
            _read(path, c)
            out.append("ok")
        except TraceFormatError as e:
            assert "compressed data" in str(e), str(e)
            out.append("error")
    return out


def test_truncated_streams_are_format_errors(tmp_path, parts):
    """The stream ends inside a record: an error in both paths, not the tables read so far.

    (An unfinished last frame alone is normal: perf flushes its stream but never ends it.
    Cut right after a frame header, nothing is decoded at all: both paths read no samples.)"""
    head, stream, rest = parts
    comp = _frames(stream, [len(stream) // 2])
    rng = random.Random(9)
    p = tmp_path / "t.data"
    for cut in [len(comp) - 1, len(comp) - 100, len(comp) // 2]:
        p.write_bytes(_file(head, comp[:cut], rest))
        assert _outcome(str(p)) == ["error"] * len(WALKERS), cut
    for cut in [17] + [rng.randrange(1, len(comp)) for _ in range(8)]:
        p.write_bytes(_file(head, comp[:cut], rest))
        assert len(set(_outcome(str(p)))) == 1, cut


def test_corrupt_frames_never_crash(tmp_path, parts):
    """Random byte changes in the compressed payloads: an error or a readable file, both paths alike."""
    head, stream, rest = parts
    comp = bytearray(_frames(stream, [1000, len(stream) // 3]))
    rng = random.Random(21)
    p = tmp_path / "c.data"
    for _k in range(30):
        m = bytearray(comp)
        for _ in range(rng.randrange(1, 6)):
            m[rng.randrange(len(m))] = rng.randrange(256)
        p.write_bytes(_file(head, bytes(m), rest))
        res = _outcome(str(p))
        assert len(set(res)) == 1, res


@pytest.mark.parametrize("delta", [-1, 1, -4096, 1 << 20])
def test_frame_size_lie_is_an_error(tmp_path, parts, delta):
    """A frame header whose content size disagrees with its data: libzstd's check, an error."""
    head, stream, rest = parts
    n = 300000
    frame = bytearray(zstandard.ZstdCompressor(level=1, write_content_size=True).compress(stream[:n]))
    fhd = frame[4]                       # frame header descriptor (RFC 8878 3.1.1.1.1)
    assert fhd >> 6 == 2 and fhd & 3 == 0                        # a 4-byte content size, no dictionary id
    struct.pack_into("<I", frame, 5 if fhd & 0x20 else 6, n + delta)   # after the window descriptor, if any
    comp = bytes(frame) + zstandard.ZstdCompressor(level=1).compress(stream[n:])
    p = tmp_path / "lie.data"
    p.write_bytes(_file(head, comp, rest))
    assert _outcome(str(p)) == ["error"] * len(WALKERS)


def test_decompression_limit(tmp_path, parts, monkeypatch):
    """More decompressed bytes than the limit: refused, not decompressed to the end."""
    head, stream, rest = parts
    p = tmp_path / "big.data"
    p.write_bytes(_file(head, _frames(stream, []), rest))
    monkeypatch.setattr(perfdata, "MAX_DECOMPRESSED", len(stream) // 2)
    for c in WALKERS:
        with pytest.raises(TraceFormatError, match="decompresses to more than"):
            _read(str(p), c)


@need_zwalk
def test_zwalk_checks_its_arguments():
    cw = pw._cwalk
    lay = pw.Layout.of(0x10587, 0, True)
    buf = b"\0" * 64
    e64, e32 = np.zeros(0, np.uint64), np.zeros(0, np.int32)

    def call(parts, cap=1 << 20, lay=lay):
        return cw.zwalk(buf, np.asarray(parts, np.int64), cap, lay.sample_type, lay.read_fixed, lay.read_entry,
                        lay.sid_size, lay.sid_tid, lay.sid_time, lay.sid_cpu, e64, e64, e64, e32)

    for bad in ([0, 65], [-1, 4], [60, 8], [1 << 62, 1], [0]):
        with pytest.raises(ValueError, match="zwalk"):
            call(bad)
    with pytest.raises(ValueError, match="corrupt zstd"):
        call([0, 64])
    data, s_off, *_ = call(np.zeros(0, np.int64))
    assert len(data) == len(s_off) == 0


@need_zwalk
def test_zwalk_on_random_streams():
    """Valid zstd around random and plausible record bytes: an error or bounded output, never a crash."""
    cw = pw._cwalk
    rng = np.random.default_rng(3)
    lay = pw.Layout.of(0x10587 | pw.S_CALLCHAIN | pw.S_READ, 8 | 4, True)
    e64, e32 = np.zeros(0, np.uint64), np.zeros(0, np.int32)
    c = zstandard.ZstdCompressor(level=1)
    for k in range(1500):
        n = int(rng.integers(0, 2048))
        raw = rng.integers(0, 256, n, dtype=np.uint8)
        if n >= 8 and k % 2:
            raw[0:4] = [9, 0, 0, 0] if k % 4 == 1 else [66 if k % 8 == 3 else 71, 0, 0, 0]
            raw[6:8] = [min(n, 255), 0]
        comp = c.compress(raw.tobytes())
        cuts = sorted(int(x) for x in rng.integers(0, len(comp) + 1, int(rng.integers(0, 4))))
        edges = [0, *cuts, len(comp)]
        parts = np.array([[a, b - a] for a, b in zip(edges, edges[1:])], np.int64).reshape(-1)
        try:
            data, s_off, s_time, s_attr, o_off, o_type, o_size, o_time, o_cpu = cw.zwalk(
                comp, parts, 1 << 16, lay.sample_type, lay.read_fixed, lay.read_entry, lay.sid_size, lay.sid_tid,
                lay.sid_time, lay.sid_cpu, e64, e64, e64, e32)
        except ValueError:
            continue
        assert bytes(data) == raw.tobytes()
        assert np.all((s_off >= 0) & (s_off < len(data))) and np.all(o_off + o_size <= len(data))


def test_zwalk_is_built_where_ci_requires_it():
    """CI installs libzstd-dev (.ci/apt-packages.txt): a walker built without it must not pass silently."""
    if not cext.required():
        pytest.skip("MTAUDIT_REQUIRE_CEXT=1 not set: the zstandard path is allowed")
    assert has_zwalk


@need_zwalk
def test_compact_rows_fill_on_hostile_rows():
    """The fill pass over compact rows whose raw lengths, tids and offsets were damaged after the
    walk: a TraceFormatError or tables, never a read outside the rows."""
    rng = np.random.default_rng(17)
    for k in range(60):
        t = PerfData(SRC)
        seg = t._segs[1]
        assert seg.compact
        rows, w = seg.buf, seg.w
        i = rng.integers(0, len(w.s_off), 20)
        if k % 3 == 0:              # raw lengths: zero, huge, just short of the format
            for j, v in zip(i.tolist(), rng.choice([0, 1, 3, 1 << 31, (1 << 32) - 1], 20).tolist()):
                rows[w.s_off[j] + 8:w.s_off[j] + 12] = np.frombuffer(np.uint32(v).tobytes(), np.uint8)
        elif k % 3 == 1:            # offsets past the rows, negative, unaligned
            w.s_off[i] = rng.choice([len(rows), len(rows) - 3, -8, 1 << 40, 5], 20)
        else:                       # random bytes over whole rows
            for j in i.tolist():
                rows[w.s_off[j]:w.s_off[j] + 16] = rng.integers(0, 256, 16, dtype=np.uint8)
        try:
            tabs = [t.table(ev) for ev in t.events()]
            assert sum(x.num_rows for x in tabs) == len(w.s_off)
        except TraceFormatError:
            pass


def test_real_compressed2_file_equals_perf_script_text(tmp_path):
    """A real PERF_RECORD_COMPRESSED2 capture (perf 7.2 writes them; the perf 6.1 of the test
    machine cannot read them), against that perf's `perf script --ns` text stored beside it.

    Every column is equal but one case of comm: perf 7.2 prints ":tid" for the threads of the
    recorded workload itself where perf 6.1 prints the comm their COMM records set (it does
    so on 6.1's own files too); the reader follows perf 6.1 (test_perfdata.py checks it
    against 6.1), so there ours must be a name and theirs ":tid"."""
    import lzma

    from analyzer.readers.perf_script import PerfScript
    d = os.path.dirname(SRC)
    p = os.path.join(d, "perf-z-compressed2.data")
    data = Path(p).read_bytes()
    off, size = struct.unpack_from("<QQ", data, 40)
    types, r = set(), off
    while r < off + size:
        typ, _, n = struct.unpack_from("<IHH", data, r)
        types.add(typ)
        r += n
    assert 83 in types and 81 not in types           # COMPRESSED2 only
    txt = tmp_path / "script.txt"
    txt.write_bytes(lzma.decompress(Path(os.path.join(d, "perf-z-compressed2-script.txt.xz")).read_bytes()))
    x = PerfScript(str(txt))
    for c in WALKERS:
        evs, tabs, _lost = _read(p, c)
        assert evs == x.events() and sum(evs.values()) > 10000
        for ev in evs:
            a, b = tabs[ev], x.table(ev)
            assert a.schema.names == b.schema.names
            for col in a.schema.names:
                yv = b.column(col)
                ok = yv.is_valid().to_numpy(zero_copy_only=False)
                if not ok.all():
                    assert (ev, col) == ("kmem:mm_page_alloc", "gfp_flags")   # printed symbolically
                xs = [v for v, k in zip(a.column(col).to_pylist(), ok) if k]
                ys = [v for v, k in zip(yv.to_pylist(), ok) if k]
                if col == "comm":
                    tid = [v for v, k in zip(a.column("pid").to_pylist(), ok) if k]
                    diff = [(x, y, t) for x, y, t in zip(xs, ys, tid) if x != y]
                    assert all(y == f":{t}" and not x.startswith(":") for x, y, t in diff), (c, ev, diff[:3])
                    assert len({t for _, _, t in diff}) <= 6          # sh and its commands (the workload)
                    continue
                assert xs == ys, (c, ev, col)


@need_zwalk
def test_compact_rows_through_the_numpy_path(want):
    """Where the one-pass fill does not apply (samples in two segments, one event under two
    attrs) the numpy gathers read the compact rows: the same tables."""
    t = PerfData(SRC)
    assert t._segs[1].compact
    t._decode_c = lambda: False          # type: ignore[method-assign]
    got = t.events(), {ev: t.table(ev) for ev in t.events()}, t.lost
    _same(got, want)
