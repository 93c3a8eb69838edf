"""Conformance of the trace.dat reader with Debian's `trace-cmd report -R -t` on real captures.

Every record's ts, cpu, pid, event name, position (seq) and every field value are compared
(see support.tracedat_oracle.compare).  Variants: the shipped v7+zstd captures, and v6 / v7
uncompressed conversions made here with `trace-cmd convert`.
"""
from __future__ import annotations

import os
import subprocess

import pytest

import analyzer
from analyzer.readers.tracedat import TraceDat

from support.tracedat_oracle import compare
from support.tools import requires_tool

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "captures")
CAPTURES = ["custom-6.1-x86_64-cmadebugfs", "debian-6.12-arm64-cma-churn", "debian-6.1-arm64-cma-churn"]

pytestmark = [requires_tool("trace-cmd"), pytest.mark.cext]


def capture(name: str) -> str:
    return os.path.join(ROOT, name, "trace.dat")


@pytest.mark.parametrize("name", CAPTURES)
def test_real_v7_zstd_capture_matches_trace_cmd(name):
    t = analyzer.load(capture(name))
    assert t.meta.file_version == 7 and t.meta.compression == "zstd"
    summary = compare(t, capture(name))
    assert summary["records"] > 2000
    assert summary["field_values"] > 2 * summary["records"]
    # the only values not compared: ftrace:print `ip`, which trace-cmd prints as a kallsyms name
    assert summary["skipped_symbolic"] == t.events().get("ftrace:print", 0)


@pytest.mark.parametrize("version,compression", [(6, "none"), (7, "none")])
@pytest.mark.parametrize("name", ["custom-6.1-x86_64-cmadebugfs", "debian-6.12-arm64-cma-churn"])
def test_converted_capture_matches_trace_cmd(tmp_path, name, version, compression):
    out = str(tmp_path / f"v{version}.dat")
    subprocess.run(["trace-cmd", "convert", "-i", capture(name), "-o", out, "--file-version", str(version),
                    "--compression", compression], check=True, capture_output=True)
    t = TraceDat(out)
    assert t.meta.file_version == version and t.meta.compression == compression
    compare(t, out)


def test_metadata_of_real_capture():
    t = analyzer.load(capture("debian-6.1-arm64-cma-churn"))
    m = t.meta
    assert m.kernel_release == "6.1.0-50-arm64"
    assert m.clock == "local"
    assert (m.cpus, m.page_size, m.long_size, m.endian) == (2, 4096, 8, "little")
    assert m.buffers == [""]
    drain = t.df("kmem:mm_page_pcpu_drain")
    assert list(drain.columns) == ["seq", "ts", "cpu", "pid", "comm", "pfn", "order", "migratetype"]
    assert str(t.table("kmem:mm_page_alloc").schema.field("pfn").type) == "uint64"
    assert str(t.table("kmem:mm_page_alloc").schema.field("migratetype").type) == "int32"
    names = set(t.table("cma:cma_alloc_start")["name"].to_pylist())
    assert names <= {"reserved", "hugetlb0", "hugetlb1"} and "reserved" in names
