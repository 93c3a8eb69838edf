"""Benchmark: events/s of build_model() alone, on real captures and a replicated larger trace.

Peer measured in the same run: one `np.argsort` of an int64 key per event (the cost of
sorting the trace once, the floor for any model that groups events by page/block).
The ratio model/peer says how many "sorts of the whole trace" the model costs, which
stays comparable across machines; the issue's target is >= 5 M events/s through model
+ detectors (see benchmarks/analyze.py for that end-to-end number).

    python3 -m benchmarks.model [FILE_OR_CAPTURE ...] [--repeat N] [--scale K]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pyarrow as pa

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = [os.path.join(HERE, "..", "fixtures", "captures", d)
           for d in ("debian-6.1-arm64-cma-churn", "debian-6.12-arm64-cma-churn")]


def _replicated(trace, k: int):
    """The same trace played k times back to back (seq/ts shifted): a k-times larger input."""
    from analyzer.readers.base import Trace

    names = list(trace.events())
    tables = {n: trace.table(n).combine_chunks() for n in names}
    s_max = max(int(t.column("seq").to_numpy().max()) for t in tables.values() if t.num_rows) + 1
    t_max = max(int(t.column("ts").to_numpy().max()) for t in tables.values() if t.num_rows) + 1
    big = {}
    for n, t in tables.items():
        parts = []
        for i in range(k):
            c = t.set_column(0, "seq", pa.array(t.column("seq").to_numpy() + i * s_max))
            c = c.set_column(1, "ts", pa.array(c.column("ts").to_numpy() + i * t_max))
            parts.append(c)
        big[n] = pa.concat_tables(parts).combine_chunks()
    src = trace

    class Replicated(Trace):
        meta = src.meta

        def formats(self):
            return src.formats()

        def events(self):
            return {n: t.num_rows for n, t in big.items()}

        def _table(self, full_name, columns):
            t = big.get(full_name)
            if t is None:
                return src.table(full_name, columns).slice(0, 0)
            return t.select(columns) if columns else t

        @property
        def lost(self):
            return src.lost

    return Replicated()


def _time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_one(label: str, trace, meta, kernel, repeat: int) -> dict:
    from analyzer.model import build_model

    n = sum(trace.events().values())
    build_model(trace, meta, kernel)                    # warm the reader's caches
    t_model = _time(lambda: build_model(trace, meta, kernel), repeat)
    keys = np.random.default_rng(0).integers(0, 1 << 40, n)
    t_peer = _time(lambda: np.argsort(keys), repeat)
    r = {"label": label, "events": n, "model_s": t_model, "events_per_s": n / t_model,
         "peer_sort_s": t_peer, "ratio_model_to_sort": t_model / t_peer}
    print(f"{label}: {n:,} events  build_model {t_model * 1e3:7.1f} ms = {n / t_model / 1e6:5.2f} M events/s"
          f"   peer np.argsort({n:,}) {t_peer * 1e3:6.1f} ms   model/peer = {t_model / t_peer:4.1f}x")
    return r


def main(argv: list[str] | None = None) -> int:
    from analyzer.capture import load_capture
    from analyzer.kernels import behavior_for

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=int, default=4, help="also run a K-times replicated trace (0: skip)")
    a = ap.parse_args(argv)
    for p in a.paths:
        trace, meta = load_capture(p)
        kernel = behavior_for(meta.kernel_id)
        bench_one(os.path.basename(os.path.normpath(p)), trace, meta, kernel, a.repeat)
        if a.scale and a.scale > 1:
            bench_one(f"  x{a.scale} replicated", _replicated(trace, a.scale), meta, kernel, max(1, a.repeat - 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
