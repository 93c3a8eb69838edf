"""Format-file and header parsing units (the values feed every field gather)."""
from __future__ import annotations

import os

from analyzer.readers.tracedat import TraceDat
from analyzer.readers.tracedat_header import LazyEventFormat, parse_field, parse_header_page

SMALL = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "captures", "custom-6.1-x86_64-cmadebugfs",
                     "trace.dat")


def test_parse_field_declarations():
    f = parse_field("__data_loc char[] name", 8, 4, False)
    assert (f.name, f.data_loc, f.array_len, f.type) == ("name", True, None, "__data_loc char[]")
    f = parse_field("char comm[16]", 8, 16, True)
    assert (f.name, f.array_len, f.type) == ("comm", 16, "char[]")
    f = parse_field("unsigned long caller[8]", 16, 64, False)
    assert (f.name, f.array_len) == ("caller", 8)
    f = parse_field("char buf[]", 16, 0, True)
    assert (f.name, f.array_len) == ("buf", 0)
    f = parse_field("unsigned long pfn", 8, 8, False)
    assert (f.name, f.type, f.array_len, f.data_loc) == ("pfn", "unsigned long", None, False)
    f = parse_field("__rel_loc char[] msg", 8, 4, False)
    assert f.rel_loc and f.name == "msg"


def test_lazy_format_parses_on_demand_and_equals_itself():
    t = TraceDat(SMALL)
    ev = t.formats()["kmem:mm_page_pcpu_drain"]
    assert isinstance(ev, LazyEventFormat) and ev._parsed is None
    assert [(f.name, f.offset, f.size, f.signed) for f in ev.fields] == [
        ("pfn", 8, 8, False), ("order", 16, 4, False), ("migratetype", 20, 4, True)]
    assert "pfn=0x%lx" in ev.print_fmt and ev == ev and ev.full_name == "kmem:mm_page_pcpu_drain"


def test_header_page_for_32_bit_kernels():
    text = ("\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n"
            "\tfield: local_t commit;\toffset:8;\tsize:4;\tsigned:1;\n"
            "\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n"
            "\tfield: char data;\toffset:12;\tsize:4084;\tsigned:1;\n")
    ph = parse_header_page("x", text, 4, 0)
    assert (ph.commit_offset, ph.commit_size, ph.data_offset) == (8, 4, 12)
