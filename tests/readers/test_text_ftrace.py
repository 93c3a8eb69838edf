"""Kernel text output (/sys/kernel/tracing/trace, trace_pipe) reader.

Real data: fixtures/text/host-6.18-x86_64 holds the same ring buffer printed by
the kernel with and without the irq-info and TGID columns, and extracted as
trace.dat; each text must give the binary reader's tables (ts within the
kernel's µs rounding; pointers and flag names are printed symbolically and are
null, reported in notes()).  Markers (LOST, buffer started) and odd comms are
written with the kernel's printf formats, checked first against the real file.
"""
from __future__ import annotations

import os

import pytest

import analyzer
from analyzer.errors import TraceFormatError
from analyzer.readers import sniff
from analyzer.readers.ftrace_text import FtraceText

from support.textcmp import TEXT_DIR, assert_same_as_binary, kernel_line

HOST = os.path.join(TEXT_DIR, "host-6.18-x86_64")
VARIANTS = {"trace-tgid-irqinfo.txt": (True, True), "trace-tgid-noirq.txt": (True, False),
            "trace-irqinfo.txt": (False, True), "trace-noirq.txt": (False, False)}


@pytest.mark.parametrize("fname", list(VARIANTS))
def test_kernel_text_equals_binary_reader_on_same_buffer(fname):
    path = os.path.join(HOST, fname)
    assert sniff(path) == "ftrace-text"
    t = analyzer.load(path)
    assert isinstance(t, FtraceText)
    tgid, irq = VARIANTS[fname]
    assert (t.meta.extra["tgid_column"], t.meta.extra["irq_info"]) == (tgid, irq)
    assert t.meta.cpus == 2 and t.meta.extra["entries_in_buffer"] == 213
    b = analyzer.load(os.path.join(HOST, "trace.dat"))
    checked = assert_same_as_binary(t, b, ts_tol=500)
    assert checked["records"] == 213
    assert t.events() == {"ftrace:print": 2, "kmem:mm_page_alloc": 86, "kmem:mm_page_free": 125}
    assert t.table("ftrace:print")["buf"].to_pylist() == ["mtaudit marker: a=1 b two words",
                                                          "second [marker] -5 [001] x"]
    notes = t.notes()
    assert notes["kmem:mm_page_alloc"]["unparsed_fields"]["gfp_flags"]["count"] == 86


def test_trace_pipe_without_header():
    path = os.path.join(HOST, "trace_pipe-irqinfo.txt")
    assert sniff(path) == "ftrace-text"
    t = analyzer.load(path)
    with open(path) as f:
        n = sum(1 for line in f if line.strip())
    assert sum(t.events().values()) == n == 182
    assert t.meta.cpus is None and t.meta.extra["source"].startswith("trace_pipe")
    a = t.table("mm_page_alloc")
    assert a.schema.field("pfn").type == "uint64" and a.column("pfn").null_count == 0


def test_generator_matches_real_kernel_lines():
    """kernel_line() rebuilds the kernel's lines from the trace.dat of the same buffer, byte for byte
    up to the body (tgid+irq-info and plain layouts); the flags are copied from the line."""
    b = analyzer.load(os.path.join(HOST, "trace.dat"))
    rows = {r["seq"]: (ev, r) for ev in b.events() for r in b.table(ev).to_pylist()}
    for fname, kw in [("trace-tgid-irqinfo.txt", {}), ("trace-noirq.txt", {"flags": None, "tgid": "none"})]:
        path = os.path.join(HOST, fname)
        with open(path) as f:
            real = [line.rstrip("\n") for line in f if not line.startswith("#")]
        assert len(real) == len(rows)
        for seq in range(len(real)):
            ev, r = rows[seq]
            name = "tracing_mark_write" if ev == "ftrace:print" else ev.split(":")[1]
            line = real[seq]
            if not kw:
                flags = line.split("] ", 1)[1].split(" ", 1)[0]
                tg = line.split("(", 1)[1].split(")", 1)[0].strip()     # TGID is not in trace.dat
                gen = kernel_line(r["comm"], r["pid"], r["cpu"], r["ts"], name, "", flags=flags,
                                  tgid=None if tg.startswith("-") else int(tg))
            else:
                gen = kernel_line(r["comm"], r["pid"], r["cpu"], r["ts"], name, "", **kw)
            assert line.startswith(gen.rstrip()), (line, gen)


def _write(tmp_path, lines):
    p = tmp_path / "trace"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


HEADER = ["# tracer: nop", "#", "# entries-in-buffer/entries-written: 5/9   #P:4", "#"]


