"""`trace-cmd report` text reader on real captures, against the trace.dat reader.

The report outputs are made at test time by Debian's trace-cmd 3.1.6 from
fixtures/captures/*/trace.dat (default pretty print — with `[FAILED TO PARSE]`
on the arm64 captures —, `-R`, `-t -R`), parsed by ReportText and compared
record by record with the binary reader.  Layouts trace-cmd 3.1.6 cannot print
(3.3 flags column, -R glued flags, dropped-events lines) are built with the
same printf formats, checked against real 3.1.6 lines first.
"""
from __future__ import annotations

import os

import pytest

import analyzer
from analyzer.errors import TraceFormatError
from analyzer.readers import sniff
from analyzer.readers.report_text import ReportText

from support.textcmp import (CAPTURES, REPORT_VARIANTS, SYMBOLIC, assert_same_as_binary, capture, report, report_line)
from support.tools import requires_tool

needs_tracecmd = requires_tool("trace-cmd")

_BIN: dict = {}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    d = tmp_path_factory.mktemp("reports")
    return lambda name, variant: _report(d, name, variant)


def _report(d, name, variant):
    out = os.path.join(d, f"{name}.{variant}.txt")
    if not os.path.exists(out):
        report(capture(name), out, REPORT_VARIANTS[variant])
    return out


def binary(name):
    if name not in _BIN:
        _BIN.clear()          # keep one big capture in memory at a time
        _BIN[name] = analyzer.load(capture(name))
    return _BIN[name]


@needs_tracecmd
@pytest.mark.parametrize("variant", list(REPORT_VARIANTS))
@pytest.mark.parametrize("name", CAPTURES)
def test_report_text_equals_binary_reader(reports, name, variant):
    path = reports(name, variant)
    assert sniff(path) == "trace-cmd-report"
    t = analyzer.load(path)
    assert isinstance(t, ReportText)
    assert t.meta.cpus == 2
    assert t.meta.extra["report_layout"].startswith("3.1")
    ts_tol = 0 if variant == "tR" else 500       # -t prints ns; otherwise µs rounded
    assert t.meta.extra["ts_resolution_ns"] == (1 if variant == "tR" else 1000)
    checked = assert_same_as_binary(t, binary(name), ts_tol)
    assert checked["records"] > 2000 and checked["values"] > 2 * checked["records"]
    notes = t.notes()
    if variant == "default" and name.startswith("debian"):
        # arm64 kmem print formats use memstart_addr: trace-cmd prints [FAILED TO PARSE] + raw fields
        assert notes["kmem:mm_page_alloc"]["failed_to_parse_lines"] == t.events()["kmem:mm_page_alloc"]
    unparsed = {(ev, f) for ev, n in notes.items() for f in n.get("unparsed_fields", {})}
    assert unparsed <= SYMBOLIC
    failed = {ev for ev, n in notes.items() if n.get("failed_to_parse_lines")}
    if variant != "default" or not name.startswith("debian"):
        assert not failed


@needs_tracecmd
def test_counts_match_capture_event_counts(reports):
    """Per-event counts equal event-counts.txt written by the capture script (independent count)."""
    name = "debian-6.12-arm64-cma-churn"
    t = ReportText(reports(name, "R"))
    expected = {}
    with open(os.path.join(os.path.dirname(capture(name)), "event-counts.txt")) as f:
        for line in f:
            n, ev = line.split()
            if ev != "TOTAL":
                expected[ev.rstrip(":")] = int(n)
    got = {k.split(":", 1)[1]: v for k, v in t.events().items()}
    assert got == expected


@needs_tracecmd
@pytest.mark.parametrize("variant", ["tR", "R"])
def test_generator_matches_real_trace_cmd_lines(reports, variant):
    """report_line() rebuilds trace-cmd 3.1.6's lines from the binary reader's values, byte for byte
    up to the body (so the synthetic 3.3 layouts below only add what 3.3 adds)."""
    path = reports("custom-6.1-x86_64-cmadebugfs", variant)
    b = binary("custom-6.1-x86_64-cmadebugfs")
    with open(path) as f:
        real = f.read().splitlines()[1:]
    rows = sorted(((r, ev.split(":")[1]) for ev in b.events() for r in b.table(ev).to_pylist()),
                  key=lambda x: x[0]["seq"])
    assert len(rows) == len(real)
    for line, (r, name) in zip(real, rows):
        gen = report_line(r["comm"], r["pid"], r["cpu"], r["ts"], name, "", ns=variant == "tR", raw=True)
        assert line.startswith(gen.rstrip()), (line, gen)


# -- layouts trace-cmd 3.1.6 cannot print ------------------------------------------------------

