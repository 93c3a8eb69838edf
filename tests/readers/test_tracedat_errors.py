"""Bad trace.dat input -> TraceFormatError naming the file, the section and the byte offset.

Each case damages a real capture (or a v6 re-pack of it) in one specific way; the fuzz test
then mutates the real files at random and checks that nothing but TraceFormatError escapes.
"""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import analyzer
from analyzer.errors import TraceFormatError
from analyzer.readers import tracedat_pages as tp
from support import tracedat_write as W
from analyzer.readers.tracedat import TraceDat

from support.tracedat_variants import extract

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "captures")
SMALL = os.path.join(ROOT, "custom-6.1-x86_64-cmadebugfs", "trace.dat")
SMALL_BYTES = open(SMALL, "rb").read()


def read_everything(path: str, compiled: bool | None = None, stream: bool = False) -> None:
    t = TraceDat(path, compiled=compiled)
    if stream:
        for _ in t.iter_batches():
            pass
        return
    for name in t.events():
        t.table(name)
    t.lost  # noqa: B018


def expect_error(tmp_path, data: bytes, section_part: str | None = None, name: str = "bad.dat",
                 compiled: bool | None = None) -> TraceFormatError:
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(TraceFormatError) as ei:
        read_everything(str(p), compiled)
    e = ei.value
    assert e.path == str(p) and str(p) in str(e)
    if section_part is not None:
        assert section_part in e.section, (e.section, str(e))
    return e


@pytest.fixture(scope="module")
def v6_bytes(tmp_path_factory):
    """The small capture re-packed as uncompressed v6 (pages directly in the file)."""
    t = TraceDat(SMALL)
    p = tmp_path_factory.mktemp("v6") / "v6.dat"
    W.write(str(p), t.h, extract(t), version=6)
    return p.read_bytes()


def _first_page_offset(data: bytes, path) -> int:
    path.write_bytes(data)
    t = TraceDat(str(path))
    return t.h.buffers[0].cpus[0].offset


def test_empty_file(tmp_path):
    e = expect_error(tmp_path, b"")
    assert "empty" in e.message
    with pytest.raises(TraceFormatError):
        analyzer.load(str(tmp_path / "bad.dat"))


def test_wrong_magic(tmp_path):
    e = expect_error(tmp_path, b"\x17\x08\x45tracing" + SMALL_BYTES[10:], "header")
    assert e.offset == 0 and "magic" in e.message


def test_unsupported_version(tmp_path):
    e = expect_error(tmp_path, SMALL_BYTES[:10] + b"8\0" + SMALL_BYTES[12:], "header")
    assert "version" in e.message and e.offset == 10


@pytest.mark.parametrize("cut", [11, 20, 36, 300, 5000])
def test_truncated_header_or_section(tmp_path, cut):
    e = expect_error(tmp_path, SMALL_BYTES[:cut])
    assert e.offset is not None


def test_truncated_page(tmp_path, v6_bytes):
    e = expect_error(tmp_path, v6_bytes[:-100], "cpu 0")
    assert "truncated" in e.message or "beyond end of file" in e.message


@pytest.mark.parametrize("compiled", [False, True] if tp.use_compiled() else [False])
def test_commit_beyond_page(tmp_path, v6_bytes, compiled):
    at = _first_page_offset(v6_bytes, tmp_path / "probe.dat")
    bad = bytearray(v6_bytes)
    struct.pack_into("<Q", bad, at + 8, 5000)
    e = expect_error(tmp_path, bytes(bad), "cpu 0", compiled=compiled)
    assert e.offset == at + 8 and "commit" in e.message


def test_unknown_compression(tmp_path):
    i = SMALL_BYTES.index(b"zstd\0")
    e = expect_error(tmp_path, SMALL_BYTES[:i] + b"lz9x\0" + SMALL_BYTES[i + 5:], "header")
    assert "lz9x" in e.message


@pytest.mark.parametrize("compiled", [False, True] if tp.use_compiled() else [False])
def test_missing_format_for_an_event(tmp_path, v6_bytes, compiled):
    at = _first_page_offset(v6_bytes, tmp_path / "probe.dat")
    bad = bytearray(v6_bytes)
    # first record on the first page: 4-byte header at +16, payload (common_type first) at +20
    struct.pack_into("<H", bad, at + 20, 65000)
    e = expect_error(tmp_path, bytes(bad), compiled=compiled)
    assert "65000" in e.message and "no format" in e.message


