"""Detectors S1-S5: each flags records whose printed migratetype contradicts the model.

One module per observable signature of ../shared/notes/kernel-mm.md §3.7, each with
`ID, MEANING, KERNELS, SEVERITY, applies(kernel), detect(model, kernel)`.
`run_all` runs the registry and also returns the per-detector table of §3.
"""
from __future__ import annotations

import pandas as pd

from . import s1_pcp_drain, s2_freelist, s3_cma_escape, s4_thp_pcp, s5_isolation_leak
from ._common import FINDING_COLUMNS, SEVERITY_RANK, concat_findings, empty_findings

ALL = [s1_pcp_drain, s2_freelist, s3_cma_escape, s4_thp_pcp, s5_isolation_leak]

__all__ = ["ALL", "run_all", "FINDING_COLUMNS", "SEVERITY_RANK"]

# Detector ids that mean "the model is unsure", not "the kernel misbehaved".
MODEL_WARNING_IDS = ("MW",)


def run_all(model, kernel, progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(findings, detectors table).  A detector that does not apply to the kernel is not run."""
    frames, rows = [], []
    for mod in ALL:
        applies = bool(mod.applies(kernel))
        df = mod.detect(model, kernel) if applies else empty_findings()
        if progress is not None:
            progress(mod.ID)
        frames.append(df)
        ids = df["detector"].astype(str).value_counts().to_dict() if len(df) else {}
        by_conf = _by_confidence(model, df)
        rows.append({
            "id": mod.ID, "meaning": mod.MEANING, "kernels": mod.KERNELS, "applies": applies,
            "count": int(sum(v for k, v in ids.items() if k not in MODEL_WARNING_IDS)),
            "severity": mod.SEVERITY,
            "subcounts": {k: int(v) for k, v in sorted(ids.items())},
            "checked": int(df.attrs.get("checked", 0)),
            "skipped_unknown": int(df.attrs.get("skipped_unknown", 0)),
            "on_known": by_conf[2], "on_inferred": by_conf[1],
            "notes": {k: v for k, v in df.attrs.items() if k not in ("checked", "skipped_unknown")},
        })
    findings = concat_findings(frames)
    mw = int((findings["detector"] == "MW").sum()) if len(findings) else 0
    rows.append({"id": "MW", "meaning": "model warning: a live-type print disagrees with the model "
                 "(the model missed a retype; not a kernel bug)", "kernels": "all", "applies": True,
                 "count": mw, "severity": "info", "subcounts": {"MW": mw}, "checked": 0,
                 "skipped_unknown": 0, "on_known": None, "on_inferred": None, "notes": {}})
    table = pd.DataFrame(rows)
    for c in ("on_known", "on_inferred"):
        table[c] = pd.array(table[c].tolist(), dtype="Int64")
    return findings, table


def _by_confidence(model, df: pd.DataFrame) -> dict[int, int]:
    """Kernel findings of one detector split by how sure the model was of the block type."""
    import numpy as np

    from ._common import col
    out = {0: 0, 1: 0, 2: 0}
    if not len(df):
        return out
    keep = (df["detector"].astype(str) != "MW").to_numpy()
    if not keep.any():
        return out
    st = model.block_type_at(col(df, "pfn", np.uint64)[keep], col(df, "seq", np.int64)[keep])
    # block-lost rows are stamped at the retype record itself: the state *after* it counts
    st_after = model.block_type_at(col(df, "pfn", np.uint64)[keep], col(df, "seq", np.int64)[keep] + 1)
    lost = (df["event"].astype(str) == "cma-block-lost").to_numpy()[keep]
    conf = np.where(lost, np.asarray(st_after.confidence), np.asarray(st.confidence))
    for c in (0, 1, 2):
        out[c] = int((conf == c).sum())
    return out