def _write(tmp_path, lines, name="r.txt"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_trace_cmd_33_flags_column(tmp_path):
    ts = 12_345_678_901
    lines = ["cpus=4",
             report_line("kworker/u8:2", 42, 3, ts, "mm_page_alloc",
                         "page=0x1000 pfn=0x1000 order=2 migratetype=1 gfp_flags=GFP_KERNEL", flags="d..1."),
             report_line("my task -7 [9]", 4242, 0, ts + 1500, "mm_page_free", "page=0x1000 pfn=0x1000 order=2",
                         flags="....."),
             report_line("<idle>", 0, 1, ts + 2600, "mm_page_pcpu_drain",
                         "page=0x20 pfn=0x20 order=0 migratetype=-1", flags="dNh2.")]
    p = _write(tmp_path, lines)
    assert sniff(p) == "trace-cmd-report"
    t = analyzer.load(p)
    assert t.meta.extra["report_layout"].startswith("3.3")
    assert t.meta.cpus == 4
    a = t.table("mm_page_alloc").to_pylist()[0]
    assert (a["comm"], a["pid"], a["cpu"], a["ts"]) == ("kworker/u8:2", 42, 3, 12_345_679_000)
    assert (a["pfn"], a["order"], a["migratetype"], a["gfp_flags"]) == (0x1000, 2, 1, None)
    f = t.table("kmem:mm_page_free").to_pylist()[0]
    assert (f["comm"], f["pid"], f["cpu"], f["seq"]) == ("my task -7 [9]", 4242, 0, 1)
    d = t.table("mm_page_pcpu_drain").to_pylist()[0]
    assert (d["comm"], d["pid"], d["migratetype"]) == ("<idle>", 0, -1)


def test_trace_cmd_33_raw_glued_flags_and_hex_or_decimal(tmp_path):
    """-R in 3.3 glues `-0x%x` to the CPU; the same field may be printed hex in one event, decimal in another."""
    lines = ["cpus=2",
             report_line("sh", 10, 1, 5_000_000_123, "mm_page_alloc",
                         "pfn=0x56a91f order=0 gfp_flags=0x2800 migratetype=0", rflags=0x1, ns=True, raw=True),
             report_line("sh", 10, 1, 5_000_000_456, "mm_page_free", "pfn=213901 order=0", rflags=0x0,
                         ns=True, raw=True),
             report_line("sh", 10, 0, 5_000_000_789, "mm_page_free", "pfn=0x3438d order=0", rflags=0x9,
                         ns=True, raw=True),
             report_line("sh", 10, 0, 5_000_001_000, "setmt",
                         "__probe_ip=ffffcf397652e380 page=0xfffffc0000130000 flags=0 pfn=0x44c00 mask=7",
                         rflags=0x1, ns=True, raw=True)]
    t = analyzer.load(_write(tmp_path, lines))
    assert t.meta.extra["report_layout"].startswith("3.3")
    assert t.table("mm_page_alloc").to_pylist()[0]["gfp_flags"] == 0x2800
    assert t.table("mm_page_free")["pfn"].to_pylist() == [213901, 0x3438D]
    assert str(t.table("mm_page_free").schema.field("pfn").type) == "uint64"
    s = t.table("pb:setmt").to_pylist()[0]
    assert (s["__probe_ip"], s["page"], s["flags"], s["pfn"], s["mask"]) == (
        0xFFFFCF397652E380, 0xFFFFFC0000130000, 0, 0x44C00, 7)
    assert [r["ts"] for r in t.table("mm_page_free").to_pylist()] == [5_000_000_456, 5_000_000_789]


def test_events_dropped_lines_become_lost_windows(tmp_path):
    lines = ["cpus=2",
             report_line("a", 1, 0, 1_000_000_000, "mm_page_free", "pfn=0x1 order=0", ns=True),
             report_line("b", 2, 1, 1_500_000_000, "mm_page_free", "pfn=0x2 order=0", ns=True),
             "CPU:0 [1234 EVENTS DROPPED]",
             report_line("a", 1, 0, 2_000_000_000, "mm_page_free", "pfn=0x3 order=0", ns=True),
             "CPU:1 [EVENTS DROPPED]",
             report_line("b", 2, 1, 3_000_000_000, "mm_page_free", "pfn=0x4 order=0", ns=True)]
    t = analyzer.load(_write(tmp_path, lines))
    assert t.lost.to_pylist() == [
        {"cpu": 0, "ts_start": 1_000_000_000, "ts_end": 2_000_000_000, "count": 1234},
        {"cpu": 1, "ts_start": 1_500_000_000, "ts_end": 3_000_000_000, "count": -1}]
    assert t.events() == {"kmem:mm_page_free": 4}


def test_instance_prefix_and_unknown_event_inference(tmp_path):
    body_i = "prev_comm=kworker/0:1 prev_pid=12 prev_prio=120 prev_state=I ==> next_comm=swapper/0 next_pid=0"
    lines = ["cpus=2",
             "  inst: " + report_line("bash", 5, 0, 1_000_000_000, "sched_switch", body_i, ns=True).lstrip(),
             "  inst: " + report_line("bash", 5, 0, 1_000_001_000, "foo_event", "delta=-5 addr=0xffff0000 x=1",
                                      ns=True).lstrip()]
    t = analyzer.load(_write(tmp_path, lines))
    assert t.meta.buffers == ["inst"]
    sw = t.table("sched_switch")
    assert sw.schema.field("prev_pid").type == "int64"
    assert sw.to_pylist()[0]["prev_comm"] == "kworker/0:1"
    foo = t.table("unknown:foo_event").to_pylist()[0]
    assert (foo["delta"], foo["addr"], foo["x"]) == (-5, 0xFFFF0000, 1)
    assert str(t.table("foo_event").schema.field("addr").type) == "uint64"


def test_failed_to_parse_pretty_lines_are_read_and_reported(tmp_path):
    lines = ["cpus=1",
             report_line("init", 1, 0, 10, "mm_page_alloc",
                         "[FAILED TO PARSE] pfn=0x42db5 order=0 gfp_flags=0x100 migratetype=0"),
             report_line("init", 1, 0, 20, "cma_alloc_finish",
                         "name=my cma area pfn=0xffffffffffffffff page=(nil) count=8 align=3 errorno=-12")]
    t = analyzer.load(_write(tmp_path, lines))
    assert t.notes()["kmem:mm_page_alloc"]["failed_to_parse_lines"] == 1
    assert t.table("mm_page_alloc").to_pylist()[0]["gfp_flags"] == 0x100
    c = t.table("cma_alloc_finish").to_pylist()[0]
    assert (c["name"], c["pfn"], c["page"], c["count"], c["align"], c["errorno"]) == (
        "my cma area", 2**64 - 1, 0, 8, 3, -12)


@pytest.mark.parametrize("bad,why", [
    ("            init-1     [000]   148.723556 cma_alloc_start: name=x", "not a trace-cmd report line"),
    ("garbage", "not a trace-cmd report line"),
])
def test_bad_line_names_file_and_line(tmp_path, bad, why):
    lines = ["cpus=1", report_line("init", 1, 0, 10, "mm_page_free", "pfn=0x1 order=0"), bad]
    p = _write(tmp_path, lines)
    with pytest.raises(TraceFormatError) as e:
        ReportText(p)
    assert str(e.value).startswith(f"{p}: line 3: {why}")


def test_cpu_beyond_header_is_an_error(tmp_path):
    p = _write(tmp_path, ["cpus=1", report_line("init", 1, 3, 10, "mm_page_free", "pfn=0x1 order=0")])
    with pytest.raises(TraceFormatError, match="line 2: .*cpus=1"):
        ReportText(p)


def test_non_utf8_comm_and_crlf(tmp_path):
    """Comms are raw kernel bytes; a file may also have CRLF line ends (copied via Windows)."""
    good = report_line("init", 1, 0, 10, "mm_page_free", "pfn=0x1 order=0").encode()
    odd = report_line("ab?c", 2, 1, 20, "mm_page_free", "pfn=0x2 order=1").encode().replace(b"?", b"\xff")
    p = tmp_path / "r.txt"
    p.write_bytes(b"cpus=2\r\n" + good + b"\r\n" + odd + b"\r\n")
    t = ReportText(str(p))
    rows = t.table("mm_page_free").to_pylist()
    assert [r["comm"] for r in rows] == ["init", "ab\ufffdc"]
    assert [r["order"] for r in rows] == [0, 1] and t.meta.cpus == 2


def test_missing_known_field_is_reported(tmp_path):
    lines = ["cpus=1", report_line("init", 1, 0, 10, "mm_page_pcpu_drain", "pfn=0x1 order=0 migratetype=1"),
             report_line("init", 1, 0, 20, "mm_page_pcpu_drain", "pfn=0x2 order=0")]
    t = ReportText(_write(tmp_path, lines))
    assert t.table("mm_page_pcpu_drain")["migratetype"].to_pylist() == [1, None]
    assert t.notes()["kmem:mm_page_pcpu_drain"]["unparsed_fields"]["migratetype"]["count"] == 1
