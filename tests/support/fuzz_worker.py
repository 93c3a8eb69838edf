"""One batch of the analysis fuzz, run in its own process by tests/cli/test_fuzz_analysis.py.

Two kinds of input go through the whole analysis path (reader -> model -> detectors ->
consistency -> summary/console/JSON, and `history`):

* text: a slice of a real kernel text trace (`trace-cmd report` of a Debian 6.1 capture, or
  the kernel's own ftrace text) with field values mutated (pfn to random or edge 64-bit values,
  order, migratetype, cpu, timestamps stepping back, fields deleted or garbled, lines dropped,
  duplicated or swapped), run through `mtaudit analyze` / `mtaudit history` (cli.main)
  exactly as a user would: the exit status must be 0, 1, 2 or 3, never 4 (internal error);
* tracedat: a real trace.dat with bytes and 64-bit words overwritten, through `mtaudit analyze`
  (the C record walker reads its lengths and offsets);
* tables: generated event tables (SyntheticTrace: every model event, values across each
  field's whole type range, nulls, non-monotonic timestamps, hostile zones/CMA areas/
  pageblock orders) through `analyze()`: only MtauditError may escape.

Before each input runs, it is written to OUT/current.*; a crash in C kills this process and
the parent reports that file.  Failing inputs are not shrunk (each analysis run takes a
while): the first input of each distinct failure (exception type and place) is written to
OUT/failure-N.*, the batch goes on, and the process exits 1 listing them.  Usage:
    python tests/support/fuzz_worker.py text|tables --seed N --examples N --out DIR
    python tests/support/fuzz_worker.py replay DIR/failure-N.json|DIR/failure-N.txt --out DIR
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import json
import os
import re
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BASES = {
    "report-6.1": os.path.join(ROOT, "fixtures", "text", "debian-6.1-report-slice", "report-slice.txt"),
    "ftrace-6.18": os.path.join(ROOT, "fixtures", "text", "host-6.18-x86_64", "trace-tgid-irqinfo.txt"),
}
U64 = (1 << 64) - 1
EDGE_U64 = [0, 1, 0x1000, 0x44648, (1 << 32) - 1, 1 << 32, (1 << 52) - 1, 1 << 52, (1 << 63) - 1, 1 << 63,
            (1 << 63) + 1, U64 - 1, U64]
EDGE_INT = [-(1 << 31), -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 19, 20, 31, 32, 63, 64, 127, 128,
            255, 256, 65535, (1 << 31) - 1]


class Failures:
    """Distinct failures of one batch, keyed by (exception type, innermost analyzer frame)."""

    def __init__(self, out: str):
        self.out, self.seen = out, {}

    def add(self, key: str, message: str, payload: str, ext: str) -> None:
        if key in self.seen:
            self.seen[key]["count"] += 1
            return
        path = os.path.join(self.out, f"failure-{len(self.seen)}.{ext}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(payload)
        self.seen[key] = {"count": 1, "input": path, "message": message[-2500:]}


def _key(tb_text: str, exc: str) -> str:
    frames = re.findall(r'File "([^"]*analyzer[^"]*)", line (\d+)', tb_text)
    return f"{exc} at {os.path.basename(frames[-1][0])}:{frames[-1][1]}" if frames else exc


# ---------------------------------------------------------------------------- text inputs
def _u64() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(EDGE_U64), st.integers(0, U64))


def _int() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(EDGE_INT), st.integers(-(1 << 63), U64))


MUTATIONS = ("pfn", "pfn_extremes", "pfn_many", "order", "migratetype", "cpu", "ts_back", "ts_huge", "drop", "dup", "swap",
             "delfield", "garble", "truncate", "other_field")


# MTAUDIT_FUZZ_MUTATIONS=pfn,pfn_extremes,...: only these kinds (a targeted run)
KINDS = tuple(k for k in os.environ.get("MTAUDIT_FUZZ_MUTATIONS", "").split(",") if k in MUTATIONS) or MUTATIONS


def _mutate(lines: list[str], data: st.DataObject) -> list[str]:
    body = [i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith(("#", "cpus="))]
    if not body:
        return lines
    for _ in range(data.draw(st.integers(1, 8), label="mutations")):
        kind = data.draw(st.sampled_from(KINDS), label="kind")
        i = data.draw(st.sampled_from(body), label="line")
        ln = lines[i]
        if kind == "pfn":
            v = data.draw(_u64(), label="pfn")
            ln = re.sub(r"pfn=0x[0-9a-f]+", f"pfn=0x{v:x}", ln, count=1)
        elif kind == "pfn_extremes":      # both ends of int64 on two records of one event: a full 64-bit span
            evname = lambda k, lines=lines: (re.search(r" (\w+): ", lines[k]) or [None, None])[1]   # noqa: E731
            name = data.draw(st.sampled_from(sorted({evname(k) for k in body} - {None})), label="event")
            same = [k for k in body if evname(k) == name]
            i, j = data.draw(st.sampled_from(same), label="a"), data.draw(st.sampled_from(same), label="b")
            for k, v in ((i, 1 << 63), (j, (1 << 63) - 1)):
                lines[k] = re.sub(r"pfn=0x[0-9a-f]+", f"pfn=0x{v:x}", lines[k], count=1)
            continue
        elif kind == "pfn_many":          # several records at edge pfns at once (e.g. both ends of int64)
            for j in data.draw(st.lists(st.sampled_from(body), min_size=2, max_size=6), label="lines"):
                v = data.draw(st.sampled_from(EDGE_U64), label="edge")
                lines[j] = re.sub(r"pfn=0x[0-9a-f]+", f"pfn=0x{v:x}", lines[j], count=1)
            continue
        elif kind in ("order", "migratetype"):
            v = data.draw(_int(), label=kind)
            ln = re.sub(rf"\b{kind}=-?\d+", f"{kind}={v}", ln, count=1)
        elif kind == "cpu":
            v = data.draw(st.sampled_from([0, 1, 2, 63, 64, 1023, 4095, 65535, 99999, 1 << 40]), label="cpu")
            ln = re.sub(r"\[\d+\]", f"[{v:03d}]", ln, count=1)
        elif kind in ("ts_back", "ts_huge"):
            m = re.search(r"(\d+)\.(\d+):", ln)
            if m:
                t = float(m[0][:-1])
                nt = (max(0.0, t - data.draw(st.floats(0, 50), label="back")) if kind == "ts_back"
                      else data.draw(st.sampled_from([1e9, 9.2e9, 1.8e10, 1e12]), label="huge"))
                ln = ln[:m.start()] + f"{nt:.6f}:" + ln[m.end():]
        elif kind == "drop":
            lines = lines[:i] + lines[i + 1:]
            body = [j for j in body if j < len(lines)]
            if not body:
                break
            continue
        elif kind == "dup":
            lines = lines[:i] + [ln] + lines[i:]
            continue
        elif kind == "swap":
            j = data.draw(st.sampled_from(body), label="with")
            lines[i], lines[j] = lines[j], lines[i]
            continue
        elif kind == "delfield":
            ln = re.sub(data.draw(st.sampled_from([r" pfn=\S+", r" order=\S+", r" migratetype=\S+",
                                                   r" name=\S+", r" count=\S+", r" flags=\S+"]), label="f"),
                        "", ln, count=1)
        elif kind == "garble":
            ln = re.sub(data.draw(st.sampled_from([r"(pfn=)\S+", r"(order=)\S+", r"(migratetype=)\S+",
                                                   r"(count=)\S+", r"(start_pfn=)\S+"]), label="f"),
                        r"\g<1>" + data.draw(st.sampled_from(["", "x", "-", "0x", "nan", "1e400", "-0x5",
                                                             "(nil)", "99999999999999999999999"]), label="v"),
                        ln, count=1)
        elif kind == "truncate":
            ln = ln[:data.draw(st.integers(0, max(0, len(ln) - 1)), label="at")]
        elif kind == "other_field":       # any other k=v field: count, start_pfn, end_pfn, flags, mask, ...
            fields = re.findall(r"\b([a-z_]+)=(0x[0-9a-f]+|-?\d+)", ln)
            if fields:
                k, _v = data.draw(st.sampled_from(fields), label="field")
                ln = re.sub(rf"\b{k}=\S+", f"{k}=0x{data.draw(_u64(), label='value'):x}", ln, count=1)
        lines[i] = ln
    return lines


def _check_cli(fails: "Failures", argv: list[str], data: str, suffix: str) -> None:
    """Run one mtaudit command in-process (with --debug, so an internal error shows its traceback)
    and keep the input when it ends other than 0-3: exit 4, an uncaught exception, a bad exit."""
    from analyzer import cli
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        try:
            rc = cli.main(argv + ["--debug"])
        except SystemExit as e:         # argparse
            rc = e.code
        except Exception:               # escaped the CLI entirely (it must not)
            traceback.print_exc()
            rc = "uncaught exception"
    if rc not in (0, 1, 2, 3):
        err = se.getvalue()
        last = [ln for ln in err.splitlines() if ln.strip()][-1:] or ["?"]
        fails.add(_key(err, last[0][:120]), f"mtaudit {' '.join(argv)} exit {rc}:\n{err}", data, suffix)


def run_text(examples: int, seed_: int, out: str) -> int:
    bases = {k: open(p, encoding="utf-8").read().splitlines(keepends=True) for k, p in BASES.items()}
    count = [0]

    @seed(seed_)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(st.data())
    def case(data):
        base = data.draw(st.sampled_from(sorted(bases)), label="base")
        lines = bases[base]
        head = [ln for ln in lines[:12] if ln.startswith(("#", "cpus="))]
        body = lines[len(head):]
        if data.draw(st.booleans(), label="whole"):          # the whole slice: every event kind present
            a, n = 0, len(body)
        else:
            a = data.draw(st.integers(0, len(body) - 1), label="start")
            n = data.draw(st.integers(1, len(body) - a), label="length")
        text = "".join(_mutate(head + body[a:a + n], data))
        kernel = data.draw(st.sampled_from([None, "6.1.0-56-arm64", "6.12.118+deb13-arm64", "5.10.0", "garbage"]),
                           label="kernel")
        path = os.path.join(out, "current.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        extra = ["--kernel", kernel] if kernel else []
        pfns = re.findall(r"pfn=(0x[0-9a-f]+)", text)
        cmds = [["analyze", path, "--json", os.path.join(out, "a.json"), *extra]]
        if pfns and data.draw(st.booleans(), label="history"):
            cmds.append(["history", path, "--pfn", data.draw(st.sampled_from(pfns), label="hpfn"), *extra])
        for argv in cmds:
            count[0] += 1
            _check_cli(fails, argv, text, "txt")

    fails = Failures(out)
    return _run(case, count, "text", fails)


# ---------------------------------------------------------------------------- trace.dat bytes
TRACEDAT = os.path.join(ROOT, "fixtures", "captures", "custom-6.1-x86_64-cmadebugfs", "trace.dat")


def run_tracedat(examples: int, seed_: int, out: str) -> int:
    """A real trace.dat with bytes and 8-byte words overwritten (mostly in the ring-buffer pages,
    where the C record walker reads lengths and offsets), through `mtaudit analyze`."""
    src = open(TRACEDAT, "rb").read()
    count = [0]

    @seed(seed_)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(st.data())
    def case(data):
        b = bytearray(src)
        for _ in range(data.draw(st.integers(1, 24), label="edits")):
            lo = 0 if data.draw(st.integers(0, 9), label="where") == 0 else len(b) // 10   # headers sometimes
            pos = data.draw(st.integers(lo, len(b) - 8), label="pos")
            if data.draw(st.booleans(), label="word"):
                b[pos:pos + 8] = data.draw(_u64(), label="value").to_bytes(8, "little")
            else:
                b[pos] = data.draw(st.integers(0, 255), label="byte")
        path = os.path.join(out, "current.dat")
        with open(path, "wb") as f:
            f.write(b)
        count[0] += 1
        _check_cli(fails, ["analyze", path, "-q"], bytes(b).hex(), "dat.hex")

    fails = Failures(out)
    return _run(case, count, "tracedat", fails)


# ---------------------------------------------------------------------------- generated tables
EVENT_FIELDS = {
    "mm_page_alloc": ("pfn", "order", "migratetype"),
    "mm_page_free": ("pfn", "order"),
    "mm_page_free_batched": ("pfn",),
    "mm_page_pcpu_drain": ("pfn", "order", "migratetype"),
    "mm_page_alloc_zone_locked": ("pfn", "order", "migratetype", "percpu_refill"),
    "mm_page_alloc_extfrag": ("pfn", "alloc_order", "fallback_order", "alloc_migratetype",
                              "fallback_migratetype", "change_ownership"),
    "mm_alloc_contig_migrate_range_info": ("start", "end", "migratetype"),
    "cma_alloc_start": ("name", "count", "align"),
    "cma_alloc_finish": ("name", "pfn", "page", "count", "align", "errorno"),
    "cma_alloc_busy_retry": ("name", "pfn", "page", "count", "align"),
    "cma_release": ("name", "pfn", "page", "count"),
    "test_pages_isolated": ("start_pfn", "end_pfn", "fin_pfn"),
    "print": ("buf",),
    "setmt": ("pfn", "flags", "mask"),
}
BASE_PFN = 0x40000


def _field(name: str, typ) -> st.SearchStrategy:
    import pyarrow as pa
    near = st.integers(BASE_PFN - 600, BASE_PFN + 0x3000)            # collisions: same pfns/blocks
    small_mt = st.integers(-1, 8)
    if typ == pa.string():
        if name == "buf":
            return st.sampled_from(["pb/setmt kprobe active", "mtaudit phase 1", "", "x" * 300])
        return st.sampled_from(["reserved", "hugetlb0", "", "cma\u00e9"])
    if typ == pa.uint64():
        vals = st.one_of(near, _u64()) if name in ("pfn", "start", "end", "start_pfn", "end_pfn", "fin_pfn") \
            else st.one_of(st.integers(0, 64), _u64())
    elif typ == pa.uint32():
        vals = st.one_of(st.integers(0, 11), st.sampled_from([19, 20, 63, 64, 255]), st.integers(0, (1 << 32) - 1))
    else:  # int32
        vals = st.one_of(small_mt, st.integers(-(1 << 31), (1 << 31) - 1))
    return st.one_of(vals, st.none()) if name != "pfn" else st.one_of(vals, vals, st.none())


def _row(event: str) -> st.SearchStrategy[dict]:
    from analyzer.model.synthetic import SCHEMAS
    types = dict(SCHEMAS[event][1])
    return st.fixed_dictionaries({
        "cpu": st.one_of(st.integers(0, 3), st.integers(-(1 << 31), (1 << 31) - 1)),
        "dts": st.one_of(st.integers(0, 5000), st.integers(-100_000, 0), st.just(1 << 40)),
        **{f: _field(f, types[f]) for f in EVENT_FIELDS[event]}})


def run_tables(examples: int, seed_: int, out: str) -> int:
    from analyzer.errors import MtauditError
    count = [0]

    @seed(seed_)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(st.data())
    def case(data):
        events = data.draw(st.lists(st.sampled_from(sorted(EVENT_FIELDS)), max_size=60), label="events")
        rows = [(ev, data.draw(_row(ev), label=ev)) for ev in events]
        zones = data.draw(st.sampled_from([
            (("DMA", BASE_PFN, BASE_PFN + 0x10000),),
            (("DMA", BASE_PFN, BASE_PFN + 0x1000), ("Normal", BASE_PFN + 0x1000, BASE_PFN + 0x4000)),
            (("DMA", BASE_PFN, BASE_PFN),),                                  # empty zone
            (("DMA", BASE_PFN + 0x1000, BASE_PFN),),                         # reversed
            (("DMA", 0, 1 << 52),),                                          # huge
            ()]), label="zones")
        cma = data.draw(st.sampled_from([(), (("reserved", BASE_PFN + 0x800, 0x800),),
                                         (("reserved", BASE_PFN + 0x800, 0),),
                                         (("big", 0, 1 << 36),)]), label="cma")
        pbo = data.draw(st.sampled_from([9, 9, 10, 1, 19]), label="pbo")
        release = data.draw(st.sampled_from(["6.1.0", "6.12.0", "5.10.0", "6.9.0", None]), label="release")
        lost = data.draw(st.lists(st.tuples(st.integers(0, 3), st.integers(-10, 10 ** 6), st.integers(-10, 10 ** 6),
                                            st.integers(-1, 100)), max_size=3), label="lost")
        hp = data.draw(_u64(), label="history pfn")
        spec = {"rows": rows, "zones": zones, "cma": cma, "pbo": pbo, "release": release, "lost": lost,
                "history_pfn": hp}
        with open(os.path.join(out, "current.json"), "w") as f:
            json.dump(spec, f)
        count[0] += 1
        try:
            run_table_spec(spec)
        except MtauditError:
            pass
        except Exception as e:
            tb = traceback.format_exc()
            fails.add(_key(tb, type(e).__name__), f"{type(e).__name__}: {e}\n{tb}", json.dumps(spec), "json")

    fails = Failures(out)
    return _run(case, count, "tables", fails)


def run_table_spec(spec: dict) -> None:
    """Build the SyntheticTrace + CaptureMeta of one generated input and run the analysis path."""
    from rich.console import Console

    from analyzer.analysis import analyze
    from analyzer.model.synthetic import SyntheticTrace, synthetic_meta
    from analyzer.report.console import render
    tr = SyntheticTrace(events=["mm_page_alloc", "mm_page_free", "mm_page_pcpu_drain"])
    ts = 1000
    for ev, r in spec["rows"]:
        r = dict(r)
        ts += r.pop("dts")
        tr.add(ev, ts=ts, **r)
    tr.lost_rows = [{"cpu": c, "ts_start": a, "ts_end": b, "count": n} for c, a, b, n in spec["lost"]]
    meta = synthetic_meta(zones=spec["zones"], cma=spec["cma"], pageblock_order=spec["pbo"],
                          release=spec["release"])
    a = analyze(tr, meta)
    json.dumps(a.summary(with_rows=len(a.blocks) < 100_000), default=str)   # rows: what --json writes
    from analyzer.cma import explain
    json.dumps(explain(a))                                                  # and its "cma" key
    from analyzer.cma import explain
    json.dumps(explain(a))                                                  # and its "cma" key
    render(a, Console(file=io.StringIO(), width=80), explain=True)
    hp = spec["history_pfn"]
    a.history(pfn=hp if hp < (1 << 63) else hp & ((1 << 52) - 1))
    a.exit_status()


def _run(case, count, kind: str, fails: Failures) -> int:
    case()
    print(json.dumps({"kind": kind, "inputs": count[0], "failures": list(fails.seen.values())}))
    return 1 if fails.seen else 0


def main() -> int:
    faulthandler.enable()            # a crash in C prints where it happened before the process dies
    import resource                  # a runaway allocation is a MemoryError here, not the OOM killer
    lim = int(os.environ.get("MTAUDIT_FUZZ_MEMORY_MB", "3072")) << 20
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("text", "tables", "tracedat", "replay"))
    ap.add_argument("input", nargs="?", help="replay: a failure.json (tables) or failure.txt (text)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--examples", type=int, default=20)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.kind == "replay":       # one saved input, traceback and all
        if a.input.endswith(".json"):
            with open(a.input) as f:
                run_table_spec(json.load(f))
            return 0
        if a.input.endswith(".hex"):
            path = os.path.join(a.out, "replay.dat")
            with open(a.input) as f, open(path, "wb") as g:
                g.write(bytes.fromhex(f.read()))
            a.input = path
        from analyzer import cli
        return cli.main(["analyze", a.input, "--debug"])
    return {"text": run_text, "tables": run_tables, "tracedat": run_tracedat}[a.kind](a.examples, a.seed, a.out)


if __name__ == "__main__":
    sys.exit(main())
