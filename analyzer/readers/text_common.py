"""Shared machinery of the text readers (ftrace text, `trace-cmd report`, `perf script`).

All three print one record per line as `<comm><pid><cpu><time><event><body>`;
they differ only in the punctuation around those parts.  So each reader gives
one RE2 pattern for an event line plus a handler for the other lines (headers,
lost-event markers), and everything else is shared here, columnar:

* the whole file becomes one Arrow string array and the line pattern runs over
  it in C++ (`pyarrow.compute.extract_regex`) — never a Python loop per line;
* comm is matched greedily from the left, so the `-PID [CPU]` anchor that wins
  is the rightmost one: comms may contain spaces, dashes and brackets;
* bodies are read as `name=value` pairs (print formats are C expressions and are
  never evaluated), one RE2 extraction per field; values are parsed by a
  vectorised numpy integer parser that accepts `0x` hex and decimal in the same
  column (trace-cmd -R switches between them per event);
* events whose layout the kernel fixes take their types from known_events, so
  the tables equal the trace.dat reader's; others are inferred;
* a file larger than `CHUNK_BYTES` is streamed (text_stream.py): read in line-aligned
  chunks, each parsed as above and its per-event tables spilled to a temporary Arrow
  directory, so memory is one chunk's worth, not the file's.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import TraceFormatError, UnknownEventError
from . import known_events as ke
from .base import COMMON_SCHEMA, LOST_SCHEMA, EventFormat, FieldFormat, Trace, TraceMeta
from .text_values import parse_ints, to_typed

__all__ = ["TextTrace", "Marker", "LINE_END", "parse_ints", "to_typed", "parse_bodies", "read_lines"]

FAILED_TO_PARSE = "[FAILED TO PARSE]"

# -- reading lines --------------------------------------------------------------------------

def read_lines(path: str) -> pa.Array:
    """Whole file as a large_string array, one entry per line (line N is index N-1)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TraceFormatError(path, "file", None, e.strerror or str(e)) from None
    if not data:
        raise TraceFormatError(path, "file", 0, "empty file")
    if b"\0" in data[:65536]:
        raise TraceFormatError(path, "line 1", None, "binary data (NUL bytes) in a text trace")
    return lines_of(data)


def lines_of(data: bytes) -> pa.Array:
    """`data` (whole lines) as a large_string array, one entry per line, newlines kept."""
    # Zero-copy: an Arrow string array over the file bytes, one entry per line with
    # its newline kept (the line patterns end in `\r?\n?$`); the C++ UTF-8 check
    # replaces a Python decode of hundreds of MB.
    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    ends = nl + 1
    if len(data) and data[-1:] != b"\n":
        ends = np.append(ends, len(data))
    offsets = np.zeros(len(ends) + 1, dtype=np.int64)
    offsets[1:] = ends
    arr = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:                      # comms are raw kernel bytes: replace bad ones
        text = data.decode("utf-8", errors="replace")
        return pa.array([x + "\n" for x in text.split("\n")][: len(ends)], type=pa.large_string())
    return arr


LINE_END = r"(?P<body>[^\r\n]*)\r?\n?$"


def re2_escape(s: str) -> str:
    return re.sub(r"([^A-Za-z0-9_])", r"\\\1", s)


# -- markers (non-event lines that carry information) ---------------------------------------

@dataclass
class Marker:
    line: int            # 1-based line number
    kind: str            # "lost" | "buffer-started" | "subbuffer-start"
    cpu: int
    count: int = -1      # events lost, -1 unknown


# -- body parsing ---------------------------------------------------------------------------

_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_.]*)=")


def discover_keys(body: pa.Array, cap: int = 20000) -> dict[str, int]:
    """`name=` keys in the bodies, in order of first appearance, with their row counts."""
    sig = pc.replace_substring_regex(body, r"=\S*", "=")
    vc = pc.value_counts(sig)
    keys: dict[str, int] = {}
    for i, (s, c) in enumerate(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())):
        if s is None or i >= cap:
            continue
        for k in dict.fromkeys(_KEY_RE.findall(s)):
            keys[k] = keys.get(k, 0) + c
    return keys


