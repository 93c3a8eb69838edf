"""`load_capture()`: open a capture directory, a `.tar.zst` of one, or a bare trace file."""
from __future__ import annotations

import os
import shutil
import weakref

from ..bundle import ALIASES, PERF_TRACE, TEXT_FILES, TRACE, CaptureError
from ..readers import load
from ..readers.base import Trace
from .archive import _extract_archive, _read_text
from .meta import _fill_meta, check_extents
from .schema import CaptureMeta


def load_capture(path: str | os.PathLike, overrides: dict | None = None) -> tuple[Trace, CaptureMeta]:
    """Open a capture directory, a `.tar.zst` of one, or a bare trace file.

    overrides (from CLI flags, they win over files): pageblock_order (int), cma (list of
    "NAME:BASEPFN:COUNT" or tuples), kernel (release or full uname line),
    ground_truth_events (list of event names).
    """
    path = os.fspath(path)
    ov = dict(overrides or {})
    tmpdir = None
    if os.path.isdir(path):
        kind, cdir = "directory", path
        tpath = os.path.join(path, TRACE)
        if not os.path.exists(tpath) and os.path.exists(os.path.join(path, PERF_TRACE)):
            tpath = os.path.join(path, PERF_TRACE)        # `mtaudit record --backend perf`
        if not os.path.exists(tpath):
            raise CaptureError(f"{path}: capture directory has no trace.dat or perf.data")
    elif path.endswith((".tar.zst", ".tzst")):
        tmpdir, cdir = _extract_archive(path)
        kind, tpath = "archive", os.path.join(cdir, TRACE)
    elif os.path.exists(path):
        kind, cdir, tpath = "trace", None, path
    else:
        raise CaptureError(f"{path}: no such file or directory")
    try:
        trace = load(tpath)
    except BaseException:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    if tmpdir:
        # The reader may read lazily: the extracted files live as long as the Trace does.
        weakref.finalize(trace, shutil.rmtree, tmpdir, True)
    meta = CaptureMeta(source=path, kind=kind)
    texts: dict[str, str] = {}
    if cdir:
        for name in TEXT_FILES:
            p = os.path.join(cdir, name)
            if os.path.isfile(p):
                texts[name] = _read_text(p)
                meta.files[name] = p
        for alias, name in ALIASES.items():
            p = os.path.join(cdir, alias)
            if name not in texts and os.path.isfile(p):
                texts[name] = _read_text(p)
                meta.files[name] = p
                meta.provenance.setdefault("aliases", "")
                meta.provenance["aliases"] += f"{alias} as {name}; "
    _fill_meta(meta, trace, texts, ov)
    check_extents(meta)
    return trace, meta
