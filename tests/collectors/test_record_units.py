"""collectors/record parts that need no root: the trace.dat writer, the page reader, the
output directory rules, lost-event arithmetic and the probe definitions.

The writer is checked on real data: the ring-buffer pages and format files of a real capture
(fixtures/captures/custom-6.1-x86_64-cmadebugfs) are laid out as tracefs shows them, written
by tracedat_out, and read back: every table equals the original's.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analyzer.readers import tracedat_pages as tp
from analyzer.readers.tracedat import TraceDat
from collectors.record import bundle_out, events, tracedat_out
from collectors.record.pages import CpuReader
from collectors.record.run import RecordRefused, make_outdir

CAPTURE = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "captures", "custom-6.1-x86_64-cmadebugfs",
                       "trace.dat")


def _fake_tracefs(tmp: Path, src: TraceDat) -> tuple[str, str, list[str]]:
    """root/ and root/instances/x/ with the files tracefs has, taken from a real trace.dat."""
    h = src.h
    root = tmp / "tracing"
    inst = root / "instances" / "x"
    ev = inst / "events"
    ev.mkdir(parents=True)
    (ev / "header_page").write_bytes(h.raw["header_page"])
    (ev / "header_event").write_bytes(h.raw["header_event"])
    for raw in h.raw["ftrace"]:
        name = re.search(rb"^name:\s*(\S+)", raw, re.MULTILINE).group(1).decode()
        (ev / "ftrace" / name).mkdir(parents=True)
        (ev / "ftrace" / name / "format").write_bytes(raw)
    names = sorted(src.events())
    for system, formats in h.raw["events"]:
        for raw in formats:
            name = re.search(rb"^name:\s*(\S+)", raw, re.MULTILINE).group(1).decode()
            if f"{system}:{name}" in names:
                (ev / system / name).mkdir(parents=True)
                (ev / system / name / "format").write_bytes(raw)
    (root / "saved_cmdlines").write_bytes(h.raw["cmdlines"])
    (inst / "trace_clock").write_text(f"[{src.meta.clock or 'local'}] global counter\n")
    return str(root), str(inst), names


def test_writer_round_trips_real_pages(tmp_path):
    src = TraceDat(CAPTURE)
    root, inst, names = _fake_tracefs(tmp_path, src)
    raws = []
    for b in src.h.buffers:
        for cd in b.cpus:
            p = tmp_path / f"cpu{cd.cpu}.raw"
            with open(p, "wb") as f:
                f.writelines(block.tobytes() for block, _ in tp.iter_blocks(CAPTURE, src._mm, b, cd, src._dec, src.h.endian))
            raws.append(str(p))
    stats = {c: "entries: 0\noverrun: 0\n" for c in range(len(raws))}
    meta = tracedat_out.metadata(root, inst, names, src.h.page_size, len(raws), stats)
    out = tmp_path / "trace.dat"
    tracedat_out.write(str(out), meta, raws, src.h.page_size)
    got = TraceDat(str(out))
    assert got.h.version == 6 and got.meta.kernel_release == os.uname().release
    assert got.events() == src.events()
    for ev in names:
        a, b = got.table(ev), src.table(ev)
        # DATE/OFFSET options of the original shift its ts; everything else is the same bytes
        off = int(b.column("ts")[0].as_py()) - int(a.column("ts")[0].as_py()) if a.num_rows else 0
        assert [t - off for t in b.column("ts").to_pylist()] == a.column("ts").to_pylist()
        for col in a.schema.names:
            if col != "ts":
                assert a.column(col).equals(b.column(col)), (ev, col)
    if shutil.which("trace-cmd"):
        rep = subprocess.run(["trace-cmd", "report", "-i", str(out)], capture_output=True, text=True, check=True)
        assert sum(1 for ln in rep.stdout.splitlines() if not ln.startswith("cpus=")) == sum(src.events().values())
    with pytest.raises(FileExistsError):        # never over an existing file
        tracedat_out.write(str(out), meta, raws, src.h.page_size)


def test_page_reader_copies_whole_pages(tmp_path):
    src = tmp_path / "pipe"
    pages = [bytes([i]) * 4096 for i in range(5)] + [b"\x07" * 100]     # a short last read
    src.write_bytes(b"".join(pages))
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    r = CpuReader(0, str(src), fd, 4096)
    r.start()
    r.stop_and_drain()
    os.close(fd)
    data = (tmp_path / "out").read_bytes()
    assert len(data) == 6 * 4096 and r.pages == 6 and r.error is None
    assert data[:5 * 4096] == b"".join(pages[:5]) and data[5 * 4096:5 * 4096 + 100] == pages[5]


def test_output_directory_rules(tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(RecordRefused, match="already exists"):
        make_outdir(tmp_path / "exists")
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    with pytest.raises(RecordRefused, match="already exists"):
        make_outdir(tmp_path / "link")
    assert not (tmp_path / "elsewhere").exists()
    with pytest.raises(RecordRefused, match="no such directory"):
        make_outdir(tmp_path / "missing" / "run")
    fd = make_outdir(tmp_path / "new")
    os.close(fd)
    assert (tmp_path / "new").is_dir() and not os.listdir(tmp_path / "new")


def test_lost_from_stats_is_end_minus_start():
    start = "== /t/per_cpu/cpu0\noverrun: 5\ncommit overrun: 0\ndropped events: 1\n== /t/per_cpu/cpu1\noverrun: 0\n"
    end = "== /t/per_cpu/cpu0\noverrun: 9\ncommit overrun: 2\ndropped events: 1\n== /t/per_cpu/cpu1\noverrun: 3\n"
    assert bundle_out.lost_from_stats(start, end) == {"cpu0": 6, "cpu1": 3}


def test_probe_definitions_and_events(tmp_path):
    p, = events.default_probes("x86_64")
    assert p.definition == "p:pb/setmt set_pfnblock_flags_mask page=%di:x64 flags=%si:u64 pfn=%dx:x64 mask=%cx:u64"
    assert p.event == "pb:setmt" and p.filter == "mask == 7"
    assert "%x0" in events.default_probes("aarch64")[0].args
    assert events.default_probes("riscv64") == []
    for e in ("kmem/mm_page_alloc", "kmem/mm_page_free", "kmem/kmalloc", "page_isolation/test_pages_isolated"):
        (tmp_path / e).mkdir(parents=True)
        (tmp_path / e / "format").write_text("name: x\n")
    assert events.available_events(str(tmp_path)) == ["kmem:mm_page_alloc", "kmem:mm_page_free",
                                                      "page_isolation:test_pages_isolated"]


def test_perf_stop_kills_a_hung_recorder_and_says_its_file_is_incomplete():
    """A perf that ignores SIGINT past the wait is killed; that status must not pass as a finished file."""
    import sys
    import time

    from collectors.record import perfrec
    hung = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, "
                             "signal.SIG_IGN); print('up', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    assert hung.stdout is not None and hung.stdout.readline() == b"up\n"
    status, _cpu = perfrec.stop(hung, timeout=0.5)
    assert status == perfrec.KILLED and not perfrec.finished_file(status)
    polite = subprocess.Popen([sys.executable, "-c", "import time\ntry:\n time.sleep(60)\nexcept KeyboardInterrupt:\n"
                               " raise SystemExit(0)"])
    time.sleep(0.5)
    status, _cpu = perfrec.stop(polite, timeout=30)
    assert status == 0 and perfrec.finished_file(status) and perfrec.finished_file(-2)
