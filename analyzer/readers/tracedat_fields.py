"""Field gathers: turn record payload offsets into typed columns using the trace's format files.

Offsets and sizes come only from the event's format (they move between kernels).  Numeric
fields are one vectorised gather each; fixed `char[N]` arrays are gathered as an (n, N) byte
matrix and cut at the first NUL without per-record Python; dynamic `__data_loc` data is rare
(cma names, trace_marker text) and decoded per record.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..errors import TraceFormatError
from .base import EventFormat, FieldFormat

_INT = {(1, False): pa.uint8(), (2, False): pa.uint16(), (4, False): pa.uint32(), (8, False): pa.uint64(),
        (1, True): pa.int8(), (2, True): pa.int16(), (4, True): pa.int32(), (8, True): pa.int64()}


def _is_char(f: FieldFormat) -> bool:
    t = f.type.replace("[]", "").replace("__data_loc", "").replace("__rel_loc", "").strip()
    return t in ("char", "unsigned char", "signed char", "u8", "s8", "const char")


def field_kind(f: FieldFormat) -> str:
    """'int' | 'str' (fixed char[N]) | 'dstr' (dynamic string) | 'bin' | 'dbin'."""
    if f.data_loc or f.rel_loc:
        return "dstr" if _is_char(f) else "dbin"
    if f.array_len is not None:
        if f.array_len == 0 or f.size == 0:     # `char buf[]`: runs to the end of the record
            return "dstr" if _is_char(f) else "dbin"
        return "str" if _is_char(f) else "bin"
    if (f.size, False) in _INT:
        return "int"
    return "bin"


def arrow_type(f: FieldFormat) -> pa.DataType:
    k = field_kind(f)
    if k == "int":
        return _INT[(f.size, bool(f.signed))]
    return pa.string() if k in ("str", "dstr") else pa.binary()


def column_name(f: FieldFormat, taken: set[str]) -> str:
    """Table column of a field: its name, with '_' appended if a common column has it (e.g. `cpu`)."""
    return f.name + "_" if f.name in taken else f.name


def schema_fields(ev: EventFormat, taken: set[str]) -> list[pa.Field]:
    return [pa.field(column_name(f, taken), arrow_type(f)) for f in ev.fields]


def gather_int(block: np.ndarray, at: np.ndarray, size: int, signed: bool, big: bool) -> np.ndarray:
    """Read `size`-byte integers at byte offsets `at` of `block` (any alignment)."""
    kind = "i" if signed else "u"
    dt = np.dtype(f"{'>' if big else '<'}{kind}{size}")
    if size == 1:
        v = block[at]
        return v.view(np.int8) if signed else v
    if len(at) and not np.any(at % size):
        v = block[:len(block) // size * size].view(dt)[at // size]
    else:
        v = block[at[:, None] + np.arange(size)].reshape(-1).view(dt)
    return v.astype(dt.newbyteorder("="), copy=False)


def _strings_from_matrix(mat: np.ndarray) -> pa.Array:
    """(n, N) bytes -> strings cut at the first NUL, built from buffers (no Python per row)."""
    n, width = mat.shape
    if n == 0:
        return pa.array([], pa.string())
    z = mat == 0
    lens = np.where(z.any(axis=1), z.argmax(axis=1), width).astype(np.int32)
    keep = np.arange(width)[None, :] < lens[:, None]
    flat = np.ascontiguousarray(mat[keep])
    offs = np.zeros(n + 1, np.int32)
    np.cumsum(lens, out=offs[1:])
    arr = pa.StringArray.from_buffers(n, pa.py_buffer(offs), pa.py_buffer(flat))
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        arr = pa.array([bytes(r[:k]).decode("utf-8", "replace") for r, k in zip(mat, lens)], pa.string())
    return arr


def _fixed_binary(mat: np.ndarray) -> pa.Array:
    n, width = mat.shape
    offs = (np.arange(n + 1, dtype=np.int64) * width).astype(np.int32)
    return pa.BinaryArray.from_buffers(n, pa.py_buffer(offs), pa.py_buffer(np.ascontiguousarray(mat).reshape(-1)))


def _ragged(block: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate block[starts[i]:starts[i]+sizes[i]] for all i in one gather; returns (bytes, offsets)."""
    sizes = np.asarray(sizes, np.int64)
    offs = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=offs[1:])
    idx = np.arange(offs[-1], dtype=np.int64) + np.repeat(np.asarray(starts, np.int64) - offs[:-1], sizes)
    return block[idx], offs


