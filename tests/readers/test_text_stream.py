"""Streaming text readers (analyzer/readers/text_stream.py) on the real text fixtures.

A file above TextTrace.CHUNK_BYTES is parsed in line-aligned chunks and spilled; the
Trace it gives must be the one the whole-file parse gives: same tables (schema and
values, seq file-global), lost windows, notes, formats, meta, and errors naming the
file-global line.  Chunks are forced tiny here so that every fixture spans many.
"""
from __future__ import annotations

import gc
import glob
import json
import os

import pytest

from analyzer.errors import TraceFormatError
from analyzer.readers import load
from analyzer.readers.text_common import TextTrace

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXTS = sorted(glob.glob(os.path.join(ROOT, "fixtures", "text", "*", "*.txt")))


def _streamed(path: str, monkeypatch, chunk: int = 3000):
    monkeypatch.setattr(TextTrace, "CHUNK_BYTES", chunk)
    t = load(path)
    monkeypatch.undo()
    assert t._spill is not None, "the file should have been streamed"
    return t


@pytest.mark.parametrize("path", TEXTS, ids=[os.path.basename(p) for p in TEXTS])
def test_streamed_equals_whole_file(path, monkeypatch):
    whole = load(path)
    assert whole._spill is None
    s = _streamed(path, monkeypatch)
    assert len(s._spill._files) and max(len(v) for v in s._spill._files.values()) > 1   # really chunked
    assert s.events() == whole.events()
    for name in whole.events():
        a, b = whole.table(name), s.table(name)
        assert a.schema.equals(b.schema), name
        assert a.equals(b), name
        assert whole.table(name, ["seq", "ts"]).equals(s.table(name, ["seq", "ts"]))
        batches = [bt for n, bt in s.iter_batches([name], max_rows=7)]
        assert sum(bt.num_rows for bt in batches) == a.num_rows
        assert all(bt.schema.equals(a.schema) for bt in batches)
    assert s.lost.equals(whole.lost)
    assert s.notes() == whole.notes()
    assert s.formats() == whole.formats()
    assert s.meta.as_dict() == whole.meta.as_dict()


def test_lost_window_spanning_chunks(tmp_path, monkeypatch):
    """A lost marker whose neighbouring records on its CPU are in other chunks."""
    src = os.path.join(ROOT, "fixtures", "text", "host-6.18-x86_64", "trace_pipe-irqinfo.txt")
    with open(src) as f:
        lines = f.read().splitlines(keepends=True)
    mid = len(lines) // 2
    cpu = int(lines[mid].split("[", 1)[1].split("]", 1)[0])
    text = "".join(lines[:mid]) + f"CPU:{cpu} [LOST 42 EVENTS]\n" + "".join(lines[mid:])
    p = tmp_path / "lost.txt"
    p.write_text(text)
    whole = load(str(p))
    assert whole.lost.num_rows == 1 and whole.lost.column("count").to_pylist() == [42]
    for chunk in (500, 2000, 5000):
        s = _streamed(str(p), monkeypatch, chunk)
        assert s.lost.equals(whole.lost), chunk


def test_bad_line_in_a_later_chunk_names_its_file_line(tmp_path, monkeypatch):
    src = os.path.join(ROOT, "fixtures", "text", "perf-6.1-host-6.18", "perf-script.txt")
    with open(src) as f:
        lines = f.read().splitlines(keepends=True)
    at = len(lines) - 5
    p = tmp_path / "bad.txt"
    p.write_text("".join(lines[:at]) + "this is not a perf line\n" + "".join(lines[at:]))
    with pytest.raises(TraceFormatError) as whole:
        load(str(p))
    monkeypatch.setattr(TextTrace, "CHUNK_BYTES", 2000)
    before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    with pytest.raises(TraceFormatError) as streamed:
        load(str(p))
    assert str(streamed.value) == str(whole.value)
    assert f"line {at + 1}" in str(streamed.value)
    left = {d for d in set(os.listdir(os.environ.get("TMPDIR", "/tmp"))) - before if d.startswith("mtaudit-text-")}
    assert not left, "a failed parse must not leave its spill behind"


def test_spill_is_removed_with_the_trace(monkeypatch):
    s = _streamed(TEXTS[0], monkeypatch)
    d = s._spill.dir
    assert os.path.isdir(d) and os.listdir(d)
    del s
    gc.collect()
    assert not os.path.exists(d)


def test_analyze_json_of_streamed_text_equals_whole(monkeypatch):
    """The analysis of a streamed text capture says exactly what the whole-file one says."""
    from analyzer.analysis import analyze
    path = os.path.join(ROOT, "fixtures", "text", "debian-6.1-report-slice", "report-slice.txt")
    a = json.dumps(analyze(load(path)).summary(with_rows=True), default=str)
    b = json.dumps(analyze(_streamed(path, monkeypatch)).summary(with_rows=True), default=str)
    assert a == b
