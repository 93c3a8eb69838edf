"""Ring-buffer pages: fetch them per CPU in bounded blocks and walk their records in bulk.

A page is `u64 timestamp, long commit, data[]`; records inside are a chain of 4-byte headers
(type_len:5, time_delta:27), so walking one page is inherently sequential.  The pure-numpy
walker below walks *all pages of a block in lockstep* (one numpy step advances every page by
one record), which keeps Python work per block proportional to the longest page, not to the
number of records.  `_walk` (C, optional) does the same walk in one pass and is used when built;
both return identical `Walk` results (tests/readers/test_tracedat_variants.py checks that).
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..cext import load as load_cext
from ..errors import TraceFormatError
from .tracedat_header import BufferInfo, CpuData, Decompressor, PageHeader

_cwalk = load_cext("analyzer.readers._walk")  # compiled walker (analyzer/readers/_walk.c); see analyzer/cext.py

COMMIT_MASK = (1 << 27) - 1
MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30
TS_MSB = 0xF8 << 56
BLOCK_BYTES = 8 << 20           # pages walked per step: bounds memory, amortises per-call overhead


@dataclass
class Walk:
    """Records of one block of pages (all arrays share record order = file order)."""

    rec_off: np.ndarray      # int64, payload offset in the block buffer
    rec_len: np.ndarray      # int64, payload length in bytes
    ts: np.ndarray           # uint64, raw ring-buffer timestamp
    type: np.ndarray         # int32, common_type of each record
    pid: np.ndarray          # int32, common_pid of each record
    page_nrec: np.ndarray    # int64, records per page
    page_ts: np.ndarray      # uint64, page base timestamp
    page_lost: np.ndarray    # int64, 0 none, -1 unknown count, >0 count


@dataclass
class Common:
    """Where common_type / common_pid sit in every payload (from the format files)."""

    type_off: int = 0
    type_size: int = 2
    pid_off: int = 4


def use_compiled() -> bool:
    return _cwalk is not None


# ---------------------------------------------------------------------------------------------
# page sources

def _forget(data, start: int, n: int) -> None:
    """Drop a walked block's file pages from our RSS (they stay in the page cache).

    Without this a 10 GB uncompressed trace.dat would count fully towards the reader's
    resident memory even though each block is needed only once per pass.
    """
    if not isinstance(data, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return
    pg = mmap.PAGESIZE
    a = -(-start // pg) * pg
    b = (start + n) // pg * pg
    if b > a:
        try:
            data.madvise(mmap.MADV_DONTNEED, a, b - a)
        except (OSError, ValueError):
            pass


@dataclass
class BlockSpec:
    """One block of a CPU's pages: a raw file range, or a group of compressed chunks."""

    offset: int                                   # file offset (for error messages)
    size: int                                     # bytes of pages once loaded
    chunks: list[tuple[int, int, int]] | None = None   # (file offset, csize, usize)


def block_specs(path: str, data, buf: BufferInfo, cd: CpuData, dec: Decompressor | None,
                endian: str, block_bytes: int = BLOCK_BYTES) -> list[BlockSpec]:
    """Cut one CPU's data into blocks of about `block_bytes` (validating the chunk table)."""
    ps = buf.page_size
    where = f"buffer {buf.name!r} cpu {cd.cpu}"
    if not cd.chunked:
        if cd.size % ps:
            raise TraceFormatError(path, where, cd.offset + cd.size - cd.size % ps,
                                   f"data size {cd.size} is not a whole number of {ps}-byte pages: truncated page")
        step = max(ps, block_bytes - block_bytes % ps)
        return [BlockSpec(cd.offset + o, min(step, cd.size - o)) for o in range(0, cd.size, step)]
    if dec is None or dec.name == "none":
        raise TraceFormatError(path, where, cd.offset, "compressed flyrecord data but file compression is 'none'")
    e = "<" if endian == "little" else ">"
    pos = cd.offset
    if pos + 4 > len(data):
        raise TraceFormatError(path, where, pos, "truncated chunk table")
    (count,) = struct.unpack_from(e + "I", data, pos)
    pos += 4
    specs: list[BlockSpec] = []
    group: list[tuple[int, int, int]] = []
    total = 0
    for i in range(count):
        if pos + 8 > len(data):
            raise TraceFormatError(path, where, pos, "truncated compressed chunk header")
        csize, usize = struct.unpack_from(e + "II", data, pos)
        if pos + 8 + csize > len(data):
            raise TraceFormatError(path, where, pos, f"compressed chunk of {csize} bytes runs past end of file")
        if usize % ps or usize > (1 << 30):
            raise TraceFormatError(path, where, pos, f"chunk size {usize} is not a whole number of {ps}-byte pages")
        group.append((pos, csize, usize))
        total += usize
        pos += 8 + csize
        if total >= block_bytes or i == count - 1:
            specs.append(BlockSpec(group[0][0], total, group))
            group, total = [], 0
    return specs


