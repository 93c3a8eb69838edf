"""Loading the optional C extensions (readers/_walk.c, model/_pair.c) by one rule.

Both are optional: without a compiler the numpy paths give the same results, slower.
  MTAUDIT_NO_CEXT=1       never load them (run the numpy reference paths)
  MTAUDIT_REQUIRE_CEXT=1  an extension that does not import is an error, not a silent
                          fallback: CI sets it so that a compile error cannot leave it green
                          (the equality tests would otherwise just skip)
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType


class MissingExtension(ImportError):
    """MTAUDIT_REQUIRE_CEXT=1 and a C extension is not built or does not import."""


def load(name: str) -> ModuleType | None:
    """The compiled module `name` (e.g. "analyzer.model._pair"), or None for the numpy path."""
    if os.environ.get("MTAUDIT_NO_CEXT"):
        return None
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if os.environ.get("MTAUDIT_REQUIRE_CEXT") == "1":
            raise MissingExtension(f"{name}: C extension required (MTAUDIT_REQUIRE_CEXT=1) but it does not "
                                   f"import: {e}; rebuild with `scripts/setup`") from e
        return None


def required() -> bool:
    """True when the extensions must be present (and are not disabled)."""
    return os.environ.get("MTAUDIT_REQUIRE_CEXT") == "1" and not os.environ.get("MTAUDIT_NO_CEXT")