def test_corrupt_zstd_chunk(tmp_path):
    t = TraceDat(SMALL)
    cd = t.h.buffers[0].cpus[0]
    bad = bytearray(SMALL_BYTES)
    for k in range(20, 60):             # inside the first chunk's compressed bytes
        bad[cd.offset + 4 + 8 + k] ^= 0x5A
    e = expect_error(tmp_path, bytes(bad), "cpu 0")
    assert "zstd" in e.message or "decompressed" in e.message or "record" in e.message


def test_corrupt_compressed_section(tmp_path):
    bad = bytearray(SMALL_BYTES)
    for k in range(60, 90):             # inside the compressed HEADER_INFO section (starts at 37)
        bad[k] ^= 0xFF
    expect_error(tmp_path, bytes(bad))


# ---- property test: random damage to real files ---------------------------------------------

def _mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, a, c, n in ops:
        if not b:
            break
        a %= len(b)
        if kind == "flip":
            b[a] ^= (c % 255) + 1
        elif kind == "trunc":
            del b[a:]
        elif kind == "splice":
            c %= len(b)
            b[a:a + n] = b[c:c + n]
        elif kind == "zero":
            b[a:a + n] = bytes(len(b[a:a + n]))
    return bytes(b)


OPS = st.lists(st.tuples(st.sampled_from(["flip", "flip", "flip", "trunc", "splice", "zero"]),
                         st.integers(0, 1 << 30), st.integers(0, 1 << 30), st.integers(1, 64)),
               min_size=1, max_size=4)


@pytest.fixture(scope="module")
def fuzz_sources(v6_bytes, tmp_path_factory):
    """The real capture, its v6 re-pack, a big-endian 4-byte-long v6 and a two-buffer v7 (none)."""
    from support.tracedat_variants import to_big_endian
    t = TraceDat(SMALL)
    d = tmp_path_factory.mktemp("fz")
    W.write(str(d / "be.dat"), t.h, to_big_endian(t, extract(t)), version=6,
            lay=W.Layout(endian="big", long_size=4))
    top = extract(t)[0][1]
    r = top[0]
    k = np.arange(0, len(r.ts), 5)
    inst = [W.Records(r.ts[k] + 1, r.data, r.off[k], r.len[k])]
    W.write(str(d / "mb.dat"), t.h, [("", top), ("inst", inst)], version=7, compression="none")
    return {"v7zstd": SMALL_BYTES, "v6": v6_bytes, "v6be4": (d / "be.dat").read_bytes(),
            "v7mb": (d / "mb.dat").read_bytes()}


@settings(max_examples=int(os.environ.get("MTAUDIT_FUZZ_EXAMPLES", "200")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(src=st.sampled_from(["v7zstd", "v6", "v6be4", "v7mb"]), ops=OPS, compiled=st.booleans(), hot=st.booleans(),
       stream=st.booleans())
def test_fuzz_only_trace_format_error_escapes(tmp_path, fuzz_sources, src, ops, compiled, hot, stream):
    data = fuzz_sources[src]
    if hot:
        # aim at the interesting part: the page data of the v6 file / the chunk stream of v7
        lo = len(data) - min(len(data), 80_000)
        ops = [(k, lo + (a % (len(data) - lo)), c, n) for k, a, c, n in ops]
    bad = _mutate(data, ops)
    p = tmp_path / "fuzz.dat"
    p.write_bytes(bad)
    try:
        read_everything(str(p), compiled and tp.use_compiled(), stream)
    except TraceFormatError as e:
        assert e.path == str(p)


def test_fuzz_inputs_are_real_and_readable(fuzz_sources, tmp_path):
    """Guard for the property test: its unmutated sources decode to the full capture."""
    for name, data in fuzz_sources.items():
        p = tmp_path / f"{name}.dat"
        p.write_bytes(data)
        assert sum(TraceDat(str(p)).events().values()) == (2435 + 487 if name == "v7mb" else 2435)
    assert np.frombuffer(SMALL_BYTES[:3], np.uint8).tolist() == [0x17, 0x08, 0x44]