def _extract(body: pa.Array, key: str, others: list[str], mode: str) -> pa.Array:
    """Value text of `key=` per row (null where absent).

    mode "token": up to the next blank; "rest": to the end of the line;
    "until-key": up to the next ` other=` (strings may contain blanks).
    """
    if mode == "token":
        val = r"\S*"
        tail = ""
    elif mode == "rest":
        val, tail = ".*", "$"
    else:
        alt = "|".join(re2_escape(o) for o in others if o != key)
        val = ".*?"
        tail = rf"(?:\s+(?:{alt})=|\s*$)" if alt else r"\s*$"
    pat = rf"(?:^|\s){re2_escape(key)}=(?P<v>{val}){tail}"
    return pc.struct_field(pc.extract_regex(body, pat), [0])


@dataclass
class BodyNotes:
    failed_to_parse: int = 0
    unparsed: dict | None = None      # field -> {"count": n, "example": text, "why": ...}


def _numeric(raw: pa.Array, f: ke.KnownField, hashed_pointers: bool, notes: dict) -> pa.Array:
    vals = pc.utf8_trim_whitespace(raw)
    if f.pointer and hashed_pointers:
        present = int(pc.sum(vals.is_valid()).as_py() or 0)
        if present:
            notes[f.name] = {"count": present, "example": _first(vals),
                             "why": "pointer printed hashed by the kernel (%p); value not recoverable"}
        return pa.nulls(len(raw), f.type)
    value, ok, neg, _ = parse_ints(vals, bare_hex=f.bare_hex)
    for word, num in f.symbols:
        hit = pc.fill_null(pc.equal(vals, word), False).to_numpy(zero_copy_only=False)
        value[hit], ok[hit], neg[hit] = num, True, False
    out, ok = to_typed(value, ok, neg, f.type)
    present = vals.is_valid().to_numpy(zero_copy_only=False)
    bad = present & ~ok
    if bad.any():
        idx = int(np.nonzero(bad)[0][0])
        ex = vals[idx].as_py()
        notes[f.name] = {"count": int(bad.sum()), "example": ex, "why": _why(ex)}
    return out


def _why(example: str) -> str:
    if re.fullmatch(r"[a-z_][\w.]*(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?", example or ""):
        return "printed as a kernel symbol (%ps), not as a number"
    if re.fullmatch(r"[A-Z_][A-Z0-9_|]*", example or ""):
        return "printed as flag names (__print_flags), not as a number"
    return "not a number in this text"


def _first(vals: pa.Array):
    for v in vals.drop_null()[:1].to_pylist():
        return v
    return None


def _infer(raw: pa.Array) -> pa.Array:
    """int64 when every value is decimal, uint64 when hex appears, else string."""
    vals = pc.utf8_trim_whitespace(raw)
    present = vals.is_valid().to_numpy(zero_copy_only=False)
    if not present.any():
        return vals.cast(pa.string())
    value, ok, neg, hexp = parse_ints(vals)
    if (ok | ~present).all():
        if hexp.any() and not neg.any():
            return pa.array(value, type=pa.uint64(), mask=~ok)
        sval = value.view(np.int64)
        if neg.any() or not (sval[ok] < 0).any():
            return pa.array(sval, type=pa.int64(), mask=~ok)
        return pa.array(value, type=pa.uint64(), mask=~ok)
    return vals.cast(pa.string())


def _clean_bodies(body: pa.Array) -> tuple[pa.Array, int]:
    body = pc.utf8_trim_whitespace(body)
    failed = pc.fill_null(pc.starts_with(body, FAILED_TO_PARSE), False)
    n_failed = int(pc.sum(failed).as_py() or 0)
    if n_failed:
        body = pc.replace_substring_regex(body, r"^\[FAILED TO PARSE\]\s*", "")
    return pc.utf8_trim_whitespace(body), n_failed


SAMPLE_ROWS = 64


