"""Shared text-reader machinery: integer parser, format sniffing, the known-event table.

The known-event table is checked against the format files inside the real
captures (through the trace.dat reader), so the text readers' types are the
kernel's, not our guess.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import analyzer
from analyzer.readers import known_events as ke
from analyzer.readers import sniff
from analyzer.readers.text_common import parse_ints, to_typed
from analyzer.readers.textsniff import sniff_text

from support.textcmp import CAPTURES, TEXT_DIR, capture, kernel_line, perf_line, report_line


def _py(s: str, bare_hex: bool = False):
    neg = s.startswith("-")
    body = s[1:] if neg else s
    base = 16 if body[:2].lower() == "0x" or (bare_hex and not neg) else 10
    digits = body[2:] if body[:2].lower() == "0x" else body
    if not re.fullmatch("[0-9a-fA-F]+" if base == 16 else "[0-9]+", digits) or \
            len(digits) > (16 if base == 16 else 20):
        return None
    v = int(digits, base)
    if v >= 1 << 64:
        return None
    return (-v) % (1 << 64) if neg else v


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.integers(-(1 << 63), (1 << 64) - 1).map(str),
    st.integers(0, (1 << 64) - 1).map(hex),
    st.integers(0, (1 << 64) - 1).map(lambda v: f"{v:x}"),
    st.text("0123456789abcdefxX-+ g", max_size=8),
    st.none()), max_size=40), st.booleans())
def test_parse_ints_agrees_with_python(values, bare_hex):
    arr = pa.array(values, type=pa.string())
    got, ok, neg, _ = parse_ints(arr, bare_hex=bare_hex)
    for v, g, k in zip(values, got.tolist(), ok.tolist()):
        want = None if v is None else _py(v, bare_hex)
        assert (g if k else None) == want, (v, g, k)


def test_to_typed_ranges_and_twos_complement():
    vals = pa.array(["-1", "0xffffffff", "4294967296", "2147483647", "-2147483649"])
    v, ok, neg, _ = parse_ints(vals)
    i32, _ = to_typed(v, ok, neg, pa.int32())
    u32, _ = to_typed(v, ok, neg, pa.uint32())
    assert i32.to_pylist() == [-1, -1, None, 2147483647, None]
    assert u32.to_pylist() == [4294967295, 4294967295, None, 2147483647, None]


@pytest.mark.parametrize("path", [capture(c) for c in CAPTURES] + [os.path.join(TEXT_DIR, "host-6.18-x86_64", "trace.dat")])
def test_known_events_match_real_format_files(path):
    """Every known event present in a real capture has exactly our field names, order and types."""
    t = analyzer.load(path)
    seen = 0
    for ev in t.events():
        known = ke.lookup(ev)
        if known is None:
            continue
        schema = t.table(ev).schema
        real = [(f.name, f.type) for f in schema][5:]
        ours = [(f.name, f.type) for f in known.fields if not f.optional or f.name in schema.names]
        assert real == ours, (path, ev)
        seen += 1
    assert seen >= 3
    # the name -> system table for other events agrees with the formats in the file
    mapped = 0
    for full, fmt in t.formats().items():
        guess = ke.full_name(fmt.name)
        if not guess.startswith(ke.UNKNOWN_SYSTEM + ":") and ke.lookup(fmt.name) is None:
            assert guess == full, (path, full, guess)
            mapped += 1
    assert mapped >= 10


def test_sniff_by_content_not_name(tmp_path):
    r = report_line("init", 1, 0, 10, "mm_page_free", "pfn=0x1 order=0")
    k = kernel_line("init", 1, 0, 10, "mm_page_free", "pfn=0x1 order=0")
    p = perf_line("init", 1, 0, 10, "kmem:mm_page_free", "pfn=0x1 order=0")
    cases = {
        "trace-cmd-report": ["cpus=2", r],
        "ftrace-text": ["# tracer: nop", k],
        "perf-script": [p, p],
    }
    for kind, lines in cases.items():
        f = tmp_path / "trace.dat"          # misleading name on purpose
        f.write_text("\n".join(lines) + "\n")
        assert sniff(str(f)) == kind
    assert sniff_text(((k + "\n") * 3).encode()) == "ftrace-text"            # trace_pipe: no header
    assert sniff_text(("CPU:1 [LOST 5 EVENTS]\n" + k + "\n").encode()) == "ftrace-text"
    assert sniff_text(("CPU:1 [5 EVENTS DROPPED]\n" + r + "\n").encode()) == "trace-cmd-report"
    assert sniff_text(("  inst: " + r.lstrip() + "\n").encode()) == "trace-cmd-report"
    assert sniff_text(b"hello world\n") is None
    assert sniff_text(b"\x00\x01binary") is None


def test_sniff_real_text_fixtures():
    d = os.path.join(TEXT_DIR, "host-6.18-x86_64")
    for f in sorted(os.listdir(d)):
        if f.endswith(".txt"):
            assert sniff(os.path.join(d, f)) == "ftrace-text", f
    d = os.path.join(TEXT_DIR, "perf-6.1-host-6.18")
    for f in sorted(os.listdir(d)):
        if f.endswith(".txt"):
            assert sniff(os.path.join(d, f)) == "perf-script", f


def test_known_table_is_one_place():
    """Names are unique and full names are system:name (the readers rely on both)."""
    assert len(ke.KNOWN) == len({e.full_name for e in ke.KNOWN.values()})
    assert ke.full_name("mm_page_alloc") == "kmem:mm_page_alloc"
    assert ke.full_name("no_such_event") == "unknown:no_such_event"
    assert ke.full_name("sched_switch") == "sched:sched_switch"
    assert ke.full_name("mm_compaction_isolate_migratepages") == "compaction:mm_compaction_isolate_migratepages"
    assert ke.lookup("kmem:setmt") is None and ke.lookup("pb:setmt") is ke.KNOWN["setmt"]
    assert np.dtype("uint64") == ke.KNOWN["mm_page_alloc"].field("pfn").type.to_pandas_dtype()


_REAL = {}


def _real_lines(name):
    if name not in _REAL:
        base = os.path.join(TEXT_DIR, *name.split("/"))
        with open(base, "rb") as f:
            _REAL[name] = f.read().split(b"\n")[:60]
    return _REAL[name]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["host-6.18-x86_64/trace-tgid-irqinfo.txt", "host-6.18-x86_64/trace_pipe-irqinfo.txt",
                        "perf-6.1-host-6.18/perf-script.txt"]),
       st.lists(st.tuples(st.integers(0, 59), st.integers(0, 200), st.binary(max_size=6)), max_size=4))
def test_mutated_real_text_only_raises_trace_format_error(tmp_path_factory, name, edits):
    """Cut / overwrite bytes of real text traces: the readers load them or raise TraceFormatError."""
    from analyzer.errors import TraceFormatError
    lines = list(_real_lines(name))
    for ln, col, junk in edits:
        line = lines[ln % len(lines)]
        lines[ln % len(lines)] = line[:col] + junk + line[col + len(junk):]
    p = tmp_path_factory.mktemp("fuzz") / "t.txt"
    p.write_bytes(b"\n".join(lines))
    try:
        t = analyzer.load(str(p))
        for ev in t.events():
            t.table(ev)
        _ = t.lost            # the lost-event table is built lazily: building it must not crash
    except TraceFormatError:
        pass
