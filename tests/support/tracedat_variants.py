"""Test helper: re-pack a real capture's records into other trace.dat layouts.

Records (timestamps + raw payload bytes) come from the real file via the reader's own page
walk; `to_big_endian` byte-swaps every field the format files describe, so the variant is
the same trace as a big-endian machine would have written it.  trace-cmd then judges it.
"""
from __future__ import annotations

import numpy as np

from analyzer.readers.tracedat import TraceDat
from analyzer.readers.tracedat_fields import field_kind
from support.tracedat_write import Records, records_from


def extract(t: TraceDat) -> list[tuple[str, list[Records]]]:
    """Per buffer, per CPU: the records of a parsed file."""
    return records_from(t)


def to_big_endian(t: TraceDat, bufs):
    """Byte-swap every numeric field (and __data_loc words) of every payload, per the formats."""
    for _, recs in bufs:
        for r in recs:
            if not len(r.ts):
                continue
            types = r.data[r.off[:, None] + np.arange(2)].copy().view("<u2").ravel()
            d = r.data
            for tid in np.unique(types).tolist():
                ev = t.h.by_id[tid]
                sel = r.off[types == tid]
                fields = list(t.h.common.values()) + ev.fields
                for f in fields:
                    k = field_kind(f)
                    size = 4 if (f.data_loc or f.rel_loc) else f.size
                    if (k == "int" or f.data_loc or f.rel_loc) and size > 1:
                        at = sel[:, None] + f.offset + np.arange(size)
                        d[at] = d[at][:, ::-1]
    return bufs