def _var_array(small: pa.DataType, large: pa.DataType, flat: np.ndarray, offs: np.ndarray) -> pa.Array:
    """Arrow (large_)string/binary array straight from bytes + offsets (no per-record objects)."""
    typ, odt = (small, np.int32) if offs[-1] < 2**31 else (large, np.int64)
    arr = pa.Array.from_buffers(typ, len(offs) - 1,
                                [None, pa.py_buffer(offs.astype(odt)), pa.py_buffer(np.ascontiguousarray(flat))])
    return arr


def column(block: np.ndarray, off: np.ndarray, ln: np.ndarray, f: FieldFormat, big: bool,
           path: str, where: str, file_off: int) -> pa.Array | np.ndarray:
    """One field of all records of one event type (payload offsets `off`, lengths `ln`)."""
    k = field_kind(f)
    if k in ("int", "str", "bin"):
        short = ln < f.offset + f.size
        if short.any():
            i = int(np.argmax(short))
            raise TraceFormatError(path, where, file_off + int(off[i]),
                                   f"record of {int(ln[i])} bytes is shorter than its format (field {f.name} "
                                   f"at {f.offset}+{f.size})")
    if k == "int":
        return gather_int(block, off + f.offset, f.size, f.signed, big)
    if k in ("str", "bin"):
        mat = block[(off + f.offset)[:, None] + np.arange(f.size)]
        return _strings_from_matrix(mat) if k == "str" else _fixed_binary(mat)
    # dynamic data: __data_loc / __rel_loc (u32 = offset | len << 16) or `type name[]` to record end
    if f.data_loc or f.rel_loc:
        short = ln < f.offset + 4
        if short.any():
            i = int(np.argmax(short))
            raise TraceFormatError(path, where, file_off + int(off[i]), f"record too short for field {f.name}")
        loc = gather_int(block, off + f.offset, 4, False, big).astype(np.int64)
        start = (loc & 0xFFFF) + (f.offset + 4 if f.rel_loc else 0)
        size = loc >> 16
    else:
        start = np.full(len(off), f.offset, np.int64)
        size = np.maximum(ln - f.offset, 0)
    bad = start + size > ln
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceFormatError(path, where, file_off + int(off[i]),
                               f"dynamic field {f.name} ({int(start[i])}+{int(size[i])}) outside its "
                               f"{int(ln[i])}-byte record")
    start = off + start
    if k != "dstr":
        flat, offs = _ragged(block, start, size)
        return _var_array(pa.binary(), pa.large_binary(), flat, offs)
    # C strings: cut each at its first NUL (found for all records with one searchsorted)
    flat, offs = _ragged(block, start, size)
    zpos = np.flatnonzero(flat == 0)
    j = np.searchsorted(zpos, offs[:-1])
    first = zpos[np.minimum(j, max(len(zpos) - 1, 0))] if len(zpos) else offs[1:]
    lens = np.where((j < len(zpos)) & (first < offs[1:]), first - offs[:-1], size)
    flat, offs = _ragged(block, start, lens)
    arr = _var_array(pa.string(), pa.large_string(), flat, offs)
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:       # not UTF-8: decode with replacement, as trace-cmd prints it
        arr = pa.array([flat[a:b].tobytes().decode("utf-8", "replace")
                        for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())], pa.string())
    return arr