def test_lost_and_buffer_started_markers(tmp_path):
    lines = HEADER + [
        "##### CPU 2 buffer started ####",
        kernel_line("kswapd0", 77, 2, 5_000_000_000, "mm_page_free", "page=000000001a2b3c4d pfn=0x10 order=0"),
        kernel_line("a", 1, 0, 4_000_000_000, "mm_page_free", "page=00000000deadbeef pfn=0x11 order=0"),
        "CPU:0 [LOST 17 EVENTS]",
        kernel_line("a", 1, 0, 6_000_000_000, "mm_page_free", "page=00000000deadbeef pfn=0x12 order=1"),
        kernel_line("b", 2, 1, 6_500_000_000, "mm_page_free", "page=00000000deadbeef pfn=0x13 order=0"),
        kernel_line("a", 1, 0, 7_000_000_000, "mm_page_free", "page=00000000deadbeef pfn=0x14 order=0"),
    ]
    t = analyzer.load(_write(tmp_path, lines))
    assert t.meta.cpus == 4 and t.meta.extra["entries_written"] == 9
    assert t.lost.to_pylist() == [
        {"cpu": 2, "ts_start": 4_000_000_000, "ts_end": 5_000_000_000, "count": -1},
        {"cpu": 0, "ts_start": 4_000_000_000, "ts_end": 6_000_000_000, "count": 17}]
    assert t.table("mm_page_free")["pfn"].to_pylist() == [0x10, 0x11, 0x12, 0x13, 0x14]


def test_odd_comms_tgid_unknown_and_four_char_flags(tmp_path):
    lines = HEADER + [
        kernel_line("my-app [x] 1", 300, 1, 1_000_001_000, "mm_page_alloc",
                    "page=0000000012345678 pfn=0x1c381d order=3 migratetype=4 gfp_flags=none",
                    flags="d..2", tgid=None),
        kernel_line("<...>", 301, 0, 1_000_002_000, "cma_release",
                    "name=reserved pfn=0x80000 page=00000000abcdef01 count=8192", flags="dNh1", tgid=300),
        kernel_line("sh", 5, 0, 1_000_003_000, "sched_process_exit", "comm=sh pid=5 prio=120", flags="....",
                    tgid=5),
    ]
    t = FtraceText(_write(tmp_path, lines))
    a = t.table("kmem:mm_page_alloc").to_pylist()[0]
    assert (a["comm"], a["pid"], a["cpu"], a["ts"]) == ("my-app [x] 1", 300, 1, 1_000_001_000)
    assert (a["pfn"], a["order"], a["migratetype"], a["gfp_flags"]) == (0x1C381D, 3, 4, 0)   # "none" is 0
    c = t.table("cma_release").to_pylist()[0]
    assert (c["comm"], c["name"], c["pfn"], c["count"], c["page"]) == ("<...>", "reserved", 0x80000, 8192, None)
    assert "hashed" in t.notes()["cma:cma_release"]["unparsed_fields"]["page"]["why"]
    e = t.table("sched_process_exit").to_pylist()[0]
    assert (e["comm"], e["pid"], e["prio"]) == ("sh", 5, 120)       # unknown event: inferred columns


def test_counter_clock_timestamps(tmp_path):
    line = "            bash-10631   [001] .....  123456789012: mm_page_free: page=0000000000000001 pfn=0x5 order=0"
    t = FtraceText(_write(tmp_path, HEADER + [line]))
    assert t.meta.extra["ts_unit"] == "counter"
    assert t.table("mm_page_free")["ts"].to_pylist() == [123456789012]


def test_bad_lines(tmp_path):
    good = kernel_line("a", 1, 0, 10_000, "mm_page_free", "page=0000000000000001 pfn=0x5 order=0")
    p = _write(tmp_path, HEADER + [good, good[:40]])
    with pytest.raises(TraceFormatError, match=r"line 6: not a kernel trace line"):
        FtraceText(p)
    p = _write(tmp_path, HEADER)
    with pytest.raises(TraceFormatError, match="no event lines"):
        FtraceText(p)


def test_stack_trace_lines_are_skipped(tmp_path):
    lines = HEADER + [
        kernel_line("a", 1, 0, 10_000, "mm_page_free", "page=0000000000000001 pfn=0x5 order=0"),
        " => free_unref_page+0x4c/0x1a0",
        " => __folio_put+0x30/0x50",
        kernel_line("a", 1, 0, 20_000, "mm_page_free", "page=0000000000000001 pfn=0x6 order=0"),
    ]
    t = FtraceText(_write(tmp_path, lines))
    assert t.events() == {"kmem:mm_page_free": 2} and t.meta.extra["stack_lines_skipped"] == 2
