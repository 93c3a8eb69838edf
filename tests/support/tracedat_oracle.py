"""Test helper: compare a TraceDat against Debian's `trace-cmd report -R -t` (the oracle): per record
ts, cpu, pid, comm, buffer, event name and position, then every field value.

`-R` prints raw fields: numbers are hex (`0x..`) or decimal depending on the field's type
flags (and kprobe `__probe_ip` as bare hex), strings as text, pointers that trace-cmd can
symbolise (ftrace:print `ip`) as a symbol name.  Symbolised values are counted as skipped,
everything else is compared exactly.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter, defaultdict

import numpy as np

LINE = re.compile(r"^(?:(?P<buf>[^\s:]+):)?\s*(?P<comm>.*)-(?P<pid>-?\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<sec>\d+)\.(?P<ns>\d{9}):\s+"
                  r"(?P<ev>[^:\s]+):\s?(?P<rest>.*)$")
DROP = re.compile(r"^CPU:\s*(\d+) \[(?:(\d+) )?EVENTS DROPPED\]")


def have_tracecmd() -> bool:
    return shutil.which("trace-cmd") is not None


def report(path: str) -> list[str]:
    out = subprocess.run(["trace-cmd", "report", "-R", "-t", "-i", path], check=True,
                         capture_output=True, text=True, errors="replace").stdout
    return out.splitlines()


def parse_report(lines: list[str]):
    """-> (records [(ts, cpu, pid, event, rest)], drops [(cpu, count)], unparsed lines)."""
    recs, drops, bad = [], [], []
    for ln in lines:
        m = LINE.match(ln)
        if m:
            recs.append((int(m["sec"]) * 1_000_000_000 + int(m["ns"]), int(m["cpu"]), int(m["pid"]),
                         m["ev"], m["rest"].strip(), m["buf"] or "", m["comm"].strip()))
            continue
        d = DROP.match(ln.strip())
        if d:
            drops.append((int(d[1]), int(d[2]) if d[2] else -1))
        elif ln.strip() and not ln.startswith(("cpus=", "version =")) and "[buffer" not in ln:
            bad.append(ln)
    return recs, drops, bad


def _parse_int_column(vals: list[str]):
    """Numbers of one field: '0x..' hex, bare hex if any value has a-f digits, else decimal."""
    barehex = any(re.fullmatch(r"[0-9a-f]*[a-f][0-9a-f]*", v) for v in vals)
    out, skipped = [], 0
    for v in vals:
        try:
            if v == "(nil)":             # NULL pointer, printed by %p
                out.append(0)
            elif v.startswith(("0x", "-0x")):
                out.append(int(v, 16))
            elif barehex:
                out.append(int(v, 16))
            else:
                out.append(int(v))
        except ValueError:
            out.append(None)        # symbolised pointer etc.
            skipped += 1
    return out, skipped


def compare(trace, path: str) -> dict:
    """Compare everything; returns a summary dict; raises AssertionError on a mismatch."""
    recs, drops, bad = parse_report(report(path))
    assert not bad, f"unparsed trace-cmd lines: {bad[:3]}"
    # our records in seq order
    names, seqs, tss, cpus, pids, bufs, comms = [], [], [], [], [], [], []
    tables = {}
    for name in trace.events():
        t = trace.table(name)
        tables[name] = t
        n = t.num_rows
        names.append(np.full(n, name.split(":", 1)[1], dtype=object))
        seqs.append(t["seq"].to_numpy())
        tss.append(t["ts"].to_numpy())
        cpus.append(t["cpu"].to_numpy())
        pids.append(t["pid"].to_numpy())
        comms.append(np.array(t["comm"].to_pylist(), dtype=object))
        bufs.append(np.array(t["buffer"].to_pylist() if "buffer" in t.column_names else [""] * n, dtype=object))
    seq = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    total = len(seq)
    assert total == len(recs), f"record count: ours {total}, trace-cmd {len(recs)}"
    assert np.array_equal(np.sort(seq), np.arange(total)), "seq is not a permutation of 0..N-1"
    order = np.argsort(seq)
    o_name = np.concatenate(names)[order] if names else []
    o_ts = np.concatenate(tss)[order] if tss else []
    o_cpu = np.concatenate(cpus)[order] if cpus else []
    o_pid = np.concatenate(pids)[order] if pids else []
    r_ts = np.array([r[0] for r in recs], np.int64)
    r_cpu = np.array([r[1] for r in recs], np.int64)
    r_pid = np.array([r[2] for r in recs], np.int64)
    r_name = np.array([r[3] for r in recs], dtype=object)
    o_buf = np.concatenate(bufs)[order] if bufs else []
    r_buf = np.array([r[5] for r in recs], dtype=object)
    o_comm = np.concatenate(comms)[order] if comms else []
    r_comm = np.array([r[6] for r in recs], dtype=object)
    for what, a, b in (("ts", o_ts, r_ts), ("cpu", o_cpu, r_cpu), ("pid", o_pid, r_pid), ("event", o_name, r_name),
                       ("buffer", o_buf, r_buf), ("comm", o_comm, r_comm)):
        neq = np.flatnonzero(np.asarray(a) != b)
        assert not len(neq), f"{what} differs at seq {neq[0]}: ours {a[neq[0]]!r}, trace-cmd {b[neq[0]]!r} ({len(neq)} rows)"
    assert Counter(r_name.tolist()) == Counter({k.split(':', 1)[1]: t.num_rows for k, t in tables.items()})
    # field values, per event, in seq order
    by_ev = defaultdict(list)
    for r in recs:
        by_ev[r[3]].append(r[4])
    compared = skipped = 0
    for name, t in tables.items():
        short = name.split(":", 1)[1]
        texts = by_ev[short]
        fmt = trace.formats()[name]
        fnames = [f.name for f in fmt.fields]
        rx = re.compile("^" + " ".join(re.escape(f) + "=(.*?)" for f in fnames) + "$") if fnames else None
        rows = []
        for tx in texts:
            m = rx.match(tx) if rx else None
            assert m is not None or not fnames, f"{name}: cannot split fields of {tx!r}"
            rows.append(m.groups() if m else ())
        t = t.sort_by("seq")
        taken = {"seq", "ts", "cpu", "pid", "comm", "buffer"}
        for i, f in enumerate(fmt.fields):
            vals = [r[i] for r in rows]
            ours = t[f.name + "_" if f.name in taken else f.name].to_pylist()   # `pid` field -> `pid_`
            if t.schema.field(f.name).type in ("string",) or isinstance(ours[0] if ours else "", str):
                theirs = [v.rstrip("\n") for v in vals]
                mine = [(o or "").rstrip("\n") for o in ours]
                neq = [k for k in range(len(mine)) if mine[k] != theirs[k]]
                assert not neq, f"{name}.{f.name} row {neq[0]}: ours {mine[neq[0]]!r}, trace-cmd {theirs[neq[0]]!r}"
                compared += len(mine)
            elif isinstance(ours[0] if ours else 0, int):
                theirs, sk = _parse_int_column(vals)
                skipped += sk
                mask = (1 << (8 * f.size)) - 1
                for k, (a, b) in enumerate(zip(ours, theirs)):
                    if b is None:
                        continue
                    assert (a & mask) == (b & mask), f"{name}.{f.name} row {k}: ours {a}, trace-cmd {b} ({vals[k]!r})"
                compared += len(ours) - sk
    return {"records": total, "field_values": compared, "skipped_symbolic": skipped, "drops": drops}
