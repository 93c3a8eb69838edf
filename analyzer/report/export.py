"""Machine-readable exports of an Analysis: one JSON document or a Parquet directory.

Both are written atomically (analyzer/atomic.py): a crash never leaves a file or
directory that looks complete but is not.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import fields

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import atomic_dir, atomic_file
from ..model.consistency import Consistency
from .jsonfast import dumps_indent1


def json_doc(a) -> dict:
    """The `analyze --json` document: summary + all finding rows + block history + the CMA
    allocations (one definition: the fleet's per-capture rows are this document too)."""
    from ..cma import explain
    doc = a.summary(with_rows=True)
    doc["cma"] = explain(a)
    return doc


def write_json(a, dest: str) -> None:
    """json_doc(a) as JSON; dest "-" means stdout."""
    doc = json_doc(a)
    text = dumps_indent1(doc) + "\n"           # = json.dumps(doc, indent=1), at C speed for the row lists
    if dest == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_file(dest, "w") as f:
        f.write(text)


def _table(df: pd.DataFrame) -> pa.Table:
    df = df.copy()
    for c in df.columns:   # dict-valued columns (detector sub-counts) as JSON text
        if df[c].dtype == object and len(df) and isinstance(df[c].iloc[0], (dict, list)):
            df[c] = df[c].map(lambda v: json.dumps(v, default=str))
    return pa.Table.from_pandas(df, preserve_index=False)


def _consistency_frame(c: Consistency) -> pd.DataFrame:
    """The consistency table carrying its verdict as frame attrs: pyarrow stores those in the
    parquet file's pandas metadata, where readers of consistency.parquet find the verdict."""
    t = c.table.copy(deep=False)
    t.attrs = {f.name: getattr(c, f.name) for f in fields(c) if f.name != "table"}
    return t


def write_parquet(a, dest: str) -> list[str]:
    """findings, blocks, isolation, detectors, consistency as .parquet + summary.json in DIR."""
    frames = {"findings": a.findings, "blocks": a.blocks, "isolation": a.isolation,
              "detectors": a.detectors, "consistency": _consistency_frame(a.consistency)}
    res = getattr(a.model, "residency", None)
    if res is not None:
        frames["residency"] = res
    written = []
    with atomic_dir(dest) as tmp:
        for name, df in frames.items():
            pq.write_table(_table(df), os.path.join(tmp, f"{name}.parquet"))
            written.append(f"{name}.parquet")
        with open(os.path.join(tmp, "summary.json"), "w") as f:
            json.dump(a.summary(with_rows=False), f, indent=1)
        written.append("summary.json")
    return written