def load_block(path: str, data, spec: BlockSpec, dec: Decompressor | None, where: str,
               out: np.ndarray | None = None) -> np.ndarray:
    """The pages of a block: a view of the mmap, or chunks decompressed into `out` (reused)."""
    if spec.chunks is None:
        return np.frombuffer(data, dtype=np.uint8, count=spec.size, offset=spec.offset)
    block = out[:spec.size] if out is not None and len(out) >= spec.size else np.empty(spec.size, np.uint8)
    mv = memoryview(block)  # type: ignore[arg-type]  # numpy arrays are buffers; the stubs do not say so
    at = 0
    for cpos, cs, us in spec.chunks:
        dec.into(memoryview(data)[cpos + 8:cpos + 8 + cs], mv[at:at + us], where + " chunk", cpos)
        at += us
    mv.release()
    return block


def done_block(data, spec: BlockSpec) -> None:
    if spec.chunks is None:
        _forget(data, spec.offset, spec.size)


def iter_blocks(path: str, data, buf: BufferInfo, cd: CpuData, dec: Decompressor | None,
                endian: str, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (uint8 array of whole pages, file offset of the block) for one CPU's data.

    A block is only valid until the next iteration (decompression reuses one buffer, and
    mmap-ed blocks are dropped from RSS); consumers copy what they keep.
    """
    where = f"buffer {buf.name!r} cpu {cd.cpu}"
    scratch = np.empty(0, np.uint8)
    for spec in block_specs(path, data, buf, cd, dec, endian, block_bytes):
        if spec.chunks is not None and len(scratch) < spec.size:
            scratch = np.empty(spec.size, np.uint8)
        yield load_block(path, data, spec, dec, where, scratch), spec.offset
        done_block(data, spec)


# ---------------------------------------------------------------------------------------------
# the walk

def _cerr(e: ValueError, path: str, where: str, file_off: int) -> TraceFormatError:
    msg, _, at = str(e).rpartition("@")  # the C code reports the block offset after '@'
    return TraceFormatError(path, where, file_off + int(at or 0), msg.strip())


def walk(block: np.ndarray, page_size: int, ph: PageHeader, cm: Common, big: bool, path: str, where: str,
         file_off: int, compiled: bool | None = None) -> Walk:
    """Walk every record of every page in `block` (a whole number of pages)."""
    if compiled is None:
        compiled = _cwalk is not None
    if compiled:
        if _cwalk is None:
            raise RuntimeError("compiled walker not built")
        try:
            r = _cwalk.walk(block, page_size, ph.commit_offset, ph.commit_size, ph.data_offset, int(big),
                            cm.type_off, cm.type_size, cm.pid_off)
        except ValueError as e:
            raise _cerr(e, path, where, file_off) from None
        return Walk(*r)
    w = _walk_numpy(block, page_size, ph, big, path, where, file_off)
    short = w.rec_len < max(cm.type_off + cm.type_size, cm.pid_off + 4)
    if short.any():
        i = int(np.argmax(short))
        raise TraceFormatError(path, where, file_off + int(w.rec_off[i]), "record too short for the common header")
    from .tracedat_fields import gather_int
    w.type = gather_int(block, w.rec_off + cm.type_off, cm.type_size, False, big).astype(np.int32)
    w.pid = gather_int(block, w.rec_off + cm.pid_off, 4, True, big).astype(np.int32)
    return w


def index(block: np.ndarray, page_size: int, ph: PageHeader, cm: Common, big: bool, path: str, where: str,
          file_off: int, carry: int, compiled: bool | None = None):
    """Pass 1 of a block: (keys, types, page_nrec, page_first_ts, page_last_ts, page_lost, carry).

    keys are the running maximum of the raw timestamps, continued from `carry` (the stream's
    maximum so far); page_first/last are raw record timestamps (page ts for empty pages).
    """
    if compiled is None:
        compiled = _cwalk is not None
    if compiled:
        try:
            return _cwalk.index(block, page_size, ph.commit_offset, ph.commit_size, ph.data_offset, int(big),
                                cm.type_off, cm.type_size, cm.pid_off, carry)
        except ValueError as e:
            raise _cerr(e, path, where, file_off) from None
    w = walk(block, page_size, ph, cm, big, path, where, file_off, compiled=False)
    keys = w.ts.astype(np.int64)
    if len(keys):
        keys[0] = max(int(keys[0]), carry)
        np.maximum.accumulate(keys, out=keys)
        carry = int(keys[-1])
    first = np.concatenate([[0], np.cumsum(w.page_nrec)[:-1]]).astype(np.int64)
    has = w.page_nrec > 0
    pfirst = w.page_ts.copy()
    plast = w.page_ts.copy()
    pfirst[has] = w.ts[first[has]]
    plast[has] = w.ts[first[has] + w.page_nrec[has] - 1]
    return keys, w.type, w.page_nrec, pfirst, plast, w.page_lost, carry


def merge(keys: list[np.ndarray], types: list[np.ndarray], seqcols: dict[int, np.ndarray],
          compiled: bool | None = None) -> list[np.ndarray]:
    """Greedy k-way merge of streams (smallest key first, ties to the lower stream).

    `keys` are per-stream running-max timestamps (non-decreasing), so the greedy merge equals
    a stable sort by (key, stream, index).  Writes each record's global position into
    `seqcols[type][row]` and returns per stream the row of each record in its type's table.
    """
    if compiled is None:
        compiled = _cwalk is not None
    if compiled:
        try:
            return _cwalk.merge([np.ascontiguousarray(k, np.int64) for k in keys],
                                [np.ascontiguousarray(t, np.int32) for t in types], list(seqcols.items()))
        except ValueError as e:
            raise RuntimeError(str(e)) from None
    # streams concatenated in order + a stable sort = ties to the lower stream, then file order;
    # timsort merges the already-sorted runs in linear time
    order = np.argsort(np.concatenate(keys) if keys else np.zeros(0, np.int64), kind="stable")
    ty_sorted = (np.concatenate(types) if types else np.zeros(0, np.int32))[order]
    pos_all = np.empty(len(order), np.int64)
    for t, col in seqcols.items():
        at = np.flatnonzero(ty_sorted == t)
        if len(at) != len(col):
            raise RuntimeError(f"type {t}: {len(at)} records, seq column holds {len(col)}")
        col[:] = at
        pos_all[order[at]] = np.arange(len(at), dtype=np.int64)
    poss, lo = [], 0
    for k in keys:
        poss.append(pos_all[lo:lo + len(k)])
        lo += len(k)
    return poss


def scatter(block: np.ndarray, rec_off: np.ndarray, foff: int, size: int, signed: bool, big: bool,
            pos: np.ndarray, out: np.ndarray) -> None:
    """out[pos] = the `size`-byte field at `foff` of each record (numpy pass 2)."""
    from .tracedat_fields import gather_int
    out[pos] = gather_int(block, rec_off + foff, size, signed, big)


def _words(block: np.ndarray, big: bool) -> np.ndarray:
    w = block.view(">u4" if big else "<u4")
    return w.astype(np.uint32) if big else w


def _walk_numpy(block: np.ndarray, ps: int, ph: PageHeader, big: bool, path: str, where: str,
                file_off: int) -> Walk:
    npages = len(block) // ps
    W = _words(block, big).astype(np.int64)          # int64 words: no uint overflow games
    base = np.arange(npages, dtype=np.int64) * ps
    w_ts0, w_ts1 = W[base // 4], W[base // 4 + 1]
    page_ts = ((w_ts0 << 32) | w_ts1) if big else (w_ts0 | (w_ts1 << 32))
    page_ts = page_ts.astype(np.uint64)
    ci = (base + ph.commit_offset) // 4
    if ph.commit_size == 8:
        commit = ((W[ci] << 32) | W[ci + 1]) if big else (W[ci] | (W[ci + 1] << 32))
    else:
        commit = W[ci]
    size = commit & COMMIT_MASK
    bad = np.flatnonzero(size > ps - ph.data_offset)
    if bad.size:
        bp = int(bad[0])
        raise TraceFormatError(path, where, file_off + bp * ps + ph.commit_offset,
                               f"page commit size {int(size[bp])} beyond the {ps}-byte page")
    lost = np.zeros(npages, dtype=np.int64)
    missed = (commit & MISSED_EVENTS) != 0
    stored = missed & ((commit & MISSED_STORED) != 0)
    lost[missed] = -1
    if stored.any():
        sp = np.flatnonzero(stored)
        lo = base[sp] + ph.data_offset + size[sp]
        if np.any(lo + ph.commit_size > base[sp] + ps):
            bp = int(sp[np.argmax(lo + ph.commit_size > base[sp] + ps)])
            raise TraceFormatError(path, where, file_off + bp * ps, "missed-events count stored beyond the page")
        if ph.commit_size == 8:
            cnt = ((W[lo // 4] << 32) | W[lo // 4 + 1]) if big else (W[lo // 4] | (W[lo // 4 + 1] << 32))
        else:
            cnt = W[lo // 4]
        lost[sp] = cnt
    pos = base + ph.data_offset
    end = pos + size
    limit = base + ps
    ts = page_ts.copy()
    act = np.flatnonzero(pos < end)
    out_page, out_off, out_len, out_ts = [], [], [], []
    mask27 = (1 << 27) - 1
    while act.size:
        p = pos[act]
        mis = (p % 4 != 0) | (p + 4 > end[act])
        if mis.any():
            k = int(np.argmax(mis))
            raise TraceFormatError(path, where, file_off + int(p[k]), "misaligned or truncated record header")
        w = W[p // 4]
        if big:
            tl, delta = w >> 27, w & mask27
        else:
            tl, delta = w & 31, w >> 5
        has_arr = p + 8 <= limit[act]
        arr = np.where(has_arr, W[np.minimum(p + 4, limit[act] - 4) // 4], 0)
        nxt = np.empty_like(p)
        t = ts[act]
        # data records
        isdata = tl <= 28
        small = isdata & (tl > 0)
        big0 = isdata & (tl == 0)
        plen = np.where(small, tl * 4, (arr - 4 + 3) & ~3)
        poff = np.where(small, p + 4, p + 8)
        if np.any(big0 & ((arr < 4) | ~has_arr)):
            k = int(np.argmax(big0 & ((arr < 4) | ~has_arr)))
            raise TraceFormatError(path, where, file_off + int(p[k]), f"bad record length {int(arr[k])}")
        over = isdata & (poff + plen > end[act])
        if over.any():
            k = int(np.argmax(over))
            raise TraceFormatError(path, where, file_off + int(p[k]), "record overruns the page commit")
        t = t + np.where(tl == 31, 0, delta + np.where(tl == 30, arr << 27, 0)).astype(np.uint64)
        stamp = tl == 31
        if stamp.any():
            t = np.where(stamp, (t & np.uint64(TS_MSB)) | ((arr << 27) + delta).astype(np.uint64), t)
        ts[act] = t
        nxt[:] = np.where(isdata, poff + plen, p + 8)
        pad = tl == 29
        nxt = np.where(pad, np.where(has_arr, p + 4 + arr, end[act]), nxt)
        nxt = np.where((tl >= 30) & ~has_arr, end[act], nxt)
        if isdata.any():
            sel = np.flatnonzero(isdata)
            out_page.append(act[sel])
            out_off.append(poff[sel])
            out_len.append(plen[sel])
            out_ts.append(t[sel])
        pos[act] = nxt
        act = act[nxt < end[act]]
    if out_page:
        pg = np.concatenate(out_page)
        order = np.argsort(pg, kind="stable")
        pg = pg[order]
        rec_off = np.concatenate(out_off)[order]
        rec_len = np.concatenate(out_len)[order]
        rts = np.concatenate(out_ts)[order]
        nrec = np.bincount(pg, minlength=npages).astype(np.int64)
    else:
        rec_off = rec_len = np.zeros(0, np.int64)
        rts = np.zeros(0, np.uint64)
        nrec = np.zeros(npages, np.int64)
    empty = np.zeros(0, np.int32)
    return Walk(rec_off.astype(np.int64), rec_len.astype(np.int64), rts, empty, empty, nrec, page_ts, lost)
