"""mtaudit analyzer: readers -> tables -> pageblock model -> detectors -> report."""
from __future__ import annotations

from .errors import MtauditError, TraceFormatError
from .readers import load

__all__ = ["load", "MtauditError", "TraceFormatError"]


def __getattr__(name: str):
    # analyze() lives with the model; imported lazily so `load` stays cheap.
    if name in ("analyze", "Analysis"):
        from . import analysis
        return getattr(analysis, name)
    raise AttributeError(name)
