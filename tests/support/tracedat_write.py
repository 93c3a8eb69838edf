"""Write trace.dat files (v6 or v7; little/big endian; 4/8-byte kernel long; none/zlib/zstd).

Test tooling, not shipped: it lives with the tests (and the ingest benchmark, which runs from a
checkout, borrows it).  Why a writer at all: the reader must be tested on layouts no capture here has
(big endian, 32-bit kernels, zlib, instances, lost-event pages, time extends, padding) and
the ingest benchmark needs a multi-million-event file.  Metadata (formats, cmdlines, uname,
clock...) is copied verbatim from a real file's parsed Header; only pages are synthesised,
with numpy, from (timestamp, payload) records.  `trace-cmd report` is the judge of the output.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from analyzer.readers.tracedat_header import (
    MAGIC, OPT_BUFFER, OPT_CMDLINES, OPT_EVENT_FORMATS, OPT_FTRACE_EVENTS, OPT_HEADER_INFO,
    OPT_KALLSYMS, OPT_PRINTK, Header,
)

MISSED_EVENTS, MISSED_STORED = 1 << 31, 1 << 30
KEEP_OPTIONS = (1, 2, 4, 5, 7, 8, 9, 11, 14)   # DATE CPUSTAT TRACECLOCK UNAME OFFSET CPUCOUNT VERSION TRACEID TSC2NSEC


@dataclass
class Records:
    """One CPU stream: timestamps (non-decreasing) and 4-byte-multiple payloads."""

    ts: np.ndarray                       # uint64
    data: np.ndarray                     # uint8, payloads back to back
    off: np.ndarray                      # int64 offset of each payload in `data`
    len: np.ndarray                      # int64 payload length (multiple of 4)
    lost: dict[int, int] = field(default_factory=dict)   # record index -> missed count (-1 unknown)
    pad: np.ndarray | None = None        # bool: put a padding record (carrying half the delta) before
    stamp: np.ndarray | None = None      # bool: put an absolute TIME_STAMP before


@dataclass
class Layout:
    endian: str = "little"
    long_size: int = 8                   # kernel long: commit word and lost count
    page_size: int = 4096

    @property
    def data_offset(self) -> int:
        return 8 + self.long_size


def pack_pages(r: Records, lay: Layout) -> bytes:
    """Records -> ring-buffer pages (vectorised; one Python step per page for the packing)."""
    n = len(r.ts)
    if n == 0:
        return b""
    ps, doff, ls = lay.page_size, lay.data_offset, lay.long_size
    big = lay.endian == "big"
    ts = r.ts.astype(np.uint64)
    ln = r.len.astype(np.int64)
    if np.any(ln % 4) or np.any(ln <= 0):
        raise ValueError("payload lengths must be positive multiples of 4")
    delta = np.zeros(n, np.int64)
    delta[1:] = (ts[1:] - ts[:-1]).astype(np.int64)
    hdr = np.where(ln <= 112, 4, 8)
    pad = r.pad if r.pad is not None else np.zeros(n, bool)
    stamp = r.stamp if r.stamp is not None else np.zeros(n, bool)
    ext = (delta >= (1 << 27)) & ~stamp
    pad = pad & ~ext & ~stamp
    pre = 8 * ext + 8 * pad + 8 * stamp            # bytes before the record header
    total = pre + hdr + ln
    cap = ps - doff - ls                            # always room for a stored lost count
    if int((hdr + ln).max()) > cap:
        raise ValueError("record larger than a page")
    cum = np.concatenate([[0], np.cumsum(total)])
    forced = np.array(sorted(k for k in r.lost if 0 < k < n), np.int64)
    starts = []
    i = 0
    while i < n:
        starts.append(i)
        first = int(hdr[i] + ln[i])                 # the first record of a page needs no prefix
        j = int(np.searchsorted(cum, cap - first + cum[i + 1], side="right")) - 1
        j = max(j, i + 1)
        k = int(np.searchsorted(forced, i, side="right"))
        if k < len(forced):
            j = min(j, int(forced[k]))
        i = min(j, n)
    starts = np.array(starts, np.int64)
    npages = len(starts)
    page = np.repeat(np.arange(npages), np.diff(np.append(starts, n)))
    is_first = np.zeros(n, bool)
    is_first[starts] = True
    pre = np.where(is_first, 0, pre)
    eff = pre + hdr + ln
    E = np.concatenate([[0], np.cumsum(eff)])
    pos = page * ps + doff + (E[:-1] - E[starts][page])     # absolute offset of the record's prefix
    used = (E[np.append(starts[1:], n)] - E[starts]).astype(np.int64)
    out = np.zeros(npages * ps, np.uint8)
    W = out.view(">u4" if big else "<u4")

    def word(tl, d):
        return (tl << 27) | d if big else tl | (d << 5)

    rdelta = np.where(is_first, 0, delta)
    e = np.flatnonzero(ext & ~is_first)                     # TIME_EXTEND carries the whole delta
    W[pos[e] // 4] = word(30, rdelta[e] & ((1 << 27) - 1))
    W[pos[e] // 4 + 1] = rdelta[e] >> 27
    p = np.flatnonzero(pad & ~is_first)                     # padding carries half the delta
    half = rdelta[p] // 2
    W[pos[p] // 4] = word(29, half)
    W[pos[p] // 4 + 1] = 4
    s = np.flatnonzero(stamp & ~is_first)                   # absolute stamp, low 59 bits
    tsv = ts[s].astype(np.int64) & ((1 << 59) - 1)
    W[pos[s] // 4] = word(31, tsv & ((1 << 27) - 1))
    W[pos[s] // 4 + 1] = tsv >> 27
    rdelta = rdelta.copy()
    rdelta[e] = 0
    rdelta[s] = 0
    rdelta[p] -= half
    hpos = pos + pre
    tl = np.where(hdr == 4, ln // 4, 0)
    W[hpos // 4] = word(tl, rdelta)
    lg = np.flatnonzero(hdr == 8)
    W[hpos[lg] // 4 + 1] = ln[lg] + 4
    ppos = hpos + hdr
    for L in np.unique(ln).tolist():
        sel = np.flatnonzero(ln == L)
        src = r.off[sel][:, None] + np.arange(L)
        out[ppos[sel][:, None] + np.arange(L)] = r.data[src]
    # page headers
    pbase = np.arange(npages, dtype=np.int64) * ps
    e8 = ">u8" if big else "<u8"
    pts = ts[starts]
    commit = used.astype(np.uint64)
    lostv = np.zeros(npages, np.int64)
    for k, cnt in r.lost.items():
        if 0 <= k < n:
            pg = int(page[k])
            commit[pg] |= np.uint64(MISSED_EVENTS | (MISSED_STORED if cnt >= 0 else 0))
            lostv[pg] = cnt
    hdr_bytes = np.zeros((npages, doff), np.uint8)
    hdr_bytes[:, :8] = pts.astype(e8).view(np.uint8).reshape(-1, 8)
    cw = commit.astype(e8) if ls == 8 else commit.astype(">u4" if big else "<u4")
    hdr_bytes[:, 8:8 + ls] = cw.view(np.uint8).reshape(-1, ls)
    out.reshape(npages, ps)[:, :doff] = hdr_bytes
    stored = np.flatnonzero(lostv > 0)
    if len(stored):
        at = pbase[stored] + doff + used[stored]
        lv = lostv[stored].astype(e8 if ls == 8 else (">u4" if big else "<u4")).view(np.uint8).reshape(-1, ls)
        out[at[:, None] + np.arange(ls)] = lv
    return out.tobytes()


def adapt_header_page(text: bytes, long_size: int, page_size: int = 4096) -> bytes:
    """header_page text for a kernel with `long_size`-byte longs (commit and data offsets)."""
    t = text.decode("latin-1")
    t = re.sub(r"(local_t commit;\s*offset:8;\s*size:)\d+", rf"\g<1>{long_size}", t)
    t = re.sub(r"(char data;\s*offset:)\d+(;\s*size:)\d+", lambda m: f"{m.group(1)}{8 + long_size}{m.group(2)}"
               f"{page_size - 8 - long_size}", t)
    return t.encode("latin-1")


class _W:
    def __init__(self, endian: str):
        self.e = "<" if endian == "little" else ">"
        self.parts: list[bytes] = []
        self.n = 0

    def put(self, b: bytes) -> int:
        at = self.n
        self.parts.append(b)
        self.n += len(b)
        return at

    def pack(self, fmt: str, *v) -> int:
        return self.put(struct.pack(self.e + fmt, *v))

    def align(self, a: int) -> None:
        if self.n % a:
            self.put(b"\0" * (a - self.n % a))

    def patch(self, at: int, fmt: str, *v) -> None:
        """Overwrite bytes at absolute offset `at` (used for forward offsets)."""
        data = struct.pack(self.e + fmt, *v)
        pos = 0
        for i, p in enumerate(self.parts):
            if pos <= at < pos + len(p):
                k = at - pos
                self.parts[i] = p[:k] + data + p[k + len(data):]
                return
            pos += len(p)
        raise ValueError("patch offset out of range")


def _reorder(oid: int, body: bytes, src: str, dst: str) -> bytes:
    """Binary options (CPUCOUNT u32, TRACEID u64, TSC2NSEC u32 u32 u64) in the output byte order."""
    fmt = {8: "I", 11: "Q", 14: "IIQ"}.get(oid)
    if fmt is None or src == dst or len(body) != struct.calcsize("<" + fmt):
        return body
    a, b = ("<", ">") if src == "little" else (">", "<")
    return struct.pack(b + fmt, *struct.unpack(a + fmt, body))


def _compress(kind: str, data: bytes) -> bytes:
    if kind == "zlib":
        return zlib.compress(data, 6)
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=3, write_content_size=False).compress(data)
    raise ValueError(kind)


def _meta_blocks(h: Header, lay: Layout, e: str) -> dict[str, bytes]:
    """Verbatim metadata payloads (identical bodies in v6 blocks and v7 sections)."""
    def u(fmt, *v):
        return struct.pack(e + fmt, *v)

    hp = adapt_header_page(h.raw["header_page"], lay.long_size, lay.page_size)
    he = h.raw["header_event"]
    out = {"header": b"header_page\0" + u("Q", len(hp)) + hp + b"header_event\0" + u("Q", len(he)) + he}
    ft = h.raw.get("ftrace", [])
    out["ftrace"] = u("I", len(ft)) + b"".join(u("Q", len(t)) + t for t in ft)
    ev = h.raw.get("events", [])
    out["events"] = u("I", len(ev)) + b"".join(
        s.encode() + b"\0" + u("I", len(ts)) + b"".join(u("Q", len(t)) + t for t in ts) for s, ts in ev)
    out["kallsyms"] = u("I", 0)
    pk = h.raw.get("printk", b"")
    out["printk"] = u("I", len(pk)) + pk
    cl = h.raw.get("cmdlines", b"")
    out["cmdlines"] = u("Q", len(cl)) + cl
    return out


def write(path: str, h: Header, buffers: list[tuple[str, list[Records]]], version: int = 6,
          compression: str = "none", lay: Layout | None = None, chunk_pages: int = 10) -> None:
    """Write a trace.dat with the metadata of `h` and the given buffers (first = top buffer)."""
    lay = lay or Layout(page_size=h.page_size)
    w = _W(lay.endian)
    e = w.e
    blocks = _meta_blocks(h, lay, e)
    pages = [[pack_pages(r, lay) for r in recs] for _, recs in buffers]
    ncpu = max(len(recs) for _, recs in buffers)
    w.put(MAGIC)
    w.put(f"{version}\0".encode())
    w.pack("BBI", 1 if lay.endian == "big" else 0, lay.long_size, lay.page_size)
    opts = [(oid, _reorder(oid, body, h.endian, lay.endian)) for oid, body in h.raw.get("options", [])
            if oid in KEEP_OPTIONS]
    if version == 6:
        for k in ("header", "ftrace", "events", "kallsyms", "printk", "cmdlines"):
            w.put(blocks[k])
        w.pack("I", ncpu)
        w.put(b"options  \0")
        buf_at = []
        for oid, body in opts:
            w.pack("HI", oid, len(body))
            w.put(body)
        for name, _ in buffers[1:]:
            body = struct.pack(e + "Q", 0) + name.encode() + b"\0"
            w.pack("HI", OPT_BUFFER, len(body))
            buf_at.append(w.put(body))
        w.pack("H", 0)
        w.put(b"flyrecord\0")
        tables = [w.put(b"\0" * 16 * ncpu)]
        for i, _buf in enumerate(buffers[1:]):
            w.patch(buf_at[i], "Q", w.n)
            w.put(b"flyrecord\0")
            tables.append(w.put(b"\0" * 16 * ncpu))
        for bi, pgs in enumerate(pages):
            for cpu in range(ncpu):
                data = pgs[cpu] if cpu < len(pgs) else b""
                w.align(lay.page_size)
                at = w.put(data)
                w.patch(tables[bi] + 16 * cpu, "QQ", at, len(data))
    else:
        _write_v7(w, h, lay, blocks, opts, buffers, pages, compression, chunk_pages)
    with open(path, "wb") as f:
        for p in w.parts:
            f.write(p)


def _write_v7(w: _W, h: Header, lay: Layout, blocks: dict, opts: list, buffers: list, pages: list,
              compression: str, chunk_pages: int) -> None:
    e = w.e
    comp = compression != "none"
    w.put(compression.encode() + b"\0" + (b"1.0" if comp else b"") + b"\0")
    first_opt = w.pack("Q", 0)

    def section(sid: int, body: bytes, compress: bool) -> int:
        at = w.n
        if compress:
            c = _compress(compression, body)
            payload = struct.pack(e + "II", len(c), len(body)) + c
            w.pack("HHIQ", sid, 1, 0, len(payload))
            w.put(payload)
        else:
            w.pack("HHIQ", sid, 0, 0, len(body))
            w.put(body)
        return at

    secs = {}
    for sid, key in ((OPT_HEADER_INFO, "header"), (OPT_FTRACE_EVENTS, "ftrace"), (OPT_EVENT_FORMATS, "events"),
                     (OPT_KALLSYMS, "kallsyms"), (OPT_PRINTK, "printk"), (OPT_CMDLINES, "cmdlines")):
        secs[sid] = section(sid, blocks[key], comp)
    buf_opts = []
    for (name, _recs), pgs in zip(buffers, pages):
        w.align(8)
        sec_at = w.pack("HHIQ", OPT_BUFFER, 1 if comp else 0, 0, 0)
        w.align(lay.page_size)
        cpus = []
        for cpu, data in enumerate(pgs):
            w.align(lay.page_size)
            at = w.n
            if comp:
                ps = lay.page_size
                chunks = [data[k:k + chunk_pages * ps] for k in range(0, len(data), chunk_pages * ps)]
                w.pack("I", len(chunks))
                for ch in chunks:
                    c = _compress(compression, ch)
                    w.pack("II", len(c), len(ch))
                    w.put(c)
            else:
                w.put(data)
            cpus.append((cpu, at, w.n - at))
        w.patch(sec_at + 8, "Q", w.n - sec_at - 16)
        clock = dict((o, b) for o, b in h.raw.get("options", [])).get(4, b"[local]\0").split(b"\0")[0]
        m = re.search(rb"\[(\S+)\]", clock)
        clock = m.group(1) if m else clock
        body = (struct.pack(e + "Q", sec_at) + name.encode() + b"\0" + clock + b"\0" + struct.pack(e + "II", lay.page_size, len(cpus))
                + b"".join(struct.pack(e + "IQQ", c, o, s) for c, o, s in cpus))
        buf_opts.append(body)
    opt_body = b"".join(struct.pack(e + "HI", oid, len(b)) + b for oid, b in opts)
    opt_body += b"".join(struct.pack(e + "HIQ", sid, 8, at) for sid, at in secs.items())
    opt_body += b"".join(struct.pack(e + "HI", OPT_BUFFER, len(b)) + b for b in buf_opts)
    opt_body += struct.pack(e + "HIQ", 0, 8, 0)
    w.align(8)
    at = section(0, opt_body, False)
    w.patch(first_opt, "Q", at)


def records_from(t) -> list[tuple[str, list[Records]]]:
    """Per buffer, per CPU: the records (raw ts + payload bytes) of a parsed TraceDat."""
    from analyzer.readers import tracedat_pages as tp
    cm = t._common()
    out = []
    for b in t.h.buffers:
        recs = []
        for cd in b.cpus:
            ts, data, lens = [], [], []
            for block, off in tp.iter_blocks(t.path, t._mm, b, cd, t._dec, t.h.endian):
                w = tp.walk(block, b.page_size, t.h.page_header, cm, t._big, t.path, "copy", off)
                if not len(w.rec_off):
                    continue
                ts.append(w.ts)
                lens.append(w.rec_len)
                flat = np.empty(int(w.rec_len.sum()), np.uint8)
                dst = np.concatenate([[0], np.cumsum(w.rec_len)[:-1]])
                for L in np.unique(w.rec_len).tolist():
                    sel = np.flatnonzero(w.rec_len == L)
                    flat[dst[sel][:, None] + np.arange(L)] = block[w.rec_off[sel][:, None] + np.arange(L)]
                data.append(flat)
            ln = np.concatenate(lens) if lens else np.zeros(0, np.int64)
            off = np.concatenate([[0], np.cumsum(ln)[:-1]]).astype(np.int64) if len(ln) else ln
            recs.append(Records(np.concatenate(ts) if ts else np.zeros(0, np.uint64),
                                np.concatenate(data) if data else np.zeros(0, np.uint8), off, ln))
        out.append((b.name, recs))
    return out
