"""`mtaudit events` and `mtaudit convert` through the command line.

Most cases call analyzer.cli.main in-process (no interpreter start-up per case);
test_real_subprocess_* run the real `python -m analyzer.cli` once for events and
once for bad input, to prove the exit code / one-line stderr end to end.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

import analyzer
from analyzer.readers.commands import read_converted

from support.textcmp import ROOT, TEXT_DIR, capture, report
from support.tools import requires_tool

SMALL = capture("custom-6.1-x86_64-cmadebugfs")
HOST_TEXT = os.path.join(TEXT_DIR, "host-6.18-x86_64", "trace-tgid-irqinfo.txt")


def mtaudit(*args: str) -> subprocess.CompletedProcess:
    from analyzer.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as e:          # argparse usage errors
            rc = int(e.code or 0)
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def real_mtaudit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_real_subprocess_events_and_bad_input(tmp_path):
    r = real_mtaudit("events", HOST_TEXT)
    assert r.returncode == 0 and "kmem:mm_page_alloc" in r.stdout and "format: ftrace-text" in r.stdout
    bad = tmp_path / "bad.txt"
    bad.write_text("cpus=1\n            init-1     [000]     1.000000: mm_page_free: pfn=0x1\nnot a line\n")
    for cmd in (["events", str(bad)], ["convert", str(bad), str(tmp_path / "out")]):
        r = real_mtaudit(*cmd)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines() == [f"mtaudit: {bad}: line 3: not a trace-cmd report line: 'not a line'"]


def test_events_on_real_trace_dat():
    r = mtaudit("events", SMALL)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "format: trace.dat" in out and "version: 7" in out and "compression: zstd" in out
    t = analyzer.load(SMALL)
    assert "cpus: 2" in out and f"clock: {t.meta.clock}" in out and f"kernel: {t.meta.kernel_release}" in out
    for ev, n in t.events().items():
        row = next(line for line in out.splitlines() if f" {ev} " in line)
        assert f" {n:,} " in row
    assert "kmem:mm_page_pcpu_drain" in out and "2,432" in out and "2,435" in out    # total
    assert "time span: 148.723555688 .. " in out
    assert "lost events: none recorded" in out


def test_events_on_kernel_text_reports_unparsed_fields():
    r = mtaudit("events", HOST_TEXT)
    assert r.returncode == 0, r.stderr
    assert "format: ftrace-text" in r.stdout and "cpus: 2" in r.stdout
    assert "kmem:mm_page_free" in r.stdout and "125" in r.stdout
    assert "kmem:mm_page_alloc.gfp_flags: 86 values not read" in r.stdout


def test_events_shows_lost_events(tmp_path):
    lines = ["cpus=2",
             "            init-1     [000]     1.000000: mm_page_free:         pfn=0x1 order=0",
             "CPU:0 [1234 EVENTS DROPPED]",
             "            init-1     [000]     2.000000: mm_page_free:         pfn=0x2 order=0"]
    p = tmp_path / "r.txt"
    p.write_text("\n".join(lines) + "\n")
    r = mtaudit("events", str(p))
    assert r.returncode == 0, r.stderr
    assert "lost events: CPU0: 1234 in 1 gap(s)" in r.stdout


@pytest.mark.parametrize("src", ["trace.dat", pytest.param("report-text", marks=requires_tool("trace-cmd")),
                                 "kernel-text"])
def test_convert_round_trip(tmp_path, src):
    if src == "trace.dat":
        path = SMALL
    elif src == "kernel-text":
        path = HOST_TEXT
    else:
        path = report(SMALL, str(tmp_path / "r.txt"), ["-t", "-R"])
    out = tmp_path / "out"
    r = mtaudit("convert", path, str(out))
    assert r.returncode == 0, r.stderr
    t = analyzer.load(path)
    meta, tables = read_converted(str(out))
    assert meta["trace"]["format"] == t.meta.format
    assert {k: v["count"] for k, v in meta["events"].items()} == t.events()
    assert meta["lost"] == t.lost.to_pylist()
    for ev, tab in tables.items():
        assert tab.equals(t.table(ev)), ev
    assert sorted(os.listdir(out)) == sorted([v["file"] for v in meta["events"].values()] + ["meta.json"])


def test_convert_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    assert mtaudit("convert", SMALL, str(out)).returncode == 0
    (out / "stale.parquet").write_bytes(b"old")
    before = sorted(os.listdir(out))
    bad = tmp_path / "bad.txt"
    bad.write_text("cpus=1\n            init-1     [000]     1.000000: mm_page_free: pfn=0x1\nnot a line\n")
    r = mtaudit("convert", str(bad), str(out))
    assert r.returncode == 2
    assert sorted(os.listdir(out)) == before                     # failed run left it alone
    assert mtaudit("convert", SMALL, str(out)).returncode == 0
    assert "stale.parquet" not in os.listdir(out)                # successful run replaced it
    assert json.loads((out / "meta.json").read_text())["schema_version"] == 1
    assert pq.read_table(out / "kmem.mm_page_pcpu_drain.parquet").num_rows == 2432


def test_convert_refuses_foreign_directory(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    r = mtaudit("convert", HOST_TEXT, str(out))
    assert r.returncode == 2 and "refusing to replace" in r.stderr
    assert (out / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("content,expect", [
    (b"", "empty file"),
    (b"hello\nworld\n", "not a trace.dat, ftrace text"),
    (b"cpus=2\n            init-1     [000]     1.000000: mm_page_free:         pfn=0x1 order=0\n"
     b"            init-1     [000]     1.0000", "line 3: not a trace-cmd report line"),
    (b"# tracer: nop\n            bash-10631   [001] .....   334.761025: mm_page_free: pfn=0x1\n"
     b"\x00\x00\x00", "not a trace.dat, ftrace text"),
])
@pytest.mark.parametrize("cmd", ["events", "convert"])
def test_bad_input_exits_2_with_one_line(tmp_path, content, expect, cmd):
    p = tmp_path / "in.txt"
    p.write_bytes(content)
    args = [cmd, str(p)] + ([str(tmp_path / "out")] if cmd == "convert" else [])
    r = mtaudit(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtaudit: ") and str(p) in lines[0] and expect in lines[0]
    assert not (tmp_path / "out").exists()


def test_directory_and_missing_file(tmp_path):
    for target in (str(tmp_path), str(tmp_path / "nope.dat")):
        r = mtaudit("events", target)
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
