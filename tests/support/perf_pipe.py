"""Record boundaries of a pipe-mode perf.data, for tests that cut or rewrite its records."""
from __future__ import annotations

import struct

PERF_RECORD_HEADER_TRACING_DATA = 66   # its tracing data follows the record, sized by the record


def pipe_records(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, length including trailing data) of every record after the 16-byte pipe header."""
    out, r = [], 16
    while r < len(data):
        typ, _, size = struct.unpack_from("<IHH", data, r)
        extra = struct.unpack_from("<I", data, r + 8)[0] if typ == PERF_RECORD_HEADER_TRACING_DATA else 0
        out.append((r, typ, size + extra))
        r += size + extra
    return out