def parse_bodies(event: str, body: pa.Array, hashed_pointers: bool,
                 sample: pa.Array | None = None) -> tuple[list[tuple[str, pa.Array]], BodyNotes]:
    """Columns of one event's bodies: known layout when there is one, inferred otherwise.

    `sample`: the event's first bodies in the whole file when `body` is one chunk of it
    (a known event's extra keys are decided on its first SAMPLE_ROWS rows).
    """
    notes = BodyNotes()
    body, notes.failed_to_parse = _clean_bodies(body)
    known = ke.lookup(event)
    # A known event only needs keys printed in *every* row (new kernel fields), so
    # the first rows are enough; unknown events need every key of every row.
    first = _clean_bodies(sample)[0] if sample is not None else body
    keys = discover_keys(first.slice(0, SAMPLE_ROWS) if known is not None else body)
    unparsed: dict = {}
    cols: list[tuple[str, pa.Array]] = []
    if known is not None:
        n = len(first)
        names = [f.name for f in known.fields]
        extra = [k for k, c in keys.items()
                 if c == min(n, SAMPLE_ROWS) and k not in names and k not in known.print_only]
        extra = [k for k in extra if _extract(body, k, [k], "token").null_count == 0]
        alts = names + sorted(known.print_only) + extra
        pos = pc.extract_regex(body, known.positional) if known.positional else None
        last_str = [f.name for f in known.fields if pa.types.is_string(f.type)][-1:]
        for f in known.fields:
            is_str = pa.types.is_string(f.type)
            mode = ("rest" if f.name in last_str and f.name == names[-1] else "until-key") if is_str else "token"
            raw = _extract(body, f.name, alts, mode)
            if pos is not None and f.name in [pos.type.field(i).name for i in range(pos.type.num_fields)]:
                pv = pc.struct_field(pos, [f.name])
                raw = pc.if_else(pos.is_valid(), pv, raw)
            if f.optional and not pc.any(raw.is_valid()).as_py():
                continue
            if raw.null_count:
                unparsed[f.name] = {"count": raw.null_count, "example": None,
                                    "why": f"`{f.name}=` not printed on these lines"}
            if is_str:
                cols.append((f.name, pc.utf8_trim_whitespace(raw).cast(pa.string())))
            else:
                cols.append((f.name, _numeric(raw, f, hashed_pointers, unparsed)))
        for k in extra:
            cols.append((k, _infer(_extract(body, k, alts, "until-key"))))
    else:
        alts = list(keys)
        for k in alts:
            cols.append((k, _infer(_extract(body, k, alts, "until-key"))))
        if not alts:
            cols.append(("_text", body.cast(pa.string())))
    notes.unparsed = unparsed
    return cols, notes


# -- the shared Trace implementation --------------------------------------------------------

