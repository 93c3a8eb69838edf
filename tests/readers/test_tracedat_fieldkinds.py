"""Field kinds the shipped captures have no records of, judged by trace-cmd.

Records of real formats from the x86_64 capture (sched_switch: fixed `char[16]` names,
pid_t, long; task_rename: short; sched_process_exec: `__data_loc char[]` of varying length)
are synthesised at the offsets the format files give, written as v6 little and big endian,
and compared field by field with `trace-cmd report -R -t`.
"""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from support import tracedat_write as W
from analyzer.readers.tracedat import TraceDat
from analyzer.readers.tracedat_fields import arrow_type

from support.tracedat_oracle import compare
from support.tracedat_variants import to_big_endian
from support.tools import requires_tool

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "captures")
SMALL = os.path.join(ROOT, "custom-6.1-x86_64-cmadebugfs", "trace.dat")

# TASK_COMM_LEN is 16 with the NUL: 15 characters at most (with 16, libtraceevent reads past
# the array and prints the next field's bytes; we cut at the array, see the test below)
NAMES = ["swapper/0", "kworker/u4:2 H", "[weird] name", "abcdefghijklmno", "sh", "a", "x y z"]
FILES = ["/bin/sh", "/usr/lib/very/long/path/" + "d" * 100 + "/prog", "", "/x"]


def _payload(ev, common, values: dict) -> bytes:
    fixed = max(f.offset + f.size for f in ev.fields)
    buf = bytearray(fixed)
    struct.pack_into("<HBBi", buf, 0, ev.id, 0, 0, values["common_pid"])
    tail = b""
    for f in ev.fields:
        v = values[f.name]
        if f.data_loc:
            s = v.encode() + b"\0"
            struct.pack_into("<I", buf, f.offset, (fixed + len(tail)) | (len(s) << 16))
            tail += s
        elif f.array_len:
            b = v.encode()[:f.size]
            buf[f.offset:f.offset + len(b)] = b
        else:
            struct.pack_into("<" + {1: "b", 2: "h", 4: "i", 8: "q"}[f.size] if f.signed else
                             "<" + {1: "B", 2: "H", 4: "I", 8: "Q"}[f.size], buf, f.offset, v)
    out = bytes(buf) + tail
    return out + b"\0" * (-len(out) % 4)


def _records(t: TraceDat, n: int, seed: int) -> list[W.Records]:
    rng = np.random.default_rng(seed)
    fm = t.formats()
    evs = [fm["sched:sched_switch"], fm["task:task_rename"], fm["sched:sched_process_exec"]]
    out = []
    for cpu in range(2):
        pays, ts = [], []
        now = 1_000_000_000 + cpu
        for _i in range(n):
            ev = evs[int(rng.integers(0, 3))]
            vals = {"common_pid": int(rng.integers(0, 5000))}
            for f in ev.fields:
                if f.data_loc:
                    vals[f.name] = FILES[int(rng.integers(0, len(FILES)))]
                elif f.array_len:
                    vals[f.name] = NAMES[int(rng.integers(0, len(NAMES)))]
                else:
                    lim = 1 << (8 * f.size - 1)
                    vals[f.name] = int(rng.integers(-lim if f.signed else 0, lim))
            pays.append(_payload(ev, t.h.common, vals))
            now += int(rng.integers(1, 5000))
            ts.append(now)
        lens = np.array([len(p) for p in pays], np.int64)
        offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        out.append(W.Records(np.array(ts, np.uint64), np.frombuffer(b"".join(pays), np.uint8).copy(), offs, lens))
    return out


@requires_tool("trace-cmd")
@pytest.mark.parametrize("endian", ["little", "big"])
def test_char_arrays_data_loc_and_signed_fields_match_trace_cmd(tmp_path, endian):
    src = TraceDat(SMALL)
    bufs = [("", _records(src, 3000, 11))]
    if endian == "big":
        bufs = to_big_endian(src, bufs)
    out = str(tmp_path / "f.dat")
    W.write(out, src.h, bufs, version=6, lay=W.Layout(endian=endian))
    t = TraceDat(out)
    s = compare(t, out)
    assert s["records"] == 6000 and s["skipped_symbolic"] == 0
    sw = t.table("sched:sched_switch")
    assert str(sw.schema.field("prev_comm").type) == "string"
    assert str(sw.schema.field("prev_state").type) == "int64"
    assert str(t.table("task:task_rename").schema.field("oom_score_adj").type) == "int16"
    names = set(sw["prev_comm"].to_pylist()) | set(sw["next_comm"].to_pylist())
    assert names == set(NAMES)
    assert set(t.table("sched:sched_process_exec")["filename"].to_pylist()) == set(FILES)


def test_char_array_without_nul_is_cut_at_its_width():
    from analyzer.readers.tracedat_fields import _strings_from_matrix
    mat = np.frombuffer(b"abcdefghijklmnop" + b"ab\0cdefghijklmno" + b"\0" * 16, np.uint8).reshape(3, 16)
    assert _strings_from_matrix(mat).to_pylist() == ["abcdefghijklmnop", "ab", ""]


def test_non_char_array_is_binary():
    kst = TraceDat(SMALL).formats()["ftrace:kernel_stack"]
    caller = next(f for f in kst.fields if f.name == "caller")
    assert (caller.array_len, caller.size) == (8, 64)
    assert str(arrow_type(caller)) == "binary"
