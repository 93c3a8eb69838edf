"""`perf script` text reader, on a real perf 6.1 capture (fixtures/text/perf-6.1-host-6.18).

The capture's task renamed itself to `kw er-1 [x]:` (blank, dash-digit,
brackets, colon) to exercise the right-anchored comm parse.  When perf is
installed, the committed text is first re-derived from the committed perf.data
(so the fixture is what perf prints), and per-event counts are checked against
`perf script -F event`.
"""
from __future__ import annotations

import collections
import os
import shutil
import subprocess

import numpy as np
import pytest

import analyzer
from analyzer.errors import TraceFormatError
from analyzer.readers import sniff
from analyzer.readers.perf_script import PerfScript

from support.textcmp import TEXT_DIR, perf_line
from support.tools import requires_tool

D = os.path.join(TEXT_DIR, "perf-6.1-host-6.18")
FILES = ["perf-script.txt", "perf-script-ns.txt", "perf-script-pid-tid-ns.txt"]
have_perf = shutil.which("perf") is not None


def _perf(*args: str) -> str:
    return subprocess.run(["perf", "script", "-i", os.path.join(D, "perf.data"), *args],
                          capture_output=True, text=True, check=True).stdout


@requires_tool("perf")
def test_fixture_is_what_perf_prints_and_counts_match():
    with open(os.path.join(D, "perf-script-ns.txt")) as f:
        assert _perf("--ns") == f.read()
    counts = collections.Counter(line.strip().rstrip(":") for line in _perf("-F", "event").splitlines()
                                 if line.strip())
    t = analyzer.load(os.path.join(D, "perf-script-ns.txt"))
    assert t.events() == dict(counts)


@pytest.mark.parametrize("fname", FILES)
def test_real_perf_script(fname):
    path = os.path.join(D, fname)
    assert sniff(path) == "perf-script"
    t = analyzer.load(path)
    assert isinstance(t, PerfScript)
    assert t.events() == {"kmem:mm_page_alloc": 143, "kmem:mm_page_free": 6}
    a = t.table("kmem:mm_page_alloc")
    assert [str(x) for x in a.schema.types] == ["int64", "int64", "int32", "int32", "string",
                                                "uint64", "uint32", "uint64", "int32"]
    assert a.column("pfn").null_count == 0 and a.column("migratetype").null_count == 0
    comms = collections.Counter(a.column("comm").to_pylist())
    assert set(comms) == {"bash", "kw er-1 [x]:"}
    # the renamed task's tid, read off the text by a plain split after the known comm
    with open(path) as f:
        mine = [line.split("kw er-1 [x]: ", 1)[1].split()[0] for line in f if "kw er-1 [x]: " in line]
    tids = {int(x.split("/")[-1]) for x in mine}
    got = {r["pid"] for ev in t.events() for r in t.table(ev).to_pylist() if r["comm"] == "kw er-1 [x]:"}
    assert got == tids and len(tids) == 2     # bash and its $(...) subshell
    assert sum(1 for ev in t.events() for c in t.table(ev)["comm"].to_pylist() if c == "kw er-1 [x]:") == len(mine)
    notes = t.notes()
    assert notes["kmem:mm_page_alloc"]["unparsed_fields"]["gfp_flags"]["count"] == 143


def test_us_ns_and_pid_tid_variants_agree():
    us, ns, pt = (analyzer.load(os.path.join(D, f)) for f in FILES)
    for ev in ns.events():
        a, b, c = us.table(ev), ns.table(ev), pt.table(ev)
        d = b["ts"].to_numpy() - a["ts"].to_numpy()
        assert d.min() >= 0 and d.max() < 1000          # perf truncates to µs
        for col in b.schema.names:
            if col != "ts":
                assert a[col].to_pylist() == b[col].to_pylist() == c[col].to_pylist(), (ev, col)
        assert np.all(np.diff(b["seq"].to_numpy()) > 0)


def test_perf_65_layout_header_and_unknown_event(tmp_path):
    lines = ["# ========", "# captured on    : Thu Nov 27 05:51:00 2026", "# perf version : 6.12", "# ========", "",
             perf_line("Web Content", 1234567, 2, 9_000_000_123, "kmem:mm_page_alloc",
                       "page=0x1 pfn=0x1 order=9 migratetype=1 gfp_flags=none", ns=True, tid_width=7),
             perf_line("a-1 [2] b", 7, 0, 9_000_000_200, "sched:sched_wakeup",
                       "comm=foo bar pid=3 prio=120 target_cpu=001", ns=True, tid_width=7)]
    p = tmp_path / "perf.txt"
    p.write_text("\n".join(lines) + "\n")
    assert sniff(str(p)) == "perf-script"
    t = analyzer.load(str(p))
    a = t.table("mm_page_alloc").to_pylist()[0]
    assert (a["comm"], a["pid"], a["cpu"], a["ts"], a["order"], a["gfp_flags"]) == (
        "Web Content", 1234567, 2, 9_000_000_123, 9, 0)
    w = t.table("sched:sched_wakeup").to_pylist()[0]
    assert (w["comm"], w["pid"], w["prio"], w["target_cpu"]) == ("foo bar", 3, 120, 1)


def test_bad_perf_line(tmp_path):
    good = perf_line("x", 1, 0, 1000, "kmem:mm_page_free", "page=0x1 pfn=0x1 order=0")
    p = tmp_path / "perf.txt"
    p.write_text(good + "\n" + "   PERF_RECORD_LOST something\n")
    with pytest.raises(TraceFormatError, match=r"line 2: not a perf script tracepoint line"):
        PerfScript(str(p))


def test_sample_without_a_thread(tmp_path):
    """perf prints a sample it cannot tie to a thread as comm `:-1`, tid `-1`: three lines copied
    verbatim from `perf script` of a 30 M-sample capture of this machine (where the reader used to
    stop with "not a perf script tracepoint line")."""
    lines = [
        "          python 31050 [001] 12392.708131:          kmem:mm_page_free_batched: "
        "page=0x43214a pfn=0x43214a order=0",
        "             :-1    -1 [001] 12392.708166:                  kmem:mm_page_free: "
        "page=0x23e670 pfn=0x23e670 order=3",
        "          python 30960 [001] 12392.709549:                 kmem:mm_page_alloc: "
        "page=0x43214a pfn=0x43214a order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP",
    ]
    p = tmp_path / "perf.txt"
    p.write_text("\n".join(lines) + "\n")
    t = PerfScript(str(p))
    free = t.table("kmem:mm_page_free").to_pylist()
    assert [(r["comm"], r["pid"], r["cpu"], r["pfn"], r["order"]) for r in free] == [(":-1", -1, 1, 0x23e670, 3)]
    assert t.events() == {"kmem:mm_page_free_batched": 1, "kmem:mm_page_free": 1, "kmem:mm_page_alloc": 1}