class TextTrace(Trace):
    """A text trace parsed columnar at open; event bodies are parsed per event on demand."""

    FORMAT = "text"
    LINE_RE = ""                  # RE2 with groups comm, pid, cpu, ts_s, ts_f, event, body;
                                  # lines keep their newline: end patterns with LINE_END
    FAST_RE = ""                  # same groups; cheaper pattern tried first (comm <= 16 chars)
    HASHED_POINTERS = False       # kernel text output hashes %p values
    # Files above this many bytes are streamed chunk by chunk (text_stream.py); at or below
    # it the whole file is parsed at once.  The environment variable lets tests force it.
    CHUNK_BYTES = int(os.environ.get("MTAUDIT_TEXT_CHUNK_BYTES", str(32 << 20)))

    def __init__(self, path: str):
        self.path = str(path)
        self.meta = TraceMeta(path=self.path, format=self.FORMAT)
        self.markers: list[Marker] = []
        self._tables: dict[str, pa.Table] = {}
        self._formats: dict[str, EventFormat] = {}
        self._notes: dict[str, dict] = {}
        self._line0 = 0               # lines before the chunk being scanned (streaming)
        self._seq0 = 0                # event records before it
        self._spill: Any = None       # text_stream.Spill when streamed
        try:
            size = os.path.getsize(self.path)
        except OSError as e:
            raise TraceFormatError(self.path, "file", None, e.strerror or str(e)) from None
        if size > self.CHUNK_BYTES:
            from .text_stream import stream
            stream(self, StreamParts())
            return
        lines = read_lines(self.path)
        self._scan(lines)

    # hooks -------------------------------------------------------------------------------
    def other_line(self, text: str, lineno: int) -> Marker | None:
        """Handle a line that is not an event; raise TraceFormatError if it is garbage."""
        raise NotImplementedError

    def rename_events(self, events: pa.Array, bodies: pa.Array) -> tuple[pa.Array, pa.Array]:
        """Map printed event names to "system:name" (and fix bodies if the format needs it)."""
        names = events.unique().to_pylist()
        mapping = {n: ke.full_name(n) for n in names}
        return _map_strings(events, mapping), bodies

    def bad_line(self, lineno: int, text: str | None, why: str) -> TraceFormatError:
        if text is None:
            return TraceFormatError(self.path, f"line {lineno}", None, why)
        shown = text if len(text) <= 80 else text[:77] + "..."
        return TraceFormatError(self.path, f"line {lineno}", None, f"{why}: {shown!r}")

    def continuation(self, text: str) -> bool:
        """Stack-trace lines (` => func`) that follow a record: skipped, counted in meta.extra."""
        if text.lstrip().startswith("=> "):
            self.meta.extra["stack_lines_skipped"] = self.meta.extra.get("stack_lines_skipped", 0) + 1
            return True
        return False

    # scanning ----------------------------------------------------------------------------
    def _match(self, lines: pa.Array) -> pa.Array:
        """Run the line pattern: a fast one (comm <= 16 chars), then the general one on misses."""
        fast = _parallel_extract(lines, self.FAST_RE or self.LINE_RE)
        miss = np.nonzero(~fast.is_valid().to_numpy(zero_copy_only=False))[0]
        if not len(miss):
            return fast
        slow = pc.extract_regex(lines.take(pa.array(miss)), self.LINE_RE)
        if slow.null_count == len(slow):
            return fast
        # merge: rows the general pattern matched replace the fast misses
        good = slow.is_valid().to_numpy(zero_copy_only=False)
        idx = np.arange(len(lines))
        src = np.zeros(len(lines), dtype=bool)
        src[miss[good]] = True
        pos = np.zeros(len(lines), dtype=np.int64)
        pos[miss[good]] = np.nonzero(good)[0]
        both = pa.concat_arrays([fast, slow])
        take = np.where(src, len(fast) + pos, idx)
        return both.take(pa.array(take))

    def _scan(self, lines: pa.Array, chunk: bool = False) -> bool:
        """Parse `lines` (the file, or one chunk of it: then no lost table, and no event is fine)."""
        m = self._match(lines)
        is_ev = m.is_valid().to_numpy(zero_copy_only=False)
        l0 = self._line0
        for i in np.nonzero(~is_ev)[0]:
            mk = self.other_line(lines[int(i)].as_py().rstrip("\r\n"), l0 + int(i) + 1)
            if mk is not None:
                self.markers.append(mk)
        if not is_ev.any():
            if chunk:
                return False
            raise TraceFormatError(self.path, "file", None, f"no event lines found in this {self.FORMAT} file")
        ev = pc.filter(m, pa.array(is_ev))
        self._line_no = np.nonzero(is_ev)[0] + 1 + l0
        g = {ev.type.field(i).name: pc.struct_field(ev, [i]) for i in range(ev.type.num_fields)}
        for k in g:          # RE2 gives "" for optional groups that did not take part
            if k not in ("comm", "body"):
                g[k] = pc.if_else(pc.equal(g[k], ""), pa.scalar(None, g[k].type), g[k])
        self._groups = g
        # perf `-F pid,tid` prints pid/tid; the record's pid (common_pid) is the tid
        pid_text = pc.coalesce(g["tid"], g["pid"]) if "tid" in g else g["pid"]
        pid, ok, _, _ = parse_ints(pid_text)
        cpu, ok2, _, _ = parse_ints(g["cpu"])
        sec, ok3, _, _ = parse_ints(g["ts_s"])
        if not (ok.all() and ok2.all() and ok3.all()):
            bad = int(np.nonzero(~(ok & ok2 & ok3))[0][0])
            raise self.bad_line(int(self._line_no[bad]),
                                lines[int(self._line_no[bad]) - 1 - l0].as_py().rstrip("\r\n"),
                                "number out of range in pid, cpu or time")
        self._pid = pid.astype(np.int32)
        self._cpu = cpu.astype(np.int32)
        self._ts = self._timestamps(sec, g["ts_f"])
        self._comm = pc.utf8_trim_whitespace(g["comm"]).cast(pa.string())
        names, bodies = self.rename_events(g["event"], g["body"])
        self._bodies = bodies
        enc = pc.dictionary_encode(names).combine_chunks() if isinstance(names, pa.ChunkedArray) else pc.dictionary_encode(names)
        idx = enc.indices.to_numpy(zero_copy_only=False)
        order = np.argsort(idx, kind="stable")
        bounds = np.searchsorted(idx[order], np.arange(len(enc.dictionary) + 1))
        self._rows = {enc.dictionary[k].as_py(): order[bounds[k]:bounds[k + 1]]
                      for k in range(len(enc.dictionary)) if bounds[k + 1] > bounds[k]}
        if not chunk:
            self._lost = self._lost_table()
        return True

    def _timestamps(self, sec: np.ndarray, frac: pa.Array) -> np.ndarray:
        fval, fok, _, _ = parse_ints(frac)
        flen = pc.fill_null(pc.utf8_length(frac), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        if (flen > 9).any():
            i = int(np.nonzero(flen > 9)[0][0])
            raise TraceFormatError(self.path, f"line {int(self._line_no[i])}", None,
                                   "timestamp has more than 9 fractional digits")
        has_frac = frac.is_valid().to_numpy(zero_copy_only=False)
        scale = (10 ** (9 - np.clip(flen, 0, 9))).astype(np.int64)
        ts = np.where(has_frac, sec.astype(np.int64) * 1_000_000_000 + fval.astype(np.int64) * scale,
                      sec.astype(np.int64))
        if has_frac.all():
            res = int(10 ** (9 - flen.min())) if len(flen) else 1
            self.meta.extra["ts_resolution_ns"] = res
            self.meta.extra["ts_unit"] = "ns"
        elif not has_frac.any():
            self.meta.extra["ts_unit"] = "counter"    # non-ns trace clock: raw counts
            self.meta.extra["ts_resolution_ns"] = None
        else:
            i = int(np.nonzero(~has_frac)[0][0])
            raise TraceFormatError(self.path, f"line {int(self._line_no[i])}", None,
                                   "mixes seconds.fraction and raw counter timestamps")
        return ts

    def _lost_table(self) -> pa.Table:
        rows: dict[str, list[int]] = {"cpu": [], "ts_start": [], "ts_end": [], "count": []}
        lost = [mk for mk in self.markers if mk.kind in ("lost", "buffer-started")]
        first_ts = int(self._ts.min()) if len(self._ts) else 0
        for mk in lost:
            on_cpu = np.nonzero(self._cpu == mk.cpu)[0]
            lines = self._line_no[on_cpu]
            k = int(np.searchsorted(lines, mk.line))
            after = int(self._ts[on_cpu[k]]) if k < len(on_cpu) else int(self._ts.max())
            if mk.kind == "buffer-started" or k == 0:
                before = first_ts      # this CPU's records before the gap are gone
            else:
                before = int(self._ts[on_cpu[k - 1]])
            rows["cpu"].append(mk.cpu)
            rows["ts_start"].append(before)
            rows["ts_end"].append(after)
            rows["count"].append(mk.count)
        return pa.table(rows, schema=LOST_SCHEMA)

    # Trace API ---------------------------------------------------------------------------
    def events(self) -> dict[str, int]:
        if self._spill is not None:
            return self._spill.counts()
        return {k: len(v) for k, v in sorted(self._rows.items())}

    def resolve(self, event: str) -> str:
        """Like Trace.resolve, but from the event names seen (no need to parse bodies)."""
        names = self.events()
        if event in names:        # a printed name may itself hold a "/" (a garbled line)
            return event
        ev = event.replace("/", ":")
        if ev in names:
            return ev
        bare = ev.split(":", 1)[1] if ":" in ev else ev
        hits = [k for k in names if k.split(":", 1)[1] == bare]
        if ":" not in ev and len(hits) == 1:
            return hits[0]
        if ":" not in ev and len(hits) > 1:
            raise UnknownEventError(f"{self.path}: event name {event!r} is ambiguous: {', '.join(sorted(hits))}")
        raise UnknownEventError(f"{self.path}: no event {event!r} in this trace")

    def formats(self) -> dict[str, EventFormat]:
        if self._spill is not None:
            return self._spill.formats()
        for name in self._rows:
            self._build(name)
        return dict(self._formats)

    @property
    def lost(self) -> pa.Table:
        return self._lost

    def notes(self) -> dict[str, dict]:
        """Per event: "[FAILED TO PARSE]" line count and fields that could not be read."""
        if self._spill is not None:
            return self._spill.notes()
        for name in self._rows:
            self._build(name)
        return {k: v for k, v in self._notes.items() if v}

    def _common(self, rows: np.ndarray, columns: list[str] | None) -> list[tuple[str, pa.Array]]:
        sel = pa.array(rows)
        out = [("seq", pa.array(rows.astype(np.int64) + self._seq0)),
               ("ts", pa.array(self._ts[rows])),
               ("cpu", pa.array(self._cpu[rows])),
               ("pid", pa.array(self._pid[rows])),
               ("comm", None)]
        if columns is None or "comm" in columns:
            out[4] = ("comm", self._comm.take(sel))
        return out

    def _table(self, full_name: str, columns: list[str] | None) -> pa.Table:
        if self._spill is not None:
            return self._spill.table(full_name, columns)
        rows = self._rows.get(full_name)
        if rows is None:
            raise UnknownEventError(f"{self.path}: no event {full_name!r} in this trace")
        common_only = columns is not None and all(c in ("seq", "ts", "cpu", "pid", "comm") for c in columns)
        if common_only:
            cols = [(n, a) for n, a in self._common(rows, columns) if n in columns]
            return pa.table({n: a for n, a in cols}).select(columns)
        t = self._build(full_name)
        return t.select(columns) if columns is not None else t

    @property
    def streams(self) -> bool:
        return self._spill is not None     # files above the streaming threshold (text_stream.py)

    def iter_batches(self, events: list[str] | None = None, max_rows: int = 1 << 20):
        if self._spill is None:
            yield from super().iter_batches(events, max_rows)
            return
        names = [self.resolve(e) for e in events] if events else sorted(self.events())
        for name in names:
            yield from self._spill.batches(name, max_rows)

    def _build(self, full_name: str) -> pa.Table:
        t = self._tables.get(full_name)
        if t is not None:
            return t
        t, note, fmt = self._parse_event(full_name)
        self._tables[full_name] = t
        self._notes[full_name] = note
        self._formats[full_name] = fmt
        return t

    def _parse_event(self, full_name: str, sample: pa.Array | None = None) -> tuple[pa.Table, dict, EventFormat]:
        """One event's table (of the file, or of the chunk being streamed), notes and format."""
        rows = self._rows[full_name]
        body = self._bodies.take(pa.array(rows))
        fields, notes = parse_bodies(full_name, body, self.HASHED_POINTERS, sample)
        cols = self._common(rows, None) + fields
        schema = pa.schema(list(COMMON_SCHEMA) + [pa.field(n, a.type) for n, a in fields])
        t = pa.Table.from_arrays([a for _, a in cols], schema=schema)
        note: dict = {}
        if notes.failed_to_parse:
            note["failed_to_parse_lines"] = notes.failed_to_parse
        if notes.unparsed:
            note["unparsed_fields"] = notes.unparsed
        return t, note, _format_of(full_name, fields)


def _parallel_extract(lines: pa.Array, pattern: str, parts: int = 2) -> pa.Array:
    """extract_regex over slices in threads (Arrow releases the GIL): RE2 is the hot spot."""
    n = len(lines)
    if n < 200_000:
        return pc.extract_regex(lines, pattern)
    from concurrent.futures import ThreadPoolExecutor
    step = -(-n // parts)
    with ThreadPoolExecutor(parts) as ex:
        chunks = list(ex.map(lambda i: pc.extract_regex(lines.slice(i, step), pattern), range(0, n, step)))
    return pa.concat_arrays(chunks)


def _format_of(full_name: str, fields: list[tuple[str, pa.Array]]) -> EventFormat:
    return format_of_types(full_name, [(n, a.type) for n, a in fields])


def format_of_types(full_name: str, fields: list[tuple[str, pa.DataType]]) -> EventFormat:
    """The EventFormat a text trace can give: field names and types, no offsets."""
    system, name = full_name.split(":", 1)
    known = ke.lookup(full_name)
    out = []
    for fname, t in fields:
        kf = known.field(fname) if known else None
        ctype = kf.ctype if kf else ("char[]" if pa.types.is_string(t) else ("u64" if t == pa.uint64() else "s64"))
        size = t.bit_width // 8 if pa.types.is_integer(t) else 0
        out.append(FieldFormat(name=fname, type=ctype, offset=-1, size=size,
                               signed=pa.types.is_signed_integer(t)))
    return EventFormat(system=system, name=name, id=None, fields=out)


def _map_strings(arr: pa.Array, mapping: dict) -> pa.Array:
    keys = list(mapping)
    idx = pc.index_in(arr, value_set=pa.array(keys, type=arr.type))
    return pa.array([mapping[k] for k in keys], type=pa.string()).take(idx)


class StreamParts:
    """What the chunked reader (text_stream.py) shares with the whole-file one, handed to it so
    that it need not import this module (which imports it)."""
    sample_rows = SAMPLE_ROWS
    lines_of = staticmethod(lines_of)
    clean_bodies = staticmethod(_clean_bodies)
    discover_keys = staticmethod(discover_keys)
    format_of_types = staticmethod(format_of_types)
